"""The query surface of a resource: what may be filtered, sorted and searched.

Every resource has one. By default it is derived from the projection model: each
concrete field gets the operators of its kind (text, number, date, boolean ...)
from ``DEFAULT_OPERATORS``, every field that can be sorted may be sorted, and the
text fields are searched. A domain overrides it per resource::

    class UserQuery(QuerySurface):
        filters = {"name": ["exact", "icontains"], "email": "__default__", "active": ["exact"]}
        ordering = ["name", "created_at"]
        search = ["name", "email"]

        def scope(self, queryset, context):          # row scoping, on every read path
            return queryset.filter(active=True)

    class UserDomain(Domain):
        __query__ = {"user": UserQuery}

Untrusted input (REST query parameters, ``QueryBuilder.from_params``) is checked
against the surface by ``parse_params``: an unknown field, a forbidden operator, a
value of the wrong type, an absurd limit or a sort on a hidden field raises
``InvalidQuery`` (HTTP 400) naming the parameter and what is allowed, before any
query runs. Trusted Python code (``QueryBuilder.filter``) is not restricted.
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.db import connection
from django.db.models import F, Model, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import InvalidQuery
from django_fluvius.read.search import search_backend_name
from django_fluvius.registry import domains, resolve_model
from django_fluvius.text import text_problem

ALL = "__all__"
DEFAULT = "__default__"

# Django's internal field type -> the kind of value it holds. A field whose type
# is missing here (binary, files, arrays ...) is not part of the query surface.
FIELD_KINDS: dict[str, str] = {
    "CharField": "text",
    "TextField": "text",
    "SlugField": "text",
    "EmailField": "text",
    "URLField": "text",
    "GenericIPAddressField": "text",
    "IPAddressField": "text",
    "IntegerField": "integer",
    "BigIntegerField": "integer",
    "SmallIntegerField": "integer",
    "PositiveIntegerField": "integer",
    "PositiveBigIntegerField": "integer",
    "PositiveSmallIntegerField": "integer",
    "AutoField": "integer",
    "BigAutoField": "integer",
    "SmallAutoField": "integer",
    "FloatField": "float",
    "DecimalField": "decimal",
    "DateField": "date",
    "DateTimeField": "datetime",
    "TimeField": "time",
    "DurationField": "duration",
    "BooleanField": "boolean",
    "NullBooleanField": "boolean",
    "UUIDField": "uuid",
    "ForeignKey": "relation",
    "OneToOneField": "relation",
    "JSONField": "json",
}

_ORDERED = ("exact", "gt", "gte", "lt", "lte", "range", "in")

# What each kind offers when nothing is declared.
DEFAULT_OPERATORS: dict[str, tuple[str, ...]] = {
    "text": ("exact", "iexact", "icontains", "startswith", "in"),
    "integer": _ORDERED,
    "float": _ORDERED,
    "decimal": _ORDERED,
    "date": _ORDERED,
    "datetime": _ORDERED,
    "time": _ORDERED,
    "duration": _ORDERED,
    "boolean": ("exact",),
    "uuid": ("exact", "in"),
    "relation": ("exact", "in"),
    "json": (),
}

# What a surface may declare for each kind (a superset of the defaults).
ALLOWED_OPERATORS: dict[str, frozenset[str]] = {
    "text": frozenset({"exact", "iexact", "contains", "icontains", "startswith", "istartswith",
                       "endswith", "iendswith", "in", "gt", "gte", "lt", "lte", "range", "isnull"}),
    **{kind: frozenset({*_ORDERED, "isnull"})
       for kind in ("integer", "float", "decimal", "date", "datetime", "time", "duration")},
    "boolean": frozenset({"exact", "isnull"}),
    "uuid": frozenset({"exact", "in", "isnull"}),
    "relation": frozenset({"exact", "in", "isnull"}),
    "json": frozenset({"isnull"}),
}

OPERATORS: frozenset[str] = frozenset().union(*ALLOWED_OPERATORS.values())

SORTABLE_KINDS = frozenset(FIELD_KINDS.values()) - {"json"}
SEARCHABLE_KINDS = frozenset({"text"})

# Guards against absurd input; a surface may change them per resource.
MAX_VALUE_LENGTH = 1000
MAX_LIST_VALUES = 100
MAX_SEARCH_LENGTH = 200
MAX_SEARCH_TERMS = 16


# -- values ------------------------------------------------------------------


class BadValue(ValueError):
    """A query value cannot be read as the field's type (message says why)."""


