"""``manage.py fluvius_rebuild [target ...]``: rebuild read models from the event store.

A target is a resource (``user`` or ``app-user.user``), a domain namespace (all
its resources) or a projection name; with none, everything is rebuilt. A run
that crashed resumes where its last batch committed (``--restart`` starts
over). Readers keep seeing a full table throughout: see ``ops/rebuild.py``.
"""

from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import FluviusError
from django_fluvius.models import RebuildRun
from django_fluvius.ops.rebuild import DEFAULT_BATCH_SIZE, rebuild, resolve_targets


class Command(BaseCommand):
    help = "Rebuild read models (resources, projections) from the event store, resumably."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="*", help="resource, namespace.resource, namespace or projection")
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"aggregates per transaction and checkpoint (default {DEFAULT_BATCH_SIZE})")
        parser.add_argument("--restart", action="store_true", help="start over instead of resuming")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")
        parser.add_argument("--list", action="store_true", help="list the targets and their last runs, rebuild nothing")
        parser.add_argument("--database", default=None, help="database alias of the event store")

    def handle(self, *args, **options):
        using = options["database"] or fluvius_settings.DATABASE
        try:
            if options["list"]:
                return self.list_targets(options["targets"], using)
            runs = rebuild(options["targets"], batch_size=options["batch_size"], restart=options["restart"],
                           using=using, stream=cast(TextIO, self.stderr._out) if not options["no_progress"] else None,
                           progress=not options["no_progress"])
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        for run in runs:
            self.stdout.write(self.style.SUCCESS(
                f"{run.name}: {run.events_done:,} events, {run.aggregates_done:,} aggregates, "
                f"{run.rows_written:,} rows written, {run.rows_deleted:,} deleted, {run.batches} batches"))

    def list_targets(self, names, using):
        runs = {r.name: r for r in RebuildRun.objects.using(using).all()}
        for target in resolve_targets(names):
            run = runs.get(target.name)
            state = "never rebuilt" if run is None else (
                f"{run.status}: {run.events_done:,}/{run.total_events:,} events, cursor {run.cursor or '-'}, "
                f"updated {run.updated:%Y-%m-%d %H:%M:%S}")
            self.stdout.write(f"{target.name:<40} {getattr(target, 'kind', 'inline'):<8} {state}")
