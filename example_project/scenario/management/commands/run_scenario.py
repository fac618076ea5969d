"""The example project's main job: a scenario across both bounded contexts.

It runs commands through the command bus, shows the rejected ones, then prints
the events stored and the state rebuilt from them.
"""

import json
import uuid

from django.core.management.base import BaseCommand
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius import DomainContext, FluviusError
from django_fluvius.models import Event
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain


def dumps(value) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)


class Command(BaseCommand):
    help = "Run the example scenario: commands, events and the state rebuilt from them."

    def handle(self, *args, **options):
        self.run_id = uuid.uuid4().hex[:8]
        first_position = (Event.objects.order_by("-position").values_list("position", flat=True).first() or 0)
        users = UserDomain(DomainContext.create(namespace="app-user", source="scenario"))
        orders = OrderDomain(DomainContext.create(namespace="app-order", source="scenario"))

        self.section("Commands")
        alice = self.run(users, "create-user", {"name": "Alice", "email": f"alice-{self.run_id}@example.com"})
        bob = self.run(users, "create-user", {"name": "Bob", "email": f"bob-{self.run_id}@example.com"})
        self.run(users, "rename-user", {"name": "Alice Liddell"}, alice.aggregate_id, expected_version=1)
        self.run(users, "deactivate-user", {}, bob.aggregate_id)
        self.run(users, "deactivate-user", {}, bob.aggregate_id)            # refused: already inactive
        self.run(users, "create-user", {"name": "Eve", "email": "not-an-email"})  # refused: bad email
        self.run(users, "rename-user", {"name": "Stale"}, alice.aggregate_id, expected_version=1)  # stale
        self.run(users, "create-user", {"name": ["nested", "junk"]})       # refused: invalid payload

        order = self.run(orders, "place-order", {
            "customer_id": str(alice.aggregate_id),
            "items": [{"sku": "BOOK-1", "quantity": 2, "price": "12.50"}],
        })
        self.run(orders, "add-item", {"sku": "PEN-7", "quantity": 3, "price": "1.20"}, order.aggregate_id)
        self.run(orders, "pay-order", {"amount": "1.00"}, order.aggregate_id)   # refused: wrong amount
        self.run(orders, "pay-order", {"amount": "28.60"}, order.aggregate_id)
        self.run(orders, "ship-order", {}, order.aggregate_id)

        self.section("Events stored")
        for event in Event.objects.filter(position__gt=first_position).order_by("position"):
            self.stdout.write(
                f"  #{event.position:<5} {event.namespace:<10} {event.evt_key:<18} "
                f"v{event.version} {event.aggregate_id}  {dumps(event.payload)}"
            )

        self.section("State rebuilt from the events")
        for domain, aggregate_id in ((users, alice.aggregate_id), (users, bob.aggregate_id),
                                     (orders, order.aggregate_id)):
            aggregate = domain.load(aggregate_id)
            self.stdout.write(f"  {aggregate.resource} {aggregate_id} v{aggregate.version}: {dumps(aggregate.state)}")
        first = users.load(alice.aggregate_id, version=1)
        self.stdout.write(f"  time travel: user {alice.aggregate_id} at v1: {dumps(first.state)}")

        self.section("Read models (projections)")
        for row in users.statemgr.find("user", pk__in=[alice.aggregate_id, bob.aggregate_id]).order_by("name"):
            self.stdout.write(f"  user  {row.pk} v{row.version}: name={row.name!r} active={row.active}")
        row = orders.statemgr.fetch("order", order.aggregate_id)
        self.stdout.write(f"  order {row.pk} v{row.version}: status={row.status} total={row.total}")
        self.stdout.write(self.style.SUCCESS("\nScenario complete."))

    def section(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n== {title}"))

    def run(self, domain, key, payload, aggregate_id=None, expected_version=None):
        label = f"{domain.__namespace__}:{key} {dumps(payload)}"
        if aggregate_id:
            label += f" on {aggregate_id}"
        if expected_version is not None:
            label += f" (expected v{expected_version})"
        try:
            command = domain.create_command(key, payload, aggregate_id=aggregate_id,
                                            expected_version=expected_version)
            result = domain.process_command(command)
        except FluviusError as exc:
            self.stdout.write(f"  REFUSED {label}\n          -> {type(exc).__name__} [{exc.code}]: {exc.message}")
            return None
        self.stdout.write(f"  OK      {label}\n          -> v{result.version} {result.events[-1].evt_key}")
        return result
