"""Deliver everything pending to every subscription this process knows: the relay.

    manage.py fluvius_relay                # once: every subscription to the end of the feed
    manage.py fluvius_relay --loop         # a service: LISTEN for commits, poll as a safety net

Commits wake the relay of the process that made them (and, on PostgreSQL, every
listening relay); this command picks up what nobody else did — a handler the web
processes do not know, a broker that was down, deliveries a broker lost. Celery
workers run the same loop in a thread (``FLUVIUS['RELAY_IN_WORKER']``) and Celery
beat's ``fluvius.relay`` task runs one round.

Under a supervisor (systemd, a Procfile runner, Kubernetes) the loop stops on
SIGTERM or SIGINT after the round in hand: every round leaves the checkpoints
where its settled work put them, so stopping between rounds leaves nothing
half-done, and the exit status is 0 (a clean stop, not a crash to restart).
"""

import signal
import threading
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.dispatch import RelayResult, deliver_pending, serve
from django_fluvius.delivery.dispatch import prune_receipts as prune
from django_fluvius.management.options import database_alias


class Command(BaseCommand):
    help = "Deliver pending events to every subscription (once, or --loop with LISTEN/NOTIFY and a poll)."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="keep relaying: at every commit and every --interval")
        parser.add_argument("--interval", type=float, default=None,
                            help="seconds between polls (--loop; default FLUVIUS['RELAY_POLL'])")
        parser.add_argument("--no-listen", action="store_true", help="poll only, no LISTEN (--loop)")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")
        parser.add_argument("--prune-receipts", type=float, default=None, metavar="DAYS",
                            help="first delete done handler receipts older than DAYS days")

    def handle(self, *args, loop=False, interval=None, no_listen=False, database=None, prune_receipts=None,
               **options):
        verbosity = options["verbosity"]
        if prune_receipts is not None:
            if prune_receipts <= 0:
                raise CommandError("--prune-receipts takes a number of days > 0.")
            pruned = prune(timedelta(days=prune_receipts), using=database)
            if verbosity >= 1:
                self.stdout.write(f"Deleted {pruned} handler receipts older than {prune_receipts:g} days.")
        if interval is not None and interval <= 0:
            raise CommandError("--interval takes a number of seconds > 0.")
        if fluvius_settings.DISPATCH in (None, "off"):
            raise CommandError("FLUVIUS['DISPATCH'] is off: there is nothing to deliver with.")

        def report(result: RelayResult, *, always: bool = False) -> None:
            if verbosity < 1 or not (always or result.handed_over or result.redelivered or result.failed):
                return
            line = f"Handed over {result.handed_over} deliveries"
            if result.redelivered:
                line += f", {result.redelivered} again (not settled in time)"
            if result.busy:
                line += f"; {result.busy} subscriptions led by another relay"
            self.stdout.write(line + ".")
            for error in result.errors:
                self.stderr.write(f"Waiting: {error}")

        if loop:
            stop = threading.Event()
            previous = {}
            if threading.current_thread() is threading.main_thread():
                for signum in (signal.SIGTERM, signal.SIGINT):
                    previous[signum] = signal.signal(signum, lambda *_: stop.set())
            try:
                serve(using=database, listen=not no_listen, poll=interval, on_round=report, stop=stop)
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)
            if verbosity >= 1:
                self.stdout.write("Relay stopped.")
            return
        report(deliver_pending(using=database), always=True)
