"""django-fluvius: domain-driven design, CQRS and event sourcing for Django.

The public names are loaded lazily (PEP 562) so ``import django_fluvius`` works
before Django's app registry is ready (``INSTALLED_APPS`` imports it first).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_PUBLIC = {
    "Aggregate": "aggregate",
    "action": "aggregate",
    "apply": "aggregate",
    "Domain": "domain",
    "DomainContext": "domain",
    "Command": "bus",
    "CommandResult": "bus",
    "QueryBuilder": "query",
    "event_handler": "handlers",
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
    "QueryBuilder",
    "UnknownCommand",
    "action",
    "apply",
    "event_handler",
]
assert set(__all__) == set(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'django_fluvius' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if TYPE_CHECKING:
    from .aggregate import Aggregate, action, apply
    from .bus import Command, CommandResult
    from .domain import Domain, DomainContext
    from .exceptions import (
        AggregateNotFound,
        CommandValidationError,
        ConcurrencyConflict,
        DomainError,
        FluviusError,
        PermissionDenied,
        UnknownCommand,
    )
    from .handlers import event_handler
    from .query import QueryBuilder
