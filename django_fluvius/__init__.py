"""django-fluvius: domain-driven design, CQRS and event sourcing for Django.

The public names are loaded lazily (PEP 562) so ``import django_fluvius`` works
before Django's app registry is ready (``INSTALLED_APPS`` imports it first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django_fluvius.lazy import lazy_names

__version__ = "0.1.0"

_PUBLIC = {
    "Aggregate": "write.aggregate",
    "action": "write.aggregate",
    "apply": "write.aggregate",
    "Domain": "domain",
    "DomainContext": "context",
    "Command": "write.bus",
    "CommandResult": "write.bus",
    "QueryBuilder": "read.query",
    "Projection": "models",
    "event_handler": "delivery.handlers",
    "FluviusError": "exceptions",
    "DomainError": "exceptions",
    "CommandValidationError": "exceptions",
    "AggregateNotFound": "exceptions",
    "ConcurrencyConflict": "exceptions",
    "UnknownCommand": "exceptions",
    "PermissionDenied": "exceptions",
}

__all__ = [
    "Aggregate",
    "AggregateNotFound",
    "Command",
    "CommandResult",
    "CommandValidationError",
    "ConcurrencyConflict",
    "Domain",
    "DomainContext",
    "DomainError",
    "FluviusError",
    "PermissionDenied",
    "Projection",
    "QueryBuilder",
    "UnknownCommand",
    "action",
    "apply",
    "event_handler",
]
assert set(__all__) == set(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)


if TYPE_CHECKING:
    from django_fluvius.context import DomainContext
    from django_fluvius.delivery.handlers import event_handler
    from django_fluvius.domain import Domain
    from django_fluvius.exceptions import (
        AggregateNotFound,
        CommandValidationError,
        ConcurrencyConflict,
        DomainError,
        FluviusError,
        PermissionDenied,
        UnknownCommand,
    )
    from django_fluvius.models import Projection
    from django_fluvius.read.query import QueryBuilder
    from django_fluvius.write.aggregate import Aggregate, action, apply
    from django_fluvius.write.bus import Command, CommandResult
