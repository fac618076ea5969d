"""The orders process manager: reacts to the user context by issuing order commands.

When a customer is deactivated (``user-deactivated`` in ``app-user``), every
order of theirs that is still only placed is cancelled (``cancel-order`` in
``app-order``). Each command carries the event's correlation id and names the
event as its cause (``causation_id = "event:<position>"``).
"""

from django_fluvius import event_handler
from django_fluvius.delivery.process import issue

from .domain import OrderDomain
from .models import Order


@event_handler("user-deactivated", namespace="app-user")
def cancel_open_orders_of_deactivated_customer(event):
    open_orders = Order.objects.filter(customer_id=event.aggregate_id, status=Order.Status.PLACED)
    for order_id in open_orders.values_list("pk", flat=True):
        issue(OrderDomain, "cancel-order", {"reason": "customer deactivated"},
              aggregate_id=order_id, caused_by=event)