def _text(spec: FieldSpec, raw: Any) -> str:
    if not isinstance(raw, str):
        raw = str(raw)
    if len(raw) > MAX_VALUE_LENGTH:
        raise BadValue(f"is longer than {MAX_VALUE_LENGTH} characters.")
    return raw


def _no_nul(raw: Any) -> Any:
    # PostgreSQL refuses NUL in text (a DataError, i.e. a 500), and a lone surrogate
    # cannot be encoded for the database or a signature: refuse them first.
    if isinstance(raw, str):
        problem = text_problem(raw)
        if problem is not None:
            raise BadValue(problem)
    return raw


def _integer(spec: FieldSpec, raw: Any) -> int:
    if isinstance(raw, bool):
        raise BadValue(f"{raw!r} is not a valid integer.")
    try:
        value = int(raw) if isinstance(raw, int) else int(str(raw).strip(), 10)
    except (TypeError, ValueError):
        raise BadValue(f"{_show(raw)} is not a valid integer.") from None
    low, high = connection.ops.integer_field_range(spec.field.get_internal_type())
    # Out of the column's range the database would fail (an overflow, i.e. a 500).
    if (low is not None and value < low) or (high is not None and value > high):
        raise BadValue(f"{value} is out of range ({low} to {high}).")
    return value


def _float(spec: FieldSpec, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BadValue(f"{_show(raw)} is not a valid number.") from None
    if not math.isfinite(value):
        raise BadValue(f"{_show(raw)} is not a finite number.")
    return value


def _decimal(spec: FieldSpec, raw: Any) -> decimal.Decimal:
    try:
        value = decimal.Decimal(str(raw).strip())
    except (decimal.InvalidOperation, ValueError):
        raise BadValue(f"{_show(raw)} is not a valid decimal number.") from None
    if not value.is_finite():
        raise BadValue(f"{_show(raw)} is not a finite number.")
    # Beyond the column's precision the database fails (numeric overflow, i.e. a 500).
    max_digits, places = getattr(spec.field, "max_digits", None), getattr(spec.field, "decimal_places", None)
    if max_digits is not None and places is not None and value and value.adjusted() >= max_digits - places:
        raise BadValue(f"{_show(raw)} is out of range (at most {max_digits - places} digits before the point).")
    return value


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}


