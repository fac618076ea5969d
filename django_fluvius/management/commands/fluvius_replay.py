"""``manage.py fluvius_replay``: run event handlers again over a range of stored events.

    manage.py fluvius_replay --from 1200 --to 1500
    manage.py fluvius_replay --handler myapp.handlers.send_welcome_email --evt-key user-created
    manage.py fluvius_replay --missing-only --handler myapp.handlers.new_report   # a new handler, old events

Each (handler, event) pair is delivered as a live one is (its own transaction,
its receipt); failures become dead letters (``fluvius_deadletters``). Async
projections are rebuilt with ``fluvius_rebuild``, not replayed.
"""

from typing import TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import FluviusError
from django_fluvius.management.options import database_alias
from django_fluvius.ops.progress import Progress
from django_fluvius.ops.replay import replay, replay_events
from django_fluvius.read.state import parse_aggregate_id


class Command(BaseCommand):
    help = "Re-run @event_handler functions for stored events in a position range."

    def add_arguments(self, parser):
        parser.add_argument("--from", dest="from_position", type=int, default=1, help="first position (default 1)")
        parser.add_argument("--to", dest="to_position", type=int, default=None, help="last position (default: the end)")
        parser.add_argument("--handler", action="append", default=[], help="only this handler (repeatable)")
        parser.add_argument("--evt-key", action="append", default=[], help="only events of this key (repeatable)")
        parser.add_argument("--namespace", default=None, help="only events of this domain")
        parser.add_argument("--aggregate", default=None, help="only events of this aggregate id")
        parser.add_argument("--missing-only", action="store_true",
                            help="skip (handler, event) pairs that already ran")
        parser.add_argument("--dry-run", action="store_true", help="list the pairs, run nothing")
        parser.add_argument("--no-progress", action="store_true")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        if options["from_position"] < 1 or (options["to_position"] is not None
                                            and options["to_position"] < options["from_position"]):
            raise CommandError("--from must be >= 1 and --to >= --from.")
        try:
            aggregate = parse_aggregate_id(options["aggregate"]) if options["aggregate"] else None
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        selection = {"from_position": options["from_position"], "to_position": options["to_position"],
                     "evt_keys": options["evt_key"], "namespace": options["namespace"], "aggregate_id": aggregate,
                     "using": options["database"] or fluvius_settings.DATABASE}
        bar = None
        if not options["no_progress"] and not options["dry_run"]:
            bar = Progress("replay", replay_events(**selection).count(), stream=cast(TextIO, self.stderr._out))
        try:
            report = replay(handler_names=options["handler"], missing_only=options["missing_only"],
                            dry_run=options["dry_run"], on_event=bar.update if bar else None, **selection)
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        if bar is not None:
            bar.finish()
        if options["dry_run"]:
            for name, position in report.pairs:
                self.stdout.write(f"{position:>10}  {name}")
            self.stdout.write(f"{len(report.pairs)} deliveries would run ({report.events} events).")
            return
        for line in report.failures:
            self.stderr.write(self.style.ERROR(line))
        self.stdout.write(f"{report.events} events: {report.done} deliveries ran, {report.skipped} already done, "
                          f"{report.waiting} waiting, {report.failed} failed.")
        if report.failed:
            raise CommandError(f"{report.failed} deliveries failed (now dead letters: manage.py fluvius_deadletters).")
