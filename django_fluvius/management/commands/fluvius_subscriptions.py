"""Subscriptions (event handlers and async projections): where each stands, and moving one.

    manage.py fluvius_subscriptions list
    manage.py fluvius_subscriptions reset NAME --to beginning|now|POSITION

``list`` shows every subscription this code declares or the database holds: its
checkpoint, the feed's head, its lag (events of its keys still to settle),
deliveries pending and dead letters. A subscription in the database that no code
declares is marked ``UNDECLARED``: nothing is delivered to it.

``reset`` moves a handler's checkpoint: handlers keep their receipts, so a reset
to ``beginning`` offers every event again and runs those not yet handled. An
async projection reset to ``beginning`` or a position is emptied and rebuilt from
there (its ``reset``); to ``now`` its checkpoint only moves.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Max

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import subscriptions
from django_fluvius.delivery.dispatch import declared
from django_fluvius.delivery.projections import async_projections
from django_fluvius.exceptions import UnknownSubscription
from django_fluvius.management.options import database_alias
from django_fluvius.models import Event


def parse_start(value: str):
    """``beginning``, ``now`` or a position, from the command line."""
    if value in (subscriptions.BEGINNING, subscriptions.NOW):
        return value
    try:
        position = int(value)
    except ValueError:
        position = -1
    if position < 0:
        raise CommandError(f'--to is "beginning", "now" or an event position (an integer >= 0), not {value!r}.')
    return position


class Command(BaseCommand):
    help = "List subscriptions (checkpoint, head, lag, pending, dead letters) or reset one."
    # A monitoring command: it must answer while a check fails (a bad start, a removed handler),
    # which is when it is wanted. Its rows say what the checks would.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "reset"])
        parser.add_argument("name", nargs="?", help="the subscription (reset)")
        parser.add_argument("--to", default=None, help='"beginning", "now" or an event position (reset)')
        parser.add_argument("--database", default=None, type=database_alias)

    def handle(self, *args, action, name=None, to=None, database=None, **options):
        using = database or fluvius_settings.DATABASE
        if action == "list":
            return self.do_list(using)
        if not name or to is None:
            raise CommandError("reset takes a subscription name and --to beginning|now|POSITION.")
        start = parse_start(to)
        if isinstance(start, int):
            head = Event.objects.using(using).aggregate(value=Max("position"))["value"] or 0
            if start > head:
                raise CommandError(f"No event has position {start} yet (the newest is {head}): reset to a "
                                   f"position up to {head}, or to now.")
        if name in async_projections:
            projection = async_projections.get(name)(using=using)
            if start == subscriptions.NOW:
                last = Event.objects.using(using).aggregate(value=Max("position"))["value"] or 0
                cp = projection.start_at(last)
            else:
                cp = projection.reset(0 if start == subscriptions.BEGINNING else start)
        else:
            try:
                cp = subscriptions.reset(name, start, declared(), using)
            except UnknownSubscription as exc:
                raise CommandError(str(exc)) from exc
        if options["verbosity"]:
            self.stdout.write(f"{name}: reset to {to}; it reads after position {cp.position} next.")

    def do_list(self, using):
        subs = declared()
        problems = {sub.name: subscriptions.start_problem(sub.start) for sub in subs}
        rows = subscriptions.status(subs, using)
        header = f"{'subscription':<44} {'kind':<10} {'checkpoint':>10} {'head':>10} {'lag':>8} " \
                 f"{'pending':>8} {'dead':>6}"
        self.stdout.write(header)
        for row in rows:
            line = (f"{row.name:<44} {row.kind:<10} {row.position:>10} {row.head:>10} {row.lag:>8} "
                    f"{row.pending:>8} {row.dead_letters:>6}")
            if not row.declared:
                line += "  UNDECLARED: no code declares it; nothing is delivered to it"
            elif problems.get(row.name):
                line += f"  NOT DELIVERED: {problems[row.name]} (fluvius.E055)"
            elif row.updated is None:
                line += "  NOT STARTED: the first relay round (or commit) creates its checkpoint"
            if row.leader:
                line += f"  led by {row.leader}"
            self.stdout.write(line)
        self.stdout.write(f"{len(rows)} subscriptions.")
