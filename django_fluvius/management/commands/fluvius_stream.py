"""``manage.py fluvius_stream <aggregate_id>``: an aggregate's events and its state after each."""

import json

from django.core.management.base import BaseCommand, CommandError
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.exceptions import FluviusError
from django_fluvius.management.options import database_alias
from django_fluvius.ops.inspection import stream_history


class Command(BaseCommand):
    help = "Print an aggregate's events and its state at each version."

    def add_arguments(self, parser):
        parser.add_argument("aggregate_id")
        parser.add_argument("--upto", type=int, default=None, help="stop at this version")
        parser.add_argument("--json", action="store_true", help="one JSON document")
        parser.add_argument("--database", default=None, type=database_alias, help="database alias of the event store")

    def handle(self, *args, **options):
        try:
            domain, resource, steps = stream_history(options["aggregate_id"], upto_version=options["upto"],
                                                     using=options["database"])
        except FluviusError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            document = {"aggregate_id": options["aggregate_id"], "namespace": domain.__namespace__,
                        "resource": resource, "events": [step.as_dict() for step in steps]}
            self.stdout.write(json.dumps(document, cls=DjangoJSONEncoder, indent=2))
            return
        self.stdout.write(self.style.MIGRATE_HEADING(
            f"{domain.__namespace__} {resource} {steps[0].event.aggregate_id}: {len(steps)} event(s)"))
        for step in steps:
            data = step.as_dict()
            stored = ""
            if (data["stored_evt_key"], data["stored_schema_version"]) != (data["evt_key"], data["schema_version"]):
                stored = f" (stored as {data['stored_evt_key']} v{data['stored_schema_version']})"
            self.stdout.write(self.style.SUCCESS(
                f"v{data['version']} {data['evt_key']}{stored}") +
                f"  position {data['position']}, {data['created']:%Y-%m-%d %H:%M:%S.%f}"
                + (f", user {data['user']}" if data["user"] else ""))
            self.stdout.write(f"  payload: {json.dumps(data['payload'], cls=DjangoJSONEncoder, sort_keys=True)}")
            self.stdout.write(f"  state:   {json.dumps(data['state'], cls=DjangoJSONEncoder, sort_keys=True)}")
