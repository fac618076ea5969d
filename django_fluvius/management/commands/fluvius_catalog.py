"""``manage.py fluvius_catalog``: the domain map, read from the registered code.

``--format markdown`` (default) prints a table per domain (command, event,
subscribers), ``mermaid`` a flowchart to paste where Mermaid is drawn, and
``asyncapi`` an AsyncAPI 3.0.0 document (JSON) with every event as a message
and its payload schema. ``--namespace`` keeps the listed domains only.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from django_fluvius.ops.catalog import RENDERERS, domain_map
from django_fluvius.rest.schema import json_schema


class Command(BaseCommand):
    help = "Print the domain map (commands -> events -> subscribers) as Markdown, Mermaid or AsyncAPI 3."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=sorted(RENDERERS), default="markdown")
        parser.add_argument("--namespace", action="append", default=[],
                            help="Only this domain (repeatable).")

    def handle(self, *args, **options):
        maps = domain_map(json_schema)
        wanted = options["namespace"]
        if wanted:
            unknown = sorted(set(wanted) - {m.namespace for m in maps})
            if unknown:
                known = ", ".join(m.namespace for m in maps) or "none"
                raise CommandError(f"No domain has the namespace {', '.join(unknown)} (known: {known}).")
            maps = [m for m in maps if m.namespace in wanted]
        self.stdout.write(RENDERERS[options["format"]](maps), ending="")
