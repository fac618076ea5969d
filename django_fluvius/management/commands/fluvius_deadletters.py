"""Inspect, re-drive or discard dead letters (deliveries that failed their last try).

    manage.py fluvius_deadletters list [--handler NAME] [--kind handler|projection]
    manage.py fluvius_deadletters show ID
    manage.py fluvius_deadletters redrive ID [ID ...] | --all | --handler NAME
    manage.py fluvius_deadletters discard ID [ID ...] | --all | --handler NAME

Re-driving delivers again from the first try (through the current dispatcher);
discarding gives up for good (an ordered handler then moves past the event).
"""

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.delivery.dispatch import discard, redrive
from django_fluvius.management.options import database_alias
from django_fluvius.models import DeadLetter


class Command(BaseCommand):
    help = "List, show, re-drive or discard dead letters of event handlers and async projections."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "show", "redrive", "discard"])
        parser.add_argument("ids", nargs="*", default=[], help="dead letter ids")
        parser.add_argument("--all", action="store_true", help="every dead letter (narrowed by the filters)")
        parser.add_argument("--handler", help="only this handler or projection")
        parser.add_argument("--kind", choices=[k for k, _ in DeadLetter.Kind.choices])
        parser.add_argument("--database", default=None, type=database_alias)

    def handle(self, *args, action, ids, all=False, handler=None, kind=None, database=None, **options):
        qs = DeadLetter.objects.using(database) if database else DeadLetter.objects.all()
        if handler:
            qs = qs.filter(handler=handler)
        if kind:
            qs = qs.filter(kind=kind)
        try:
            pks = [int(i) for i in ids]
        except ValueError as exc:
            raise CommandError(f"Dead letter ids are numbers: {exc}") from exc
        if pks:
            qs = qs.filter(pk__in=pks)
        chosen = bool(pks) or all or bool(handler) or bool(kind)
        getattr(self, f"do_{action}")(qs, chosen, options["verbosity"])

    def do_list(self, qs, chosen, verbosity):
        letters = list(qs.order_by("position", "id"))
        for letter in letters:
            self.stdout.write(
                f"{letter.pk:>6}  {letter.kind:<10} {letter.handler:<40} {letter.evt_key:<20} "
                f"@{letter.position:<8} tries={letter.attempts:<3} {letter.created:%Y-%m-%d %H:%M:%S}  "
                f"{letter.error_type.rsplit('.', 1)[-1]}: {letter.error_message.splitlines()[0][:80] if letter.error_message else ''}"
            )
        self.stdout.write(f"{len(letters)} dead letters.")

    def do_show(self, qs, chosen, verbosity):
        if not chosen:
            raise CommandError("Name the dead letter ids to show.")
        for letter in qs:
            self.stdout.write(f"Dead letter {letter.pk}: {letter.kind} {letter.handler}")
            self.stdout.write(f"  event {letter.evt_key} of {letter.namespace} {letter.aggregate_id} "
                              f"v{letter.version} (position {letter.position})")
            self.stdout.write(f"  {letter.attempts} tries, last at {letter.created:%Y-%m-%d %H:%M:%S}")
            self.stdout.write(f"  {letter.error_type}: {letter.error_message}")
            if letter.traceback:
                self.stdout.write(letter.traceback)

    def _chosen(self, qs, chosen, action):
        if not chosen:
            raise CommandError(f"Name the dead letter ids or --all to {action}.")
        return list(qs)

    def do_redrive(self, qs, chosen, verbosity):
        letters = self._chosen(qs, chosen, "redrive")
        try:
            count = redrive(letters)
        except Exception as exc:  # noqa: BLE001 - unknown handler, broker down: say so, no traceback
            raise CommandError(f"Could not re-drive: {type(exc).__name__}: {exc}") from exc
        if verbosity:
            self.stdout.write(f"Re-drove {count} dead letter{'' if count == 1 else 's'}.")

    def do_discard(self, qs, chosen, verbosity):
        count = discard(self._chosen(qs, chosen, "discard"))
        if verbosity:
            self.stdout.write(f"Discarded {count} dead letter{'' if count == 1 else 's'}.")
