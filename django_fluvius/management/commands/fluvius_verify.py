"""``manage.py fluvius_verify [target ...]``: decode every event, fold every aggregate, compare
with its projection row and snapshots; report drift (exit status 1 when there is any)."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.exceptions import FluviusError
from django_fluvius.ops.inspection import DRIFT_KINDS, verify

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
    "snapshot": "snapshots are a cache: delete them and take new ones from the events "
                "(`manage.py fluvius_snapshots retake NAMESPACE`, or `clear` for domains without snapshots), "
                "docs/event-sourcing-ops.md, Snapshots",
}


class Command(BaseCommand):
    help = "Check that every stored event decodes and every projection matches its events."

    def add_arguments(self, parser):
        parser.add_argument("targets", nargs="*", help="resource, namespace.resource or namespace (default: all)")
        parser.add_argument("--batch-size", type=int, default=500, help="aggregates read per batch")
        parser.add_argument("--max-listed", type=int, default=100, help="drifts listed in full (all are counted)")
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.add_argument("--database", default=None, help="database alias of the event store")

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
            advice = dict.fromkeys(REMEDIES[kind] for kind in sorted(report.counts))  # in order, once each
            raise CommandError(f"Drift found: {total} problem(s). " + "; ".join(advice) + ".")
        if not options["json"]:
            self.stdout.write(self.style.SUCCESS("No drift: every projection matches its events."))
