"""The ordering bounded context: its own namespace, aggregate and read model."""

import datetime
import uuid
from decimal import Decimal
from typing import Literal

from django_fluvius import Aggregate, Domain, DomainError, action, apply
from django_fluvius.media import MediaRef, ensure_attached


class OrderAggregate(Aggregate):
    # Every refusal names its rule (DomainError(code=...)): clients branch on the code,
    # the message is for people and carries the values.
    @action(evt_key="order-placed", resources=["order"], create=True, example={
        "customer_id": "3b241101-e2bb-4255-8caf-4136c566a962",
        "items": [{"sku": "TEA-1", "quantity": 2, "price": "4.50"}],
    })
    def place_order(self, customer_id: uuid.UUID, items: list[dict]):
        """Place an order of items, each {"sku", "quantity", "price"}."""
        if not items:
            raise DomainError("An order needs at least one item", code="order_empty")
        lines = [_line(item) for item in items]
        _check_total(lines)
        return {"customer_id": customer_id, "items": lines, "status": "placed"}

    @action(evt_key="order-item-added", resources=["order"],
            example={"sku": "PEN-7", "quantity": 3, "price": "1.20"})
    def add_item(self, sku: str, quantity: int, price: Decimal):
        """Add one item to an order that is not paid yet."""
        if self.state["status"] != "placed":
            raise DomainError(f"Cannot add items to a {self.state['status']} order", code="order_not_open")
        line = _line({"sku": sku, "quantity": quantity, "price": price})
        _check_total([*self.state["items"], line])
        return line

    @action(evt_key="order-paid", resources=["order"])
    def pay_order(self, amount: Decimal):
        """Pay the whole order at once."""
        if self.state["status"] != "placed":
            raise DomainError(f"Cannot pay a {self.state['status']} order", code="order_not_open")
        if Decimal(str(amount)) != Decimal(str(self.state["total"])):
            raise DomainError(f"Payment of {amount} does not match the total {self.state['total']}",
                              code="payment_mismatch")
        return {"status": "paid", "paid": str(amount)}

    @action(evt_key="order-shipped", resources=["order"])
    def ship_order(self):
        if self.state["status"] != "paid":
            raise DomainError("Only a paid order can be shipped", code="order_not_paid")
        return {"status": "shipped"}

    @action(evt_key="order-delivery-scheduled", resources=["order"],
            example={"deliver_on": "2026-12-24", "slot": "morning"})
    def schedule_delivery(self, deliver_on: datetime.date,
                          slot: Literal["morning", "afternoon", "evening"] = "morning"):
        """Book the day and time slot a paid order is delivered."""
        if self.state["status"] != "paid":
            raise DomainError("Only a paid order can be scheduled for delivery")
        return {"delivery": {"on": deliver_on, "slot": slot}}

    @action(evt_key="order-cancelled", resources=["order"])
    def cancel_order(self, reason: str = ""):
        if self.state["status"] in ("shipped", "cancelled"):
            raise DomainError(f"Cannot cancel a {self.state['status']} order", code="order_closed")
        return {"status": "cancelled", "reason": reason}

    @action(evt_key="order-document-attached", resources=["order"])
    def attach_document(self, document: MediaRef, note: str = ""):
        """Attach a file uploaded to this order (POST .../order/<id>/media/) by its media id.

        The event carries the file's metadata (name, type, size, SHA-256), never its bytes.
        """
        ensure_attached(document, self)
        if any(d["id"] == document["id"] for d in self.state.get("documents", [])):
            raise DomainError(f"{document['filename']} is already attached to this order",
                              code="document_already_attached")
        return {"document": document, "note": note}

    @apply("order-placed")
    def _placed(self, state, event):
        items = event.payload["items"]
        return {**state, **event.payload, "total": _total(items)}

    @apply("order-document-attached")
    def _document_attached(self, state, event):
        document = {**event.payload["document"], "note": event.payload.get("note", "")}
        return {**state, "documents": [*state.get("documents", []), document]}

    @apply("order-item-added")
    def _item_added(self, state, event):
        items = [*state["items"], event.payload]
        return {**state, "items": items, "total": _total(items)}


# Bounds that keep an order's total within its column (12 digits, 2 decimals).
MAX_QUANTITY = 10_000
MAX_PRICE = Decimal("1000000")
MAX_TOTAL = Decimal("9999999999.99")


def _line(item: dict) -> dict:
    # Lines arrive as free-form JSON objects: every value is checked, never trusted.
    sku = item.get("sku")
    try:
        quantity = item.get("quantity", 1)
        if isinstance(quantity, bool) or int(quantity) != quantity:
            raise ValueError
        quantity = int(quantity)
        price = Decimal(str(item.get("price", "0")))
        if not price.is_finite() or price != price.quantize(Decimal("0.01")):
            raise ArithmeticError
    except (ValueError, TypeError, ArithmeticError):
        raise DomainError(f"Item {sku!r} needs a whole quantity and a price with at most 2 decimals",
                          code="invalid_line") from None
    if not 1 <= quantity <= MAX_QUANTITY:
        raise DomainError(f"Quantity of {sku!r} must be between 1 and {MAX_QUANTITY}", code="invalid_line")
    if not 0 <= price <= MAX_PRICE:
        raise DomainError(f"Price of {sku!r} must be between 0 and {MAX_PRICE}", code="invalid_line")
    return {"sku": str(sku if sku is not None else "")[:100], "quantity": quantity, "price": str(price)}


def _check_total(items: list[dict]) -> None:
    if Decimal(_total(items)) > MAX_TOTAL:
        raise DomainError(f"An order's total cannot exceed {MAX_TOTAL}", code="order_total_too_large")


def _total(items: list[dict]) -> str:
    return str(sum((Decimal(i["price"]) * i["quantity"] for i in items), Decimal("0")))


class OrderDomain(Domain):
    """Orders of a customer: placed with items, paid in full, then shipped (or cancelled)."""

    __aggregate__ = OrderAggregate
    __namespace__ = "app-order"
    __resources__ = {"order": "app_order.Order"}
    # Files attach to orders (POST /api/app-order/order/<id>/media/); who may upload:
    # a signed-in user (the default upload policy). Other resources get no media endpoints.
    __media__ = ["order"]