def _boolean(spec: FieldSpec | None, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    try:
        return _BOOLEANS[str(raw).strip().lower()]
    except KeyError:
        raise BadValue(f"{_show(raw)} is not a boolean (use true or false).") from None


def _to_python(what: str) -> Callable[[FieldSpec, Any], Any]:
    def parse(spec: FieldSpec, raw: Any) -> Any:
        if raw is None or raw == "":
            raise BadValue(f"an empty value is not a valid {what}.")
        try:
            value = spec.field.to_python(raw.strip() if isinstance(raw, str) else raw)
        except (ValidationError, TypeError, ValueError, OverflowError):
            raise BadValue(f"{_show(raw)} is not a valid {what}.") from None
        if value is None:
            raise BadValue(f"{_show(raw)} is not a valid {what}.")
        return value

    return parse


_date = _to_python("date (YYYY-MM-DD)")
_time = _to_python("time (HH:MM[:SS])")


def _datetime(spec: FieldSpec, raw: Any) -> datetime.datetime:
    parse = _to_python("date-time (ISO 8601)")
    try:
        value = parse(spec, raw)
    except BadValue:
        # A "+01:00" offset sent unencoded in a URL arrives as " 01:00".
        if isinstance(raw, str) and " " in raw.strip():
            head, _, tail = raw.strip().rpartition(" ")
            value = parse(spec, f"{head}+{tail}")
        else:
            raise
    if settings.USE_TZ and timezone.is_naive(value):
        value = timezone.make_aware(value, datetime.UTC)
    try:
        value.astimezone(datetime.UTC)  # what the database adapter does; year 0 or 10000 overflows
    except (OverflowError, ValueError):
        raise BadValue(f"{_show(raw)} is out of range.") from None
    return value


def _duration(spec: FieldSpec, raw: Any) -> datetime.timedelta:
    value = _to_python("duration (e.g. 1 02:00:00 or P1DT2H)")(spec, raw)
    if abs(value) > _MAX_DURATION:
        raise BadValue(f"{_show(raw)} is out of range.")
    return value


# Stored as 64-bit microseconds on some backends.
_MAX_DURATION = datetime.timedelta(days=100_000_000)


def _uuid(spec: FieldSpec, raw: Any) -> uuid.UUID:
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(str(raw).strip())
    except (TypeError, ValueError, AttributeError):
        raise BadValue(f"{_show(raw)} is not a valid UUID.") from None


def _relation(spec: FieldSpec, raw: Any) -> Any:
    target = spec.field.target_field
    kind = FIELD_KINDS.get(target.get_internal_type(), "text")
    return PARSERS[kind](FieldSpec(spec.name, target, kind, ()), raw)


def _json(spec: FieldSpec, raw: Any) -> Any:
    raise BadValue("JSON fields can only be checked with isnull.")


# kind -> parser(spec, raw) -> Python value (raises BadValue).
PARSERS: dict[str, Callable[[FieldSpec, Any], Any]] = {
    "text": _text,
    "integer": _integer,
    "float": _float,
    "decimal": _decimal,
    "date": _date,
    "datetime": _datetime,
    "time": _time,
    "duration": _duration,
    "boolean": _boolean,
    "uuid": _uuid,
    "relation": _relation,
    "json": _json,
}


def _split_list(raw: Any) -> list[Any]:
    if isinstance(raw, list | tuple | set | frozenset):
        items = list(raw)
    else:
        items = [item for item in str(raw).split(",")]
    return [item.strip() if isinstance(item, str) else item for item in items]


def _one(spec: FieldSpec, raw: Any) -> Any:
    return PARSERS[spec.kind](spec, raw)


def _many(spec: FieldSpec, raw: Any) -> list[Any]:
    items = [item for item in _split_list(raw) if item != ""]
    if not items:
        raise BadValue("needs at least one value (comma-separated).")
    if len(items) > MAX_LIST_VALUES:
        raise BadValue(f"takes at most {MAX_LIST_VALUES} values, not {len(items)}.")
    return [PARSERS[spec.kind](spec, item) for item in items]


def _pair(spec: FieldSpec, raw: Any) -> tuple[Any, Any]:
    items = _split_list(raw)
    if len(items) != 2 or "" in items:
        raise BadValue("needs two comma-separated values: low,high.")
    return PARSERS[spec.kind](spec, items[0]), PARSERS[spec.kind](spec, items[1])


def _isnull(spec: FieldSpec, raw: Any) -> bool:
    return _boolean(spec, raw)


# operator -> how its value is read (one value, a list, a pair, a boolean).
VALUE_SHAPES: dict[str, Callable[[FieldSpec, Any], Any]] = {
    **{op: _one for op in OPERATORS},
    "in": _many,
    "range": _pair,
    "isnull": _isnull,
}


def _show(raw: Any) -> str:
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "...'"


# -- fields ------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSpec:
    """One field of the surface: its path, the model field, its kind and operators."""

    name: str
    field: Any
    kind: str
    operators: tuple[str, ...]
    sortable: bool = False

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.field, "null", False))

    def parse(self, operator: str, raw: Any) -> Any:
        """The Python value for ``name__operator=raw`` (``BadValue`` if it is not one)."""
        if isinstance(raw, str):
            _no_nul(raw)
        elif isinstance(raw, list | tuple):
            for item in raw:
                _no_nul(item)
        return VALUE_SHAPES[operator](self, raw)

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "operators": list(self.operators), "sortable": self.sortable,
                "nullable": self.nullable}


def resolve_field(model: type[Model], path: str) -> Any:
    """The model field at ``path`` (``name`` or ``customer__name`` through forward relations)."""
    parts = path.split("__")
    current: Any = model
    found: Any
    for i, part in enumerate(parts):
        if part == "pk":
            found = current._meta.pk
        else:
            found = current._meta.get_field(part)  # FieldDoesNotExist propagates
        if i == len(parts) - 1:
            if not getattr(found, "concrete", False):
                raise FieldDoesNotExist(f"{path!r} is not a concrete field of {model.__name__}.")
            return found
        if not (found.is_relation and (found.many_to_one or found.one_to_one) and found.concrete):
            raise FieldDoesNotExist(f"{path!r} crosses {part!r}, which is not a forward relation.")
        current = found.related_model
    raise FieldDoesNotExist(path)  # pragma: no cover - the loop always returns


def field_kind(model_field: Any) -> str | None:
    return FIELD_KINDS.get(model_field.get_internal_type())


def order_expression(name: str, desc: bool, nullable: bool) -> Any:
    """The ORDER BY term for one field.

    Nulls sort last going up and first going down on every backend (PostgreSQL's
    own default), so keyset pagination sees the same order on SQLite.
    """
    if not nullable:
        return f"-{name}" if desc else name
    return F(name).desc(nulls_first=True) if desc else F(name).asc(nulls_last=True)


# -- the surface -------------------------------------------------------------


