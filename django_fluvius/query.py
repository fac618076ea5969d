"""The query builder: an immutable, chainable wrapper over a resource's QuerySet.

``QueryBuilder('user').filter(active=True).sort('created_at', desc=True).limit(10)``
builds nothing until ``execute()`` (or ``aexecute()``, ``.queryset``, iteration).
Each call returns a new builder, so a base query can be shared and refined.
"""

from __future__ import annotations

import copy
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Q, QuerySet

from .registry import domains


class QueryBuilder:
    def __init__(self, resource: str, *, context: Any = None, domain: Any = None):
        if domain is None:
            domain_class, resource = domains.find_resource(resource)
            domain = domain_class(context) if context is not None else domain_class()
        self.domain = domain
        self.resource = resource
        self._filters: list[tuple[bool, tuple[Q, ...], dict[str, Any]]] = []
        self._order: list[str] = []
        self._limit: int | None = None
        self._offset: int = 0

    def _clone(self) -> QueryBuilder:
        clone = copy.copy(self)
        clone._filters = list(self._filters)
        clone._order = list(self._order)
        return clone

    def filter(self, *args: Q, **kwargs: Any) -> QueryBuilder:
        clone = self._clone()
        clone._filters.append((False, args, kwargs))
        return clone

    def exclude(self, *args: Q, **kwargs: Any) -> QueryBuilder:
        clone = self._clone()
        clone._filters.append((True, args, kwargs))
        return clone

    def sort(self, field: str, desc: bool = False) -> QueryBuilder:
        clone = self._clone()
        clone._order.append(f"-{field}" if desc else field)
        return clone

    def limit(self, n: int) -> QueryBuilder:
        clone = self._clone()
        clone._limit = int(n)
        return clone

    def offset(self, n: int) -> QueryBuilder:
        clone = self._clone()
        clone._offset = int(n)
        return clone

    @property
    def queryset(self) -> QuerySet:
        qs = self.domain.statemgr.queryset(self.resource)
        for negate, args, kwargs in self._filters:
            qs = qs.exclude(*args, **kwargs) if negate else qs.filter(*args, **kwargs)
        if self._order:
            qs = qs.order_by(*self._order)
        if self._limit is not None:
            return qs[self._offset:self._offset + self._limit]
        if self._offset:
            return qs[self._offset:]
        return qs

    def execute(self) -> list[Any]:
        return list(self.queryset)

    async def aexecute(self) -> list[Any]:
        return await sync_to_async(self.execute)()

    def count(self) -> int:
        return self.queryset.count()

    def __iter__(self):
        return iter(self.execute())
