"""The shapes of an aggregate and a domain, as the lower layers may name them.

The event store, the read side and the registry sit below ``write/aggregate.py``
and ``domain.py`` (see ``tests/test_layers.py``), yet they fold aggregates,
snapshot them and list domains. They name those types through these protocols —
the way the ``eventsourcing`` library's persistence module names only
``DomainEventProtocol`` — so no lower module imports a higher one, not even for
type checking. ``Aggregate`` and ``Domain`` satisfy them structurally; nothing
subclasses them.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from django.db.models import Model


class AggregateProtocol(Protocol):
    """An aggregate as the event store, snapshots and projection rows see it."""

    snapshot_every: int | None
    snapshot_schema: int
    _appliers: dict[str, str]

    id: uuid.UUID
    resource: str
    version: int
    state: dict[str, Any]
    created: datetime.datetime | None
    updated: datetime.datetime | None
    tenant: str | None
    context: Any

    def __init__(self, aggregate_id: uuid.UUID, resource: str, *, version: int = 0,
                 state: Mapping[str, Any] | None = None, context: Any = None) -> None: ...

    @classmethod
    def actions(cls) -> Mapping[str, Any]: ...

    def fold(self, event: Any) -> None: ...

    def projection(self, resource: str) -> dict[str, Any] | None: ...


# "The aggregate passed in", for functions that fold or restore and hand it back.
AggregateT = TypeVar("AggregateT", bound=AggregateProtocol)


class DomainProtocol(Protocol):
    """A domain (bounded context) as the registry, snapshots and checks see it."""

    __aggregate__: ClassVar[Any]  # type[AggregateProtocol]; Any, as class variables are invariant
    __namespace__: ClassVar[str]
    __resources__: ClassVar[Mapping[str, Any]]
    __tenancy__: ClassVar[bool | None]

    context: Any
    store: Any

    def __init__(self, context: Any = None) -> None: ...

    @classmethod
    def commands(cls) -> Mapping[str, Any]: ...

    @classmethod
    def resource_model(cls, resource: str) -> type[Model]: ...

    @classmethod
    def projection_model(cls, resource: str) -> type[Model] | None: ...

    @classmethod
    def default_resource(cls) -> str: ...
