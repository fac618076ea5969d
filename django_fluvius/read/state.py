"""The state manager: the read side of one domain (``domain.statemgr``).

``fetch`` returns one projection row by aggregate id, ``find`` a QuerySet.
Both read from ``FLUVIUS['READ_DATABASE']`` when it is set.

Invariant: every read path goes through ``scope()``: the tenant first (asked of
the domain as ``tenant_scope``, which is not a hook, so no override can drop it),
then the domain's ``scope_queryset`` hook, then the resource's query-surface
``scope``. The read side sits below security and the domain, so it names the
domain only through the ``ReadDomain`` protocol below.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Protocol

from asgiref.sync import sync_to_async
from django.core.exceptions import ObjectDoesNotExist

from django_fluvius.exceptions import AggregateNotFound
from django_fluvius.read import consistency
from django_fluvius.read.replicas import read_alias
from django_fluvius.read.surface import surface_for

if TYPE_CHECKING:
    from django.db.models import Model, QuerySet


def parse_aggregate_id(value: Any) -> uuid.UUID:
    """A UUID from a UUID or its text; ``AggregateNotFound`` naming the bad value otherwise."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise AggregateNotFound(f"{value!r} is not a valid aggregate id (a UUID).",
                                code="invalid_aggregate_id") from None


class ReadDomain(Protocol):
    """What the read side needs of the domain it reads for (``django_fluvius.domain.Domain``)."""

    context: Any

    def resource_model(self, resource: str) -> type[Model]: ...

    def tenant_scope(self, resource: str, queryset: QuerySet) -> QuerySet: ...

    def scope_queryset(self, resource: str, queryset: QuerySet) -> QuerySet: ...


class StateManager:
    def __init__(self, domain: ReadDomain):
        self.domain = domain

    def model(self, resource: str) -> type[Model]:
        return self.domain.resource_model(resource)

    def queryset(self, resource: str) -> QuerySet:
        """The base QuerySet of a resource, on the read alias, scoped to the context.

        Scoping is the context's tenant (tenant-scoped domains, ``security/tenancy.py``:
        not a hook, so no override can drop it), the domain's ``scope_queryset``
        (every resource) and then the resource's query surface ``scope`` hook
        (``surface.py``).
        """
        model = self.model(resource)
        qs = model._default_manager.all()
        alias = read_alias()
        if alias:
            qs = qs.using(alias)
        return self.scope(resource, qs)

    def scope(self, resource: str, queryset: QuerySet) -> QuerySet:
        """Narrow any QuerySet of a resource's model as every read is narrowed (the admin uses it)."""
        qs = self.domain.tenant_scope(resource, queryset)
        qs = self.domain.scope_queryset(resource, qs)
        return surface_for(self.domain, resource).scope(qs, self.domain.context)

    def wait(self, resource: str, position: int | None, *, timeout: float | None = None) -> None:
        """Return once the read models of ``resource`` have processed event ``position``.

        Inline projections are always current (no wait, no query); async projections
        feeding the resource's model, and a read replica, are waited for up to
        ``timeout`` (default ``FLUVIUS['MIN_POSITION_TIMEOUT']``), then
        ``PositionNotReached`` (read/consistency.py).
        """
        if position is not None:
            position = consistency.parse_position(position)
        consistency.wait_for(self.model(resource), position, timeout=timeout)

    async def await_position(self, resource: str, position: int | None, *, timeout: float | None = None) -> None:
        """``wait`` for async code: sleeps on the event loop between looks."""
        if position is not None:
            position = consistency.parse_position(position)
        await consistency.await_for(self.model(resource), position, timeout=timeout)

    def fetch(self, resource: str, aggregate_id: Any, *, min_position: int | None = None) -> Model:
        """One row by aggregate id (``min_position``: not before the read models processed it)."""
        pk = parse_aggregate_id(aggregate_id)
        self.wait(resource, min_position)
        try:
            return self.queryset(resource).get(pk=pk)
        except ObjectDoesNotExist:  # the model's DoesNotExist
            raise AggregateNotFound(f"No {resource} with id {pk}.") from None

    def find(self, resource: str, *args: Any, min_position: int | None = None, **filters: Any) -> QuerySet:
        """The rows matching ``filters`` (``min_position``: waited for before the QuerySet is built)."""
        self.wait(resource, min_position)
        return self.queryset(resource).filter(*args, **filters)

    async def afetch(self, resource: str, aggregate_id: Any, *, min_position: int | None = None) -> Model:
        await self.await_position(resource, min_position)
        return await sync_to_async(self.fetch)(resource, aggregate_id)

    async def afind(self, resource: str, *args: Any, min_position: int | None = None,
                    **filters: Any) -> list[Model]:
        """The rows as a list: a lazy QuerySet cannot cross into async code unevaluated."""
        await self.await_position(resource, min_position)
        return await sync_to_async(lambda: list(self.find(resource, *args, **filters)))()
