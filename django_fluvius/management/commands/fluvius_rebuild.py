"""``manage.py fluvius_rebuild <target ...> | --all``: rebuild read models from the event store.

A target is a resource (``user`` or ``app-user.user``), a domain namespace (all
its resources) or a projection name. With no target the command lists the
targets and refuses: a bare ``fluvius_rebuild`` typed to see what it does must not
rewrite every read model of a production database. ``--all`` rebuilds them all,
after a confirmation unless ``--no-input``. A run that crashed resumes where its
last batch committed (``--restart`` starts over). Readers keep seeing a full table
throughout: see ``ops/rebuild.py``.
"""

from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import FluviusError
from django_fluvius.management.options import database_alias
from django_fluvius.models import RebuildRun
from django_fluvius.ops.rebuild import DEFAULT_BATCH_SIZE, rebuild, resolve_targets


class Command(BaseCommand):
    help = "Rebuild read models (resources, projections) from the event store, resumably."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="*", default=[], help="resource, namespace.resource, namespace or projection")
        parser.add_argument("--all", action="store_true", help="rebuild every target (asks first)")
        parser.add_argument("--noinput", "--no-input", action="store_false", dest="interactive",
                            help="do not ask for confirmation (--all)")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"aggregates per transaction and checkpoint (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--restart", action="store_true", help="start over instead of resuming")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--list", action="store_true", help="list the targets and their last runs, rebuild nothing")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        using = options["database"] or fluvius_settings.DATABASE
        names = options["targets"]
        try:
            if options["list"]:
                return self.list_targets(names, using)
            if options["all"] and names:
                raise CommandError("Name targets or pass --all, not both.")
            if not names and not options["all"]:
                self.list_targets([], using, out=self.stderr)
                raise CommandError("Name what to rebuild (targets above), or pass --all to rebuild every one.")
            targets = resolve_targets(names)
            if options["all"] and options["interactive"] and not self.confirmed(targets):
                self.stdout.write("Rebuild cancelled.")
                return
            runs = rebuild(targets=targets, batch_size=options["batch_size"], restart=options["restart"],
                           using=using, stream=cast(TextIO, self.stderr._out) if not options["no_progress"] else None,
                           progress=not options["no_progress"])
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        for run in runs:
            self.stdout.write(self.style.SUCCESS(
                f"{run.name}: {run.events_done:,} events, {run.aggregates_done:,} aggregates, "
                f"{run.rows_written:,} rows written, {run.rows_deleted:,} deleted, {run.batches} batches"))

    def confirmed(self, targets) -> bool:
        names = ", ".join(t.name for t in targets) or "none"
        self.stdout.write(f"This rebuilds {len(targets)} targets from the event store: {names}.")
        try:
            answer = input("Type 'yes' to continue, or 'no' to cancel: ")
        except EOFError:  # stdin closed (cron, CI): never take silence for a yes
            raise CommandError("No answer to the confirmation: pass --no-input to rebuild without asking.") from None
        return answer.strip().lower() == "yes"

    def list_targets(self, names, using, out=None):
        out = out or self.stdout
        runs = {r.name: r for r in RebuildRun.objects.using(using).all()}
        for target in resolve_targets(names):
            run = runs.get(target.name)
            state = "never rebuilt" if run is None else (
                f"{run.status}: {run.events_done:,}/{run.total_events:,} events, cursor {run.cursor or '-'}, "
                f"updated {run.updated:%Y-%m-%d %H:%M:%S}")
            out.write(f"{target.name:<40} {getattr(target, 'kind', 'inline'):<8} {state}")
