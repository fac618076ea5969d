"""List, delete or take snapshots of aggregates (they are a cache of folded state).

    manage.py fluvius_snapshots list [NAMESPACE ...]
    manage.py fluvius_snapshots clear NAMESPACE [...] [--aggregate ID] | --all
    manage.py fluvius_snapshots take NAMESPACE [...] [--aggregate ID] | --all
    manage.py fluvius_snapshots retake NAMESPACE [...] [--aggregate ID] | --all

``take`` folds each aggregate from its events (never from an older snapshot) and
stores the state at its current version; ``retake`` deletes the chosen snapshots
first, so no older one (stale, tampered, of an old fold) is left for time-travel
loads to use. Only domains whose aggregate has snapshots on are taken: named, another
is refused; with ``--all`` it is skipped (and ``retake --all`` deletes its snapshots,
which no load reads). ``clear`` takes any domain.
"""

import uuid

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Max

from django_fluvius.conf import fluvius_settings
from django_fluvius.events.snapshots import SnapshotStore, snapshot_interval, take_snapshots
from django_fluvius.exceptions import FluviusError
from django_fluvius.management.options import database_alias
from django_fluvius.read.state import parse_aggregate_id
from django_fluvius.registry import domains


class Command(BaseCommand):
    help = "List, delete (clear), take or retake snapshots of aggregates."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["list", "clear", "take", "retake"])
        parser.add_argument("namespaces", nargs="*", default=[], help="domain namespaces (list: default all)")
        parser.add_argument("--all", action="store_true", help="every domain (clear: every snapshot)")
        parser.add_argument("--aggregate", action="append", default=[], help="only this aggregate id (repeatable)")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, action, namespaces, all=False, aggregate=(), database=None, **options):
        self.store = SnapshotStore(database or fluvius_settings.DATABASE)
        self.verbosity = options["verbosity"]
        try:
            self.aggregate_ids = [parse_aggregate_id(value) for value in aggregate]
            for namespace in namespaces:
                domains.get(namespace)  # an unknown namespace names the known ones
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        if action != "list" and not namespaces and not all:
            raise CommandError(f"Name the domain namespaces or --all to {action} "
                               f"(known: {', '.join(sorted(d.__namespace__ for d in domains)) or 'none'}).")
        if namespaces and all:
            raise CommandError("Name namespaces or --all, not both.")
        getattr(self, f"do_{action}")(namespaces)

    def do_list(self, namespaces):
        qs = self.store.snapshots.all()
        if namespaces:
            qs = qs.filter(namespace__in=namespaces)
        if self.aggregate_ids:
            qs = qs.filter(aggregate_id__in=self.aggregate_ids)
        rows = (qs.values("namespace", "resource").order_by("namespace", "resource")
                .annotate(snapshots=Count("id"), aggregates=Count("aggregate_id", distinct=True),
                          newest=Max("created")))
        total = 0
        for row in rows:
            total += row["snapshots"]
            self.stdout.write(f"{row['namespace'] + '.' + row['resource']:<40} {_count(row['snapshots'], 'snapshot', 8)} "
                              f"of {_count(row['aggregates'], 'aggregate', 8)}, newest {row['newest']:%Y-%m-%d %H:%M:%S}")
        chosen = [domains.get(namespace) for namespace in namespaces] if namespaces else list(domains)
        for domain_class in sorted(chosen, key=lambda d: d.__namespace__):
            if not snapshot_interval(domain_class.__aggregate__):
                self.stdout.write(f"{domain_class.__namespace__}: snapshots off (loads never read a snapshot).")
        self.stdout.write(f"{_count(total, 'snapshot')}.")

    def do_clear(self, namespaces):
        count = self._clear(namespaces)
        self._say(f"Deleted {_count(count, 'snapshot')}.")

    def do_take(self, namespaces):
        count = 0
        for domain_class in self._snapshotted(namespaces):
            taken = take_snapshots(domain_class, self.aggregate_ids or None, using=self.store.using)
            count += taken
            self._say(f"{domain_class.__namespace__}: took {_count(taken, 'snapshot')}.")
        self._say(f"Took {_count(count, 'snapshot')}.")

    def do_retake(self, namespaces):
        if namespaces:
            self._snapshotted(namespaces)  # refuse before deleting anything
        self.do_clear(namespaces)  # --all: every snapshot, those of domains now off included
        self.do_take(namespaces)

    def _clear(self, namespaces: list[str]) -> int:
        """Delete the chosen snapshots (None: no narrowing by namespace or aggregate)."""
        chosen: list[str | None] = list(namespaces) or [None]
        aggregate_ids: list[uuid.UUID | None] = list(self.aggregate_ids) or [None]
        return sum(self.store.clear(namespace=namespace, aggregate_id=aggregate_id)
                   for namespace in chosen for aggregate_id in aggregate_ids)

    def _snapshotted(self, namespaces) -> list:
        """The chosen domains whose aggregate takes snapshots; naming one that does not is an error."""
        if namespaces:
            chosen = [domains.get(namespace) for namespace in namespaces]
            off = [d.__namespace__ for d in chosen if not snapshot_interval(d.__aggregate__)]
            if off:
                raise CommandError(
                    f"Snapshots are off for {', '.join(off)}: set snapshot_every on the aggregate class "
                    "or FLUVIUS['SNAPSHOT_EVERY'] to take them. Loads of such a domain never read a "
                    f"snapshot; `fluvius_snapshots clear {' '.join(off)}` deletes any left from before.")
            return chosen
        chosen = []
        for domain_class in sorted(domains, key=lambda d: d.__namespace__):
            if snapshot_interval(domain_class.__aggregate__):
                chosen.append(domain_class)
            else:
                self._say(f"{domain_class.__namespace__}: snapshots off, skipped.")
        return chosen

    def _say(self, line: str) -> None:
        if self.verbosity:
            self.stdout.write(line)


def _count(number: int, noun: str, width: int = 0) -> str:
    """``3 snapshots``, ``1 snapshot`` (the number right-aligned in ``width``)."""
    return f"{number:>{width}} {noun}{'' if number == 1 else 's'}"
