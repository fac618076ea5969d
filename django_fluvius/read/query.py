"""The query builder: an immutable, chainable wrapper over a resource's QuerySet.

``QueryBuilder('user').filter(active=True).sort('created_at', desc=True).limit(10)``
builds nothing until ``execute()`` (or ``aexecute()``, ``.queryset``, iteration).
Each call returns a new builder, so a base query can be shared and refined.

Two kinds of input:

- trusted Python code: ``filter``/``exclude`` take any Django lookup or ``Q``;
- untrusted parameters (a request's query string): ``QueryBuilder.from_params`` /
  ``.apply_params`` check every key and value against the resource's query
  surface (``surface.py``) and raise ``InvalidQuery`` (400) before anything runs.

Every builder starts from ``domain.statemgr.queryset(resource)``: the read
database and the row scoping of the domain and the resource always apply.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q, QuerySet

from django_fluvius.exceptions import InvalidQuery
from django_fluvius.read import consistency, keyset
from django_fluvius.read.search import apply_search
from django_fluvius.read.surface import BadValue, QuerySurface, resolve_field, surface_for
from django_fluvius.registry import domains


@dataclass
class Page:
    """One page of a keyset (or offset) read: the rows and the cursors around them."""

    items: list[Any]
    limit: int
    next_cursor: str | None = None
    previous_cursor: str | None = None
    count: int | None = None
    offset: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_previous(self) -> bool:
        return self.previous_cursor is not None

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class QueryBuilder:
    """A query over one resource's projection model; see the module docstring."""

    def __init__(self, resource: str, *, context: Any = None, domain: Any = None,
                 queryset: QuerySet | None = None):
        if domain is None:
            domain_class, resource = domains.find_resource(resource)
            domain = domain_class(context) if context is not None else domain_class()
        else:
            if isinstance(domain, type):
                domain = domain(context) if context is not None else domain()
            namespace = getattr(domain, "__namespace__", None)
            if namespace and resource.startswith(f"{namespace}."):
                resource = resource[len(namespace) + 1:]
            domain.resource_model(resource)  # UnknownResource if the domain has no such resource
        self.domain = domain
        self.resource = resource
        self.surface: QuerySurface = surface_for(domain, resource)
        # ``queryset`` lets a caller that already holds the scoped base (a DRF view's
        # get_queryset, built from statemgr) pass it in; otherwise statemgr builds it.
        self._base = queryset
        self._where: tuple[tuple[bool, tuple[Any, ...], dict[str, Any]], ...] = ()
        self._order: tuple[tuple[str, bool], ...] = ()
        self._search: str | None = None
        self._limit: int | None = None
        self._offset: int = 0
        self._cursor: str | None = None
        self._only: tuple[str, ...] = ()
        self._want_count = False
        self._min_position: int | None = None

    @classmethod
    def from_params(cls, resource: str, params: Any, *, context: Any = None, domain: Any = None,
                    queryset: QuerySet | None = None, ignore: Any = ()) -> QueryBuilder:
        """A builder from untrusted parameters (``field``, ``field__op``, ``ordering``, ...)."""
        return cls(resource, context=context, domain=domain, queryset=queryset).apply_params(params, ignore=ignore)

    def __repr__(self) -> str:
        parts = [f"{self.domain.__namespace__}.{self.resource}"]
        if self._where:
            parts.append(f"{len(self._where)} filter(s)")
        if self._order:
            parts.append("sort " + ",".join(f"-{n}" if d else n for n, d in self._order))
        if self._search:
            parts.append(f"search {self._search!r}")
        if self._limit is not None or self._offset:
            parts.append(f"[{self._offset}:{'' if self._limit is None else self._offset + self._limit}]")
        return f"<QueryBuilder {' '.join(parts)}>"

    def _clone(self, **changes: Any) -> QueryBuilder:
        # Every chained call clones: a plain dict copy is several times cheaper than
        # copy.copy, and the state is immutable tuples, so sharing it is safe.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__, **changes)
        return clone

    # -- building ------------------------------------------------------------

    def filter(self, *args: Q, **kwargs: Any) -> QueryBuilder:
        """Narrow with Django lookups and ``Q`` objects (trusted code: not checked)."""
        return self._clone(_where=(*self._where, (False, args, kwargs)))

    def exclude(self, *args: Q, **kwargs: Any) -> QueryBuilder:
        return self._clone(_where=(*self._where, (True, args, kwargs)))

    def sort(self, field: str, desc: bool = False) -> QueryBuilder:
        """Add a sort key (``sort('name')``, ``sort('created_at', desc=True)`` or ``sort('-name')``)."""
        if field.startswith("-"):
            field, desc = field[1:], not desc
        return self._clone(_order=(*self._order, (field, bool(desc))))

    def order_by(self, *fields: str) -> QueryBuilder:
        """Replace the sort keys, Django style: ``order_by('-created_at', 'name')``."""
        order = tuple((f[1:], True) if f.startswith("-") else (f, False) for f in fields)
        return self._clone(_order=order)

    def limit(self, n: int | None) -> QueryBuilder:
        return self._clone(_limit=None if n is None else _non_negative(n, "limit"))

    def offset(self, n: int) -> QueryBuilder:
        return self._clone(_offset=_non_negative(n, "offset"))

    def only(self, *fields: str) -> QueryBuilder:
        """Load only these fields (the primary key and the sort keys are always loaded)."""
        return self._clone(_only=tuple(fields))

    fields = only

    def search(self, text: str | None) -> QueryBuilder:
        """Rows matching every word of ``text`` in the resource's searched fields."""
        if text is None or not str(text).strip():
            return self._clone(_search=None)
        try:
            checked = self.surface.check_search(text)
        except BadValue as exc:
            raise InvalidQuery({"search": [str(exc)]}) from None
        return self._clone(_search=checked or None)

    def after(self, cursor: str | None) -> QueryBuilder:
        """Continue from a cursor of an earlier ``page()`` (same ordering)."""
        return self._clone(_cursor=cursor or None)

    cursor = after

    def min_position(self, position: int | None) -> QueryBuilder:
        """Read only once the resource's read models have processed event ``position``
        (read/consistency.py); ``PositionNotReached`` past ``MIN_POSITION_TIMEOUT``."""
        return self._clone(_min_position=None if position is None else consistency.parse_position(position))

    def apply_params(self, params: Any, *, ignore: Any = ()) -> QueryBuilder:
        """Add untrusted parameters, each checked against the query surface.

        Filters are added to the builder's own; ``ordering``, ``search``,
        ``limit``, ``offset``, ``cursor``, ``fields`` and ``count`` replace its values.
        """
        parsed = self.surface.parse_params(params, ignore=ignore)
        changes: dict[str, Any] = {}
        if parsed.filters:
            changes["_where"] = (*self._where, (False, tuple(parsed.filters), {}))
        if parsed.ordering is not None:
            changes["_order"] = tuple(parsed.ordering)
        if parsed.search is not None:
            changes["_search"] = parsed.search
        if parsed.limit is not None:
            changes["_limit"] = parsed.limit
        if parsed.offset is not None:
            changes["_offset"] = parsed.offset
        if parsed.cursor is not None:
            changes["_cursor"] = parsed.cursor or None
        if parsed.fields is not None:
            changes["_only"] = tuple(parsed.fields)
        if parsed.count:
            changes["_want_count"] = True
        return self._clone(**changes)

    # -- reading the builder's state (for the REST paginator) ------------------

    @property
    def page_limit(self) -> int:
        return self._limit if self._limit is not None else self.surface.default_limit

    @property
    def page_offset(self) -> int:
        return self._offset

    @property
    def page_cursor(self) -> str | None:
        return self._cursor

    @property
    def wants_count(self) -> bool:
        return self._want_count

    # -- turning it into SQL ----------------------------------------------------

    def base_queryset(self) -> QuerySet:
        """The resource's scoped QuerySet on the read database, before this builder's filters
        (once the read models have reached ``min_position``, when one is set)."""
        if self._min_position:
            consistency.wait_for(self.surface.model, self._min_position)
        if self._base is not None:
            return self._base.all()
        return self.domain.statemgr.queryset(self.resource)

    def filtered(self) -> QuerySet:
        """The base narrowed by filters and search: no ordering, no paging."""
        qs = self.base_queryset()
        for negate, args, kwargs in self._where:
            qs = qs.exclude(*args, **kwargs) if negate else qs.filter(*args, **kwargs)
        if self._search:
            qs = apply_search(qs, self.surface.searchable, self._search, self.surface.search_config)
        return qs

    def ordering(self) -> list[keyset.OrderTerm]:
        """The sort keys as resolved terms, the primary key appended as the tie-breaker."""
        return list(_ordering_terms(self.surface.model, self._order or tuple(self.surface.default_order)))


    def _shaped(self, qs: QuerySet, terms: list[keyset.OrderTerm]) -> QuerySet:
        qs = qs.order_by(*(t.expression for t in terms))
        if self._only:
            keep = [*self._only, *(t.name for t in terms if "__" not in t.name)]
            qs = qs.only(*dict.fromkeys(keep))
        return qs

    def ordered(self) -> QuerySet:
        """Filtered, searched and sorted, but not paged (what a paginator cuts pages from)."""
        return self._shaped(self.filtered(), self.ordering())

    @property
    def queryset(self) -> QuerySet:
        """The QuerySet this builder stands for (sorted, cut by cursor or offset/limit)."""
        terms = self.ordering()
        qs = self.filtered()
        if self._cursor is not None:
            if self._offset:
                raise InvalidQuery({"cursor": ["cannot be combined with offset."]})
            values, direction = keyset.decode(self._cursor, terms)
            if direction == keyset.PREVIOUS:
                raise InvalidQuery({"cursor": ["points backwards; read it with page()."]})
            qs = qs.filter(keyset.after(terms, values))
        qs = self._shaped(qs, terms)
        if self._limit is not None:
            return qs[self._offset:self._offset + self._limit]
        if self._offset:
            return qs[self._offset:]
        return qs

    # -- running it ---------------------------------------------------------------

    async def _await_position(self) -> None:
        # Wait on the event loop, not in the worker thread the query then runs in.
        if self._min_position:
            await consistency.await_for(self.surface.model, self._min_position)

    def execute(self) -> list[Any]:
        return list(self.queryset)

    async def aexecute(self) -> list[Any]:
        await self._await_position()
        return await sync_to_async(self.execute)()

    def count(self) -> int:
        """How many rows match the filters and search (paging is ignored: the total)."""
        return self.filtered().count()

    async def acount(self) -> int:
        await self._await_position()
        return await sync_to_async(self.count)()

    def exists(self) -> bool:
        """Whether any row matches the filters and search (paging is ignored)."""
        return self.filtered().exists()

    async def aexists(self) -> bool:
        await self._await_position()
        return await sync_to_async(self.exists)()

    def first(self) -> Any | None:
        """The first row in this builder's order (after its offset or cursor), or None."""
        rows = list(self.limit(1).queryset)
        return rows[0] if rows else None

    async def afirst(self) -> Any | None:
        await self._await_position()
        return await sync_to_async(self.first)()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.execute())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Any]:
        for row in await self.aexecute():
            yield row

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            if key.step not in (None, 1):
                raise TypeError("QueryBuilder slices take no step.")
            start = key.start or 0
            built = self.offset(self._offset + start)
            if key.stop is not None:
                built = built.limit(max(0, key.stop - start))
            return built
        if isinstance(key, int) and key >= 0:
            row = self.offset(self._offset + key).first()
            if row is None:
                raise IndexError("QueryBuilder index out of range")
            return row
        raise TypeError("QueryBuilder indices are non-negative integers or slices.")

    # -- pages ----------------------------------------------------------------------

    def cursor_for(self, row: Any, *, backwards: bool = False) -> str:
        """The cursor of the position right after ``row`` (before it with ``backwards``)."""
        return keyset.encode_row(self.ordering(), row, keyset.PREVIOUS if backwards else keyset.NEXT)

    def page(self, cursor: str | None = None, *, limit: int | None = None,
             count: bool | None = None) -> Page:
        """One page: by cursor (keyset) when there is one, else from the offset.

        ``page.next_cursor`` / ``page.previous_cursor`` continue either way; with
        ``count=True`` (or ``count=true`` in the params) ``page.count`` is the total.
        """
        terms = self.ordering()
        size = _non_negative(limit, "limit") if limit is not None else self.page_limit
        token = cursor if cursor is not None else self._cursor
        want_count = self._want_count if count is None else count
        qs = self.filtered()
        total = qs.count() if want_count else None
        if not token:
            rows = list(self._shaped(qs, terms)[self._offset:self._offset + size + 1])
            more = len(rows) > size
            rows = rows[:size]
            return Page(
                items=rows,
                limit=size,
                offset=self._offset,
                count=total,
                next_cursor=keyset.encode_row(terms, rows[-1]) if more and rows else None,
                previous_cursor=(keyset.encode_row(terms, rows[0], keyset.PREVIOUS)
                                 if self._offset and rows else None),
            )
        if self._offset:
            raise InvalidQuery({"cursor": ["cannot be combined with offset."]})
        values, direction = keyset.decode(token, terms)
        backwards = direction == keyset.PREVIOUS
        walk = [t.reversed() for t in terms] if backwards else terms
        rows = list(self._shaped(qs.filter(keyset.after(walk, values)), walk)[:size + 1])
        more = len(rows) > size
        rows = rows[:size]
        if backwards:
            rows.reverse()
            has_next, has_previous = True, more
        else:
            has_next, has_previous = more, True
        next_cursor = previous_cursor = None
        if rows:
            if has_next:
                next_cursor = keyset.encode_row(terms, rows[-1])
            if has_previous:
                previous_cursor = keyset.encode_row(terms, rows[0], keyset.PREVIOUS)
        else:
            # Past either end: offer the way back to where the cursor pointed.
            if backwards:
                next_cursor = keyset.encode(terms, values, keyset.NEXT)
            else:
                previous_cursor = keyset.encode(terms, values, keyset.PREVIOUS)
        return Page(items=rows, limit=size, count=total,
                    next_cursor=next_cursor, previous_cursor=previous_cursor)

    async def apage(self, cursor: str | None = None, **kwargs: Any) -> Page:
        return await sync_to_async(self.page)(cursor, **kwargs)


def _non_negative(n: Any, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        try:
            n = int(str(n), 10)
        except (TypeError, ValueError):
            raise InvalidQuery({name: [f"{n!r} is not an integer."]}) from None
    if n < 0:
        raise InvalidQuery({name: [f"must be 0 or more, not {n}."]})
    return n


@lru_cache(maxsize=512)
def _ordering_terms(model: Any, wanted: tuple[tuple[str, bool], ...]) -> tuple[keyset.OrderTerm, ...]:
    """Resolve sort keys once per (model, keys): builders are rebuilt on every request."""
    pk = model._meta.pk
    terms: list[keyset.OrderTerm] = []
    seen: set[str] = set()
    for name, desc in wanted:
        if name == "pk":
            name = pk.name
        if name in seen:
            continue
        try:
            model_field = resolve_field(model, name)
        except FieldDoesNotExist as exc:
            raise InvalidQuery({"ordering": [f"Cannot sort by {name!r}: {exc}"]}) from None
        seen.add(name)
        terms.append(keyset.OrderTerm(name, desc, model_field))
    if pk.name not in seen:
        last_desc = terms[-1].desc if terms else False
        terms.append(keyset.OrderTerm(pk.name, last_desc, pk))
    return tuple(terms)
