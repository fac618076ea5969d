"""Hand outbox rows over to their handlers: the periodic relay.

The on-commit relay hands most rows over at once; this command picks up what it
could not (broker down, process killed after COMMIT). Run it once, or with
``--loop`` as a small service beside the web processes (Celery beat's
``fluvius.relay`` task does the same from a worker).

Under a supervisor (systemd, a Procfile runner, Kubernetes) the loop stops on
SIGTERM or SIGINT after the round in hand: a round is a set of hand-overs whose
rows are deleted only once handed over, so stopping between rounds leaves nothing
half-done, and the exit status is 0 (a clean stop, not a crash to restart).
"""

import signal
import threading
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.delivery.dispatch import prune_receipts as prune
from django_fluvius.delivery.dispatch import relay_pending


class Command(BaseCommand):
    help = "Hand pending outbox rows over to the dispatcher (once, or --loop)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep relaying every --interval seconds")
        parser.add_argument("--interval", type=float, default=2.0, help="seconds between rounds (--loop)")
        parser.add_argument("--grace", type=float, default=None,
                            help="leave rows younger than this many seconds (default FLUVIUS['RELAY_GRACE'])")
        parser.add_argument("--limit", type=int, default=None, help="rows per round")
        parser.add_argument("--database", default=None, help="database alias of the event store")
        parser.add_argument("--prune-receipts", type=float, default=None, metavar="DAYS",
                            help="first delete handler receipts older than DAYS days")

    def handle(self, *args, loop=False, interval=2.0, grace=None, limit=None, database=None,
               prune_receipts=None, **options):
        if prune_receipts is not None:
            if prune_receipts <= 0:
                raise CommandError("--prune-receipts takes a number of days > 0.")
            pruned = prune(timedelta(days=prune_receipts), using=database)
            if options["verbosity"] >= 1:
                self.stdout.write(f"Deleted {pruned} handler receipts older than {prune_receipts:g} days.")
        stop = threading.Event()
        previous = {}
        if loop and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, lambda *_: stop.set())
        try:
            self.relay(loop, interval, grace, limit, database, stop, options["verbosity"])
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def relay(self, loop, interval, grace, limit, database, stop, verbosity):
        while True:
            total = failed = 0
            while True:  # drain: rounds until nothing is left to hand over
                result = relay_pending(using=database, min_age=grace, limit=limit)
                total += result.handed_over
                failed += result.failed
                if not result.handed_over:
                    break
            if verbosity >= 1 and (total or failed or not loop):
                self.stdout.write(f"Handed over {total} outbox rows" + (f"; {failed} wait (broker down?)"
                                                                       if failed else "") + ".")
            if not loop or stop.is_set():
                if loop and verbosity >= 1:
                    self.stdout.write("Relay stopped.")
                return
            stop.wait(interval)  # a signal ends the wait at once
