"""Async projections: list them, run a worker, catch up, reset, start from a position.

    manage.py fluvius_projections list
    manage.py fluvius_projections catch-up [NAME ...]          # once, to the end of the feed
    manage.py fluvius_projections run [NAME ...] [--interval S] # a worker: catch up, wait, again
    manage.py fluvius_projections reset NAME [--position P]     # empty its models, start again
    manage.py fluvius_projections start-at NAME --position P    # move its checkpoint only

Under Celery the workers do this by themselves (``fluvius.project`` after each
commit, ``fluvius.catch_up_all`` from beat); this command is the same work
without a broker, and the way to rebuild one projection by hand.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.delivery.projections import APPLIED, FAILED, async_projections
from django_fluvius.exceptions import UnknownProjection
from django_fluvius.management.options import database_alias


class Command(BaseCommand):
    help = "List, run, catch up, reset or reposition async projections."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "catch-up", "run", "reset", "start-at"])
        parser.add_argument("names", nargs="*", default=[], help="projection names (default: all)")
        parser.add_argument("--position", type=int, default=0, help="event position to start after")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between idle rounds (run)")
        parser.add_argument("--database", default=None, type=database_alias)

    def handle(self, *args, action, names, position=0, interval=1.0, database=None, **options):
        self.verbosity = options["verbosity"]
        try:
            classes = [async_projections.get(n) for n in names] if names else list(async_projections)
        except UnknownProjection as exc:
            raise CommandError(str(exc)) from exc
        if action in ("reset", "start-at") and len(names) != 1:
            raise CommandError(f"{action} takes exactly one projection name.")
        if position < 0:
            raise CommandError("--position is an event position (>= 0).")
        projections = [cls(using=database) for cls in classes]
        getattr(self, "do_" + action.replace("-", "_"))(projections, position=position, interval=interval)

    def do_list(self, projections, **kwargs):
        for projection in projections:
            cp = projection.checkpoint()
            line = (f"{projection.name:<40} position={cp.position:<10} applied={cp.events_applied:<10} "
                    f"lag={projection.lag()}")
            if cp.failures:
                line += f"  FAILING ({cp.failures}x): {cp.last_error[:80]}"
            self.stdout.write(line)
        self.stdout.write(f"{len(projections)} async projections.")

    def _catch_up(self, projection):
        result = projection.catch_up()
        if result.status == FAILED:
            self.stderr.write(f"{projection.name}: failed at position {result.position} (tried again later; "
                              f"see its checkpoint's last error).")
        elif self.verbosity and result.applied:
            self.stdout.write(f"{projection.name}: applied {result.applied} events, now at {result.position}"
                              + (f", {result.skipped} dead-lettered" if result.skipped else "") + ".")
        return result

    def do_catch_up(self, projections, **kwargs):
        for projection in projections:
            self._catch_up(projection)

    def do_run(self, projections, *, interval, **kwargs):
        while True:
            busy = [self._catch_up(p).status == APPLIED for p in projections]
            if not any(busy):
                time.sleep(interval)

    def do_reset(self, projections, *, position, **kwargs):
        cp = projections[0].reset(position)
        if self.verbosity:
            self.stdout.write(f"{projections[0].name}: emptied; next catch-up reads after position {position} "
                              f"(checkpoint {cp.key}).")

    def do_start_at(self, projections, *, position, **kwargs):
        cp = projections[0].start_at(position)
        if self.verbosity:
            self.stdout.write(f"{projections[0].name}: next catch-up reads after position {position} "
                              f"(checkpoint {cp.key}).")
