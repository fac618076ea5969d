"""``manage.py fluvius_inspect [section ...]``: domains, commands, events, handlers, projections."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.management.options import database_alias
from django_fluvius.ops.inspection import overview

SECTIONS = ("domains", "commands", "events", "handlers", "projections")


def _text(value):
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "-"
    if value is None or value == "":
        return "-"
    return str(value)


COLUMNS = {
    "domains": ("namespace", "domain", "aggregate", "resources", "snapshot_every", "snapshot_schema"),
    "commands": ("namespace", "command", "evt_key", "resources", "create", "async", "fields"),
    "events": ("namespace", "evt_key", "schema_version", "upcasters", "renamed_from", "produced_by",
               "applied_by", "handlers", "stored"),
    "handlers": ("name", "evt_keys", "namespace", "ordered", "async"),
    "projections": ("name", "kind", "model", "table", "evt_keys", "rows", "lag"),
}


class Command(BaseCommand):
    help = "List the domains, commands, events, handlers and projections of the project."

    def add_arguments(self, parser):
        parser.add_argument("sections", nargs="*", default=[], help=f"any of {', '.join(SECTIONS)} (default: all)")
        parser.add_argument("--counts", action="store_true", help="also count stored events and rows")
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        unknown = [s for s in options["sections"] if s not in SECTIONS]
        if unknown:
            raise CommandError(f"Unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}.")
        sections = options["sections"] or list(SECTIONS)
        data = overview(counts=options["counts"], using=options["database"])
        data = {name: data[name] for name in sections}
        if options["json"]:
            self.stdout.write(json.dumps(data, cls=DjangoJSONEncoder, indent=2))
            return
        for name in sections:
            rows = data[name]
            self.stdout.write(self.style.MIGRATE_HEADING(f"{name.capitalize()} ({len(rows)})"))
            columns = [c for c in COLUMNS[name] if any(c in row for row in rows)]
            table = [[_text(row.get(c)) for c in columns] for row in rows]
            widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
            self.stdout.write("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
            for r in table:
                self.stdout.write("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
            self.stdout.write("")
