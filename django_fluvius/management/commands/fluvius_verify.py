"""``manage.py fluvius_verify [target ...]``: decode every event, fold every aggregate, compare
with its projection row and snapshots; report drift (exit status 1 when there is any)."""

import json
from collections.abc import Iterable

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.events.snapshots import snapshot_interval
from django_fluvius.exceptions import FluviusError
from django_fluvius.management.options import database_alias
from django_fluvius.ops.inspection import DRIFT_KINDS, verify
from django_fluvius.registry import domains

_REBUILD = "`manage.py fluvius_rebuild` rewrites projections from the events"
_UPCAST = "(docs/event-sourcing-ops.md, Upcasting)"
# What to do about each kind of drift found: the closing advice names those of the report.
REMEDIES = {
    "undecodable": f"an event no code decodes or folds: an upcaster, or the @apply that fails {_UPCAST}",
    "event_type": f"stored event keys or schema versions no code reads: an upcaster or an old name {_UPCAST}",
    "missing_row": _REBUILD,
    "extra_row": _REBUILD,
    "stale_row": _REBUILD,
    "field": _REBUILD,
    "snapshot": "snapshots are a cache: {snapshot_commands} (docs/event-sourcing-ops.md, Snapshots)",
}


def snapshot_commands(targets: Iterable[str]) -> str:
    """What mends the snapshots of these ``namespace.resource`` targets: take them again where the
    domain takes snapshots, delete them where it no longer does (they are never read there)."""
    retake: list[str] = []
    clear: list[str] = []
    for namespace in sorted({target.rsplit(".", 1)[0] for target in targets}):
        on = namespace in domains and snapshot_interval(domains.get(namespace).__aggregate__)
        (retake if on else clear).append(namespace)
    commands = [f"`manage.py fluvius_snapshots {action} {' '.join(namespaces)}`"
                for action, namespaces in (("retake", retake), ("clear", clear)) if namespaces]
    return "delete them and take new ones from the events, " + " and ".join(commands)


class Command(BaseCommand):
    help = "Check that every stored event decodes and every projection matches its events."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="*", default=[], help="resource, namespace.resource or namespace (default: all)")
        parser.add_argument("--batch-size", type=int, default=500, help="aggregates read per batch")
        parser.add_argument("--max-listed", type=int, default=100, help="drifts listed in full (all are counted)")
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        try:
            report = verify(options["targets"], batch_size=options["batch_size"], using=options["database"],
                            max_listed=options["max_listed"])
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), cls=DjangoJSONEncoder, indent=2))
        else:
            self.stdout.write(f"{report.events:,} events decoded, {report.aggregates:,} aggregates folded, "
                              f"{report.rows:,} rows and {report.snapshots:,} snapshots compared.")
            for drift in report.drifts:
                where = " ".join(part for part in (drift.target, drift.aggregate_id) if part)
                self.stdout.write(self.style.WARNING(f"[{drift.kind}] {where}: {drift.message}"))
            for kind, count in sorted(report.counts.items()):
                self.stdout.write(f"{kind:<12} {count:>8,}  ({DRIFT_KINDS[kind]})")
        if not report.ok:
            total = sum(report.counts.values())
            mends = {"snapshot_commands": snapshot_commands(report.targets["snapshot"])}
            advice = "; ".join(dict.fromkeys(  # in order, once each
                REMEDIES[kind].format(**mends) for kind in sorted(report.counts)))
            raise CommandError(f"Drift found: {total} problem(s). {advice[0].upper()}{advice[1:]}.")
        if not options["json"]:
            self.stdout.write(self.style.SUCCESS("No drift: every projection row and snapshot matches its events."))
