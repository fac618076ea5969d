"""The ordering bounded context: its own namespace, aggregate and read model."""

import uuid
from decimal import Decimal

from django_fluvius import Aggregate, Domain, DomainError, action, apply


class OrderAggregate(Aggregate):
    @action(evt_key="order-placed", resources=["order"], create=True)
    def place_order(self, customer_id: uuid.UUID, items: list[dict]):
        """Place an order of items, each {"sku", "quantity", "price"}."""
        if not items:
            raise DomainError("An order needs at least one item")
        lines = [_line(item) for item in items]
        return {"customer_id": customer_id, "items": lines, "status": "placed"}

    @action(evt_key="order-item-added", resources=["order"])
    def add_item(self, sku: str, quantity: int, price: Decimal):
        """Add one item to an order that is not paid yet."""
        if self.state["status"] != "placed":
            raise DomainError(f"Cannot add items to a {self.state['status']} order")
        return _line({"sku": sku, "quantity": quantity, "price": price})

    @action(evt_key="order-paid", resources=["order"])
    def pay_order(self, amount: Decimal):
        """Pay the whole order at once."""
        if self.state["status"] != "placed":
            raise DomainError(f"Cannot pay a {self.state['status']} order")
        if Decimal(str(amount)) != Decimal(str(self.state["total"])):
            raise DomainError(f"Payment of {amount} does not match the total {self.state['total']}")
        return {"status": "paid", "paid": str(amount)}

    @action(evt_key="order-shipped", resources=["order"])
    def ship_order(self):
        if self.state["status"] != "paid":
            raise DomainError("Only a paid order can be shipped")
        return {"status": "shipped"}

    @action(evt_key="order-cancelled", resources=["order"])
    def cancel_order(self, reason: str = ""):
        if self.state["status"] in ("shipped", "cancelled"):
            raise DomainError(f"Cannot cancel a {self.state['status']} order")
        return {"status": "cancelled", "reason": reason}

    @apply("order-placed")
    def _placed(self, state, event):
        items = event.payload["items"]
        return {**state, **event.payload, "total": _total(items)}

    @apply("order-item-added")
    def _item_added(self, state, event):
        items = [*state["items"], event.payload]
        return {**state, "items": items, "total": _total(items)}


def _line(item: dict) -> dict:
    quantity = int(item.get("quantity", 1))
    price = Decimal(str(item.get("price", "0")))
    if quantity < 1:
        raise DomainError(f"Quantity of {item.get('sku')!r} must be at least 1")
    if price < 0:
        raise DomainError(f"Price of {item.get('sku')!r} cannot be negative")
    return {"sku": str(item.get("sku", "")), "quantity": quantity, "price": str(price)}


def _total(items: list[dict]) -> str:
    return str(sum((Decimal(i["price"]) * i["quantity"] for i in items), Decimal("0")))


class OrderDomain(Domain):
    __aggregate__ = OrderAggregate
    __namespace__ = "app-order"
    __resources__ = {"order": "app_order.Order"}