@dataclass
class ParsedQuery:
    """What ``parse_params`` read from untrusted parameters, all checked."""

    filters: list[Q] = field(default_factory=list)
    ordering: list[tuple[str, bool]] | None = None
    search: str | None = None
    limit: int | None = None
    offset: int | None = None
    cursor: str | None = None
    # None: not asked (the REST lists count; QueryBuilder.page does not).
    count: bool | None = None
    fields: list[str] | None = None
    # DRF's page-number style: turned into limit/offset by parse_params.
    page: int | None = None
    page_size: int | None = None
    # Parameters left out as unknown (not strict).
    ignored: list[str] = field(default_factory=list)


class QuerySurface:
    """The declared query surface of one resource. Subclass it to override the default.

    Attributes (all optional):

    - ``fields``: the visible fields, ``"__all__"`` (every concrete field) or a list.
    - ``exclude``: fields hidden from filtering, sorting and searching.
    - ``filters``: ``None`` (every visible field with its kind's default operators),
      a list of field names (default operators each), or a dict field -> operators
      (a list, or ``"__default__"``). ``"isnull"`` is added for nullable fields.
    - ``ordering``: the fields that may be sorted: ``None`` (every visible sortable
      field) or a list.
    - ``default_ordering``: e.g. ``["-created_at"]``; ``None`` uses the model's
      ``Meta.ordering``, else ``-created_at`` when the model has it, else the pk.
      The primary key is always appended as the last tie-breaker.
    - ``search``: the searched fields; ``None`` = the visible text fields.
    - ``search_config``: the PostgreSQL text-search configuration.
    - ``default_limit`` / ``max_limit`` / ``max_offset``: pagination bounds.
    - ``strict``: True makes a parameter that is no filter, ordering, search or page
      parameter a 400; False ignores it (as django-filter and DRF do: ``?_=123``
      cache-busters, ``utm_*``); None (default) follows ``FLUVIUS['STRICT_QUERY_PARAMS']``.
    """

    fields: ClassVar[Any] = ALL
    exclude: ClassVar[Iterable[str]] = ()
    filters: ClassVar[Any] = None
    ordering: ClassVar[Any] = None
    default_ordering: ClassVar[Any] = None
    search: ClassVar[Any] = None
    search_config: ClassVar[str] = "simple"
    default_limit: ClassVar[int] = 50
    max_limit: ClassVar[int] = 1000
    max_offset: ClassVar[int] = 10_000_000
    strict: ClassVar[bool | None] = None

    def __init__(self, model: type[Model], resource: str = "", namespace: str = ""):
        self.model = model
        self.resource = resource
        self.namespace = namespace
        self.pk_name = model._meta.pk.name
        self.problems: list[tuple[str, str]] = []  # (check id, message) for system checks
        self.visible = self._visible_fields()
        self.filterable: dict[str, FieldSpec] = self._filterable()
        self.sortable: dict[str, FieldSpec] = self._sortable()
        self.searchable: tuple[str, ...] = self._searchable()
        self.default_order: list[tuple[str, bool]] = self._default_ordering()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.namespace}.{self.resource} of {self.model.__name__}>"

    # -- the hook ----------------------------------------------------------------

    def scope(self, queryset: Any, context: Any) -> Any:
        """Narrow every read of this resource from the context (user, tenant).

        Applied by ``StateManager.queryset``, so it covers ``fetch``/``find``,
        ``QueryBuilder`` and the REST endpoints alike. The default reads everything.
        """
        return queryset

    # -- building the surface -------------------------------------------------

    def _spec(self, name: str, operators: tuple[str, ...] | None = None) -> FieldSpec | None:
        try:
            model_field = resolve_field(self.model, name)
        except FieldDoesNotExist as exc:
            self.problems.append(("fluvius.E032", f"{type(self).__name__} names {name!r}, "
                                  f"which {self.model.__name__} cannot query: {exc}"))
            return None
        kind = field_kind(model_field)
        if kind is None:
            self.problems.append(("fluvius.E032", f"{type(self).__name__} names {name!r}, a "
                                  f"{model_field.get_internal_type()} that cannot be queried."))
            return None
        if operators is None:
            operators = DEFAULT_OPERATORS[kind]
            if model_field.null and "isnull" not in operators:
                operators = (*operators, "isnull")
        bad = [op for op in operators if op not in ALLOWED_OPERATORS[kind]]
        if bad:
            self.problems.append(("fluvius.E033", f"{type(self).__name__} allows {', '.join(bad)} on "
                                  f"{name!r} ({kind}); {kind} fields allow "
                                  f"{', '.join(sorted(ALLOWED_OPERATORS[kind]))}."))
            operators = tuple(op for op in operators if op not in bad)
        return FieldSpec(name, model_field, kind, tuple(operators))

    def _visible_fields(self) -> list[str]:
        hidden = set(self.exclude)
        if self.fields == ALL:
            names = [f.name for f in self.model._meta.concrete_fields if field_kind(f) is not None]
        else:
            names = list(self.fields)
        return [name for name in names if name not in hidden]

    def _filterable(self) -> dict[str, FieldSpec]:
        declared = self.filters
        if declared is None:
            declared = {name: DEFAULT for name in self.visible}
        elif not isinstance(declared, Mapping):
            declared = {name: DEFAULT for name in declared}
        specs: dict[str, FieldSpec] = {}
        hidden = set(self.exclude)
        for name, operators in declared.items():
            if name in hidden:
                continue
            if isinstance(operators, str):
                operators = None if operators in (DEFAULT, ALL) else (operators,)
            spec = self._spec(name, tuple(operators) if operators is not None else None)
            if spec is not None and (spec.operators or self.filters is not None):
                # Derived: a field whose kind offers no operator (JSON) is not filterable.
                specs[name] = spec
        return specs

    def _sortable(self) -> dict[str, FieldSpec]:
        hidden = set(self.exclude)
        names = self.visible if self.ordering in (None, ALL) else list(self.ordering)
        specs: dict[str, FieldSpec] = {}
        for name in names:
            if name in hidden:
                continue
            spec = self._spec(name, ())
            if spec is None:
                continue
            if spec.kind not in SORTABLE_KINDS:
                if self.ordering not in (None, ALL):
                    self.problems.append(("fluvius.E032", f"{type(self).__name__} allows sorting by "
                                          f"{name!r}, a {spec.kind} field that cannot be sorted."))
                continue
            specs[name] = spec
        # Mark the filter specs that are also sortable, for describe().
        for name, spec in list(self.filterable.items()):
            if name in specs:
                self.filterable[name] = FieldSpec(spec.name, spec.field, spec.kind, spec.operators, True)
        return {name: FieldSpec(s.name, s.field, s.kind, (), True) for name, s in specs.items()}

    def _searchable(self) -> tuple[str, ...]:
        hidden = set(self.exclude)
        if self.search is None:
            # By default the free-text fields are searched (not coded values with choices).
            return tuple(name for name in self.visible
                         if self._quiet_kind(name) in SEARCHABLE_KINDS
                         and not getattr(self._quiet_field(name), "choices", None))
        names = []
        for name in self.search:
            spec = self._spec(name, ())
            if spec is None:
                continue
            if spec.kind not in SEARCHABLE_KINDS:
                self.problems.append(("fluvius.E034", f"{type(self).__name__} searches {name!r}, "
                                      f"a {spec.kind} field; only text fields can be searched."))
                continue
            if name in hidden:
                self.problems.append(("fluvius.E034", f"{type(self).__name__} searches {name!r}, "
                                      "which it also excludes."))
                continue
            names.append(name)
        return tuple(names)

    def _quiet_field(self, name: str) -> Any:
        try:
            return resolve_field(self.model, name)
        except FieldDoesNotExist:
            return None

    def _quiet_kind(self, name: str) -> str | None:
        found = self._quiet_field(name)
        return field_kind(found) if found is not None else None

    def _default_ordering(self) -> list[tuple[str, bool]]:
        declared = self.default_ordering
        if declared is None:
            declared = list(self.model._meta.ordering or [])
            declared = [item for item in declared if isinstance(item, str)]
            if not declared:
                declared = ["-created_at"] if self._quiet_field("created_at") is not None else []
        order = []
        for item in declared:
            name, desc = (item[1:], True) if item.startswith("-") else (item, False)
            if name == "pk":
                name = self.pk_name
            if self._quiet_field(name) is None:
                self.problems.append(("fluvius.E032", f"{type(self).__name__}.default_ordering "
                                      f"names {name!r}, which {self.model.__name__} does not have."))
                continue
            order.append((name, desc))
        return order

    # -- reading untrusted parameters -----------------------------------------

    RESERVED: ClassVar[frozenset[str]] = frozenset(
        {"ordering", "search", "limit", "offset", "cursor", "count", "fields", "page", "page_size"}
    )

    def is_strict(self) -> bool:
        if self.strict is not None:
            return bool(self.strict)
        return bool(fluvius_settings.STRICT_QUERY_PARAMS)

    def parse_params(self, params: Any, *, ignore: Iterable[str] = (), strict: bool | None = None) -> ParsedQuery:
        """Check untrusted parameters against the surface; ``InvalidQuery`` lists every problem.

        ``params`` is a mapping (a ``QueryDict``'s repeated keys are all read);
        names in ``ignore`` are skipped (e.g. ``format`` on a DRF request). A name that
        is no filter of the surface is ignored (listed in ``ignored``) unless ``strict``
        (default: ``self.is_strict()``); a filter's bad operator or value is always a 400.
        """
        strict = self.is_strict() if strict is None else strict
        ignored = set(ignore)
        errors: dict[str, list[str]] = {}
        parsed = ParsedQuery()
        for key, values in _items(params):
            if key in ignored:
                continue
            reader = _PARAM_READERS.get(key)
            try:
                if reader is not None:
                    if len(values) > 1:
                        raise BadValue("is given more than once.")
                    reader(self, parsed, values[0])
                elif not strict and not self.is_filter(key):
                    parsed.ignored.append(key)
                else:
                    for value in values:
                        parsed.filters.append(self.filter_q(key, value))
            except BadValue as exc:
                errors.setdefault(key, []).append(str(exc))
            except InvalidQuery as exc:
                for name, messages in exc.errors.items():
                    errors.setdefault(name, []).extend(messages)
        if parsed.cursor is not None and parsed.offset is not None:
            errors.setdefault("cursor", []).append("cannot be combined with offset.")
        self._pages(parsed, errors)
        if errors:
            raise InvalidQuery(errors)
        return parsed

    def _pages(self, parsed: ParsedQuery, errors: dict[str, list[str]]) -> None:
        """``page``/``page_size`` (DRF's page numbers) as the limit and offset they stand for."""
        if parsed.page is None and parsed.page_size is None:
            return
        for other, given in (("offset", parsed.offset), ("cursor", parsed.cursor), ("limit", parsed.limit)):
            if given is not None:
                errors.setdefault(other, []).append("cannot be combined with page or page_size.")
                return
        size = parsed.page_size if parsed.page_size is not None else self.default_limit
        offset = ((parsed.page or 1) - 1) * size
        if offset > self.max_offset:
            errors.setdefault("page", []).append(
                f"{parsed.page} is too deep (at most {self.max_offset // size + 1} pages of {size}).")
            return
        parsed.limit, parsed.offset = size, offset

    def is_filter(self, key: Any) -> bool:
        """Whether ``key`` names a filterable field, with or without an operator (a known or
        a misspelt one: ``name__icontain`` is this field's filter, refused, never ignored)."""
        if not isinstance(key, str):
            return False
        name, _operator = _split_key(key)
        return name in self.filterable or self._misspelt_operator(key) is not None

    def _misspelt_operator(self, key: str) -> tuple[str, str] | None:
        """``(field, rest)`` when ``key`` is a filterable field followed by ``__`` parts no filter
        has (``name__icontain``, ``name__icontains__``, ``created_at__date__gte``); the longest
        such field, so a declared relation path (``customer__name``) is found before ``customer``."""
        if key in self.filterable:
            return None
        parts = key.split("__")
        for end in range(len(parts) - 1, 0, -1):
            head = "__".join(parts[:end])
            if head in self.filterable:
                return head, "__".join(parts[end:])
        return None

    def filter_q(self, key: str, value: Any) -> Q:
        """``Q(key=value)`` for one untrusted ``field`` / ``field__op`` parameter, checked."""
        if not isinstance(key, str) or not key:
            raise InvalidQuery({str(key): ["is not a field name."]})
        name, operator = _split_key(key)
        spec = self.filterable.get(name)
        if spec is None and (misspelt := self._misspelt_operator(key)) is not None:
            name, operator = misspelt
            spec = self.filterable[name]
        if spec is None:
            allowed = ", ".join(sorted(self.filterable)) or "none"
            raise InvalidQuery({key: [f"Unknown filter {_show(name)}. Filterable fields: {allowed}."]})
        if operator not in spec.operators:
            raise InvalidQuery({key: [
                f"Operator {operator!r} is not allowed on {name!r} ({spec.kind}); "
                f"allowed: {', '.join(spec.operators) or 'none'}."
            ]})
        try:
            parsed = spec.parse(operator, value)
        except BadValue as exc:
            raise InvalidQuery({key: [f"{name}: {exc}"]}) from None
        lookup = name if operator == "exact" else f"{name}__{operator}"
        return Q(**{lookup: parsed})

    def check_sort(self, name: str) -> tuple[str, bool]:
        """``(field, desc)`` for one untrusted ``name`` / ``-name``; ``InvalidQuery`` if hidden."""
        raw = name.strip() if isinstance(name, str) else ""
        desc = raw.startswith("-")
        field_name = raw[1:] if desc or raw.startswith("+") else raw
        if field_name == "pk":
            field_name = self.pk_name
        if field_name not in self.sortable:
            allowed = ", ".join(sorted(self.sortable)) or "none"
            raise InvalidQuery({"ordering": [f"Cannot sort by {_show(field_name)}. Sortable fields: {allowed}."]})
        return field_name, desc

    def check_fields(self, names: Iterable[str]) -> list[str]:
        wanted = list(names)
        unknown = [name for name in wanted if name not in self.visible and name != self.pk_name]
        if unknown:
            raise InvalidQuery({"fields": [f"Unknown or hidden field(s) {', '.join(map(_show, unknown))}; "
                                           f"fields: {', '.join(self.visible)}."]})
        return wanted

    def check_limit(self, raw: Any) -> int:
        value = _bounded_int(raw, "limit", 1, self.max_limit)
        return value

    def check_offset(self, raw: Any) -> int:
        return _bounded_int(raw, "offset", 0, self.max_offset)

    def check_search(self, raw: Any) -> str:
        text = _no_nul(raw if isinstance(raw, str) else str(raw)).strip()
        if len(text) > MAX_SEARCH_LENGTH:
            raise BadValue(f"is longer than {MAX_SEARCH_LENGTH} characters.")
        if not self.searchable:
            raise BadValue(f"{self.resource or self.model.__name__} has no searchable fields.")
        return text

    # -- _meta ----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The surface as JSON for the ``_meta`` endpoint and for clients."""
        return {
            "filters": {name: spec.describe() for name, spec in self.filterable.items()},
            "ordering": sorted(self.sortable),
            "default_ordering": [f"-{n}" if d else n for n, d in self.default_order],
            "search": {"fields": list(self.searchable), "backend": search_backend_name(),
                       "config": self.search_config},
            "pagination": {"default_limit": self.default_limit, "max_limit": self.max_limit,
                           "styles": ["page-number", "limit-offset", "cursor"],
                           "count": "always (estimated past EXACT_COUNT_LIMIT); count=false leaves it out"},
            "syntax": {"filter": "field=value or field__operator=value",
                       "in": "comma-separated values", "range": "low,high",
                       "ordering": "ordering=-created_at,name", "search": "search=text"},
        }


