"""Process managers: event handlers that issue commands, possibly to other domains.

A command issued because of an event carries the event's correlation id (the
whole flow shares one) and names the event as its cause (``causation_id`` is
``"event:<position>"``), so the events it produces can be traced back::

    from django_fluvius import event_handler
    from django_fluvius.delivery.process import issue

    @event_handler('user-deactivated', namespace='app-user')
    def cancel_open_orders(event):
        for order_id in Order.objects.filter(customer_id=event.aggregate_id, status='placed')
                                     .values_list('pk', flat=True):
            issue(OrderDomain, 'cancel-order', {'reason': 'customer deactivated'},
                  aggregate_id=order_id, caused_by=event)

Run by the dispatcher, the handler's transaction holds its receipt, so the
commands it issues commit exactly once with it (and roll back with it when it
fails and is tried again).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django_fluvius.context import DomainContext
from django_fluvius.domain import Domain

SOURCE = "process-manager"


def causation_id_of(event: Any) -> str:
    """How commands and events refer to the event that caused them."""
    return f"event:{event.position}"


def correlation_id_of(event: Any) -> str:
    metadata = getattr(event, "metadata", None) or {}
    return getattr(event, "correlation_id", "") or metadata.get("correlation_id") or uuid.uuid4().hex


def context_for(event: Any, *, namespace: str | None = None, **kwargs: Any) -> DomainContext:
    """The context of a command issued because of ``event``: same correlation, the event as cause."""
    kwargs.setdefault("source", SOURCE)
    tenant = getattr(event, "tenant", "") or None
    if tenant:
        kwargs.setdefault("tenant", tenant)
    return DomainContext.system(namespace=namespace, correlation_id=correlation_id_of(event),
                                causation_id=causation_id_of(event), **kwargs)


def issue(domain_class: type[Domain], key: str, payload: Mapping[str, Any] | None = None, *,
          caused_by: Any, aggregate_id: Any = None, expected_version: Any = None, **context: Any) -> Any:
    """Create and process one command of ``domain_class`` on behalf of the event ``caused_by``."""
    domain = domain_class(context_for(caused_by, namespace=domain_class.__namespace__, **context))
    command = domain.create_command(key, payload or {}, aggregate_id=aggregate_id,
                                    expected_version=expected_version)
    return domain.process_command(command)