def _bounded_int(raw: Any, name: str, low: int, high: int) -> int:
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = raw if isinstance(raw, int) else int(str(raw).strip(), 10)
    except (TypeError, ValueError):
        raise BadValue(f"{_show(raw)} is not an integer; {name} must be between {low} and {high}.") from None
    if not low <= value <= high:
        raise BadValue(f"{value} is out of bounds; {name} must be between {low} and {high}.")
    return value


def _split_key(key: str) -> tuple[str, str]:
    name, sep, last = key.rpartition("__")
    if sep and last in OPERATORS:
        return name, last
    return key, "exact"


def _items(params: Any) -> Iterable[tuple[str, list[Any]]]:
    if hasattr(params, "lists"):  # a QueryDict: every value of a repeated key
        return list(params.lists())
    if isinstance(params, Mapping):
        return [(k, [v]) for k, v in params.items()]
    return [(k, [v]) for k, v in params]


def _read_ordering(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names = [item.strip() for item in items if isinstance(item, str) and item.strip()]
    if not names:
        raise BadValue("needs at least one field, e.g. ordering=-created_at,name.")
    if len(names) > 8:
        raise BadValue("sorts by at most 8 fields.")
    order = [surface.check_sort(name) for name in names]
    if len({n for n, _ in order}) != len(order):
        raise BadValue("names a field twice.")
    parsed.ordering = order


def _read_search(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    text = surface.check_search(raw)
    parsed.search = text or None


def _read_limit(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    parsed.limit = surface.check_limit(raw)


def _read_offset(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    parsed.offset = surface.check_offset(raw)


def _read_cursor(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    text = _no_nul(str(raw)).strip()
    if len(text) > 4096:
        raise BadValue("is not a valid cursor.")
    parsed.cursor = text  # decoded (and its signature checked) when the page is read


def _read_count(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    parsed.count = _boolean(None, raw)


def _read_page(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    parsed.page = _bounded_int(raw, "page", 1, 10**9)


def _read_page_size(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    parsed.page_size = _bounded_int(raw, "page_size", 1, surface.max_limit)


def _read_fields(surface: QuerySurface, parsed: ParsedQuery, raw: Any) -> None:
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    parsed.fields = surface.check_fields(i.strip() for i in items if str(i).strip())


# reserved parameter -> reader(surface, parsed, raw); anything else is a filter.
_PARAM_READERS: dict[str, Callable[[QuerySurface, ParsedQuery, Any], None]] = {
    "ordering": _read_ordering,
    "search": _read_search,
    "limit": _read_limit,
    "offset": _read_offset,
    "cursor": _read_cursor,
    "count": _read_count,
    "fields": _read_fields,
    "page": _read_page,
    "page_size": _read_page_size,
}


# -- finding a resource's surface ---------------------------------------------

_surfaces: dict[tuple[type, str], QuerySurface] = {}


def surface_class(domain_class: type, resource: str) -> type[QuerySurface]:
    """The ``QuerySurface`` class a domain declares for a resource (``__query__``), or the default."""
    declared = (getattr(domain_class, "__query__", None) or {}).get(resource)
    if declared is None:
        return QuerySurface
    if isinstance(declared, str):
        try:
            declared = import_string(declared)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"{domain_class.__qualname__}.__query__[{resource!r}] cannot be imported: {exc}"
            ) from exc
    if not (isinstance(declared, type) and issubclass(declared, QuerySurface)):
        raise ImproperlyConfigured(
            f"{domain_class.__qualname__}.__query__[{resource!r}] is {declared!r}, not a QuerySurface subclass."
        )
    return declared


def surface_for(domain: Any, resource: str) -> QuerySurface:
    """The (cached) query surface of a domain's resource; ``domain`` is a class or instance."""
    domain_class: Any = domain if isinstance(domain, type) else type(domain)
    key = (domain_class, resource)
    surface = _surfaces.get(key)
    if surface is None:
        model = resolve_model(domain_class.resource_model(resource))
        surface = surface_class(domain_class, resource)(model, resource, getattr(domain_class, "__namespace__", ""))
        _surfaces[key] = surface
    return surface


def clear_cache() -> None:
    _surfaces.clear()


def describe(domain: Any, resource: str) -> dict[str, Any]:
    """The query surface of one resource, as ``_meta`` shows it."""
    return surface_for(domain, resource).describe()


def surface_problems(domain_class: Any) -> list[tuple[str, str, Any]]:
    """(check id, message, obj) for every problem in a domain's query surfaces (system checks)."""
    problems: list[tuple[str, str, Any]] = []
    resources = dict(getattr(domain_class, "__resources__", {}) or {})
    declared = dict(getattr(domain_class, "__query__", None) or {})
    for resource in declared:
        if resource not in resources:
            problems.append(("fluvius.E030", f"{domain_class.__qualname__}.__query__ names {resource!r}, "
                             f"which is not one of its __resources__ ({', '.join(sorted(resources)) or 'none'}).",
                             domain_class))
    for resource in resources:
        try:
            cls = surface_class(domain_class, resource)
            model = resolve_model(domain_class.resource_model(resource))
        except (ImproperlyConfigured, Exception) as exc:  # noqa: BLE001 - reported, not raised
            if resource in declared:
                problems.append(("fluvius.E031", str(exc), domain_class))
            continue
        surface = cls(model, resource, getattr(domain_class, "__namespace__", ""))
        problems.extend((check_id, f"{resource!r} of {domain_class.__qualname__}: {msg}", cls)
                        for check_id, msg in surface.problems)
        if not 1 <= cls.default_limit <= cls.max_limit:
            problems.append(("fluvius.E035", f"{cls.__qualname__}: default_limit {cls.default_limit} must be "
                             f"between 1 and max_limit ({cls.max_limit}).", cls))
    return problems


def check_query_surfaces(app_configs=None, **kwargs):
    """System check: fluvius.E030-E035 for every registered domain's query surfaces."""
    from django.core import checks


    errors = []
    for domain_class in domains:
        for check_id, message, obj in surface_problems(domain_class):
            errors.append(checks.Error(message, hint=_HINTS.get(check_id), obj=obj, id=check_id))
    return errors


_HINTS = {
    "fluvius.E030": "Use a key of __resources__ in __query__.",
    "fluvius.E031": "Map each resource to a QuerySurface subclass (or its dotted path).",
    "fluvius.E032": "Name concrete fields of the projection model (a__b through forward relations).",
    "fluvius.E033": "See django_fluvius.read.surface.ALLOWED_OPERATORS for what each kind of field allows.",
    "fluvius.E034": "Search text fields (CharField, TextField ...) that are not excluded.",
    "fluvius.E035": "Set 1 <= default_limit <= max_limit.",
}
