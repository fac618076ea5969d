"""Filtering, ordering and search of resource lists from query parameters.

``ResourceFilterBackend`` reads DRF's conventions: ``field=value`` and
``field__op=value`` (``in`` takes ``a,b,c``, ``range`` takes ``low,high``),
``ordering=-created_at,name`` and ``search=text``. Every parameter is checked
against the resource's query surface (``django_fluvius.read.surface``) before any
query runs: an unknown field, a forbidden operator, a value of the wrong type or a
sort on a hidden field is a 400 whose ``errors`` name the parameter and what is
allowed. It hands the checked ``QueryBuilder`` to ``ResourcePagination`` on the
request, so the page is cut from exactly the query that was checked.
"""

from __future__ import annotations

from typing import Any

from django.template import loader
from rest_framework.filters import BaseFilterBackend

from django_fluvius.exceptions import InvalidQuery
from django_fluvius.read.query import QueryBuilder
from django_fluvius.read.surface import DEFAULT_OPERATORS, QuerySurface, surface_for
from django_fluvius.registry import domains

# Where the checked builder travels from the filter backend to the paginator.
REQUEST_ATTRIBUTE = "_fluvius_query"

# Parameters DRF or the browsable API use for themselves, and the consistency
# parameter of reads: never filters.
IGNORED_PARAMS = frozenset({"format", "min_position"})


def view_target(view: Any, queryset: Any = None) -> tuple[Any, str]:
    """(domain, resource) a view serves: its ``get_domain()``/``domain_class`` and ``resource``,
    else the domain whose resource model is the QuerySet's model."""
    resource = getattr(view, "resource", None)
    get_domain = getattr(view, "get_domain", None)
    domain = None
    if resource and callable(get_domain) and getattr(view, "request", None) is not None:
        domain = get_domain()
    elif resource:
        domain = getattr(view, "domain_class", None) or getattr(view, "domain", None)
    if domain is not None and resource:
        return domain, resource
    model = getattr(queryset, "model", None)
    for domain_class in domains:
        for name in getattr(domain_class, "__resources__", {}):
            if domain_class.projection_model(name) is model:
                return domain_class, name
    raise LookupError(f"{type(view).__name__} does not say which resource it lists.")


def view_surface(view: Any) -> QuerySurface:
    resource = getattr(view, "resource", None)
    domain_class = getattr(view, "domain_class", None)
    if resource and domain_class is not None:  # no request needed (schema generation, _meta)
        return surface_for(domain_class, resource)
    domain, resource = view_target(view)
    return surface_for(domain, resource)


def builder_for(request: Any, view: Any, queryset: Any) -> QueryBuilder:
    """The request's checked ``QueryBuilder`` (made once per request)."""
    builder = getattr(request, REQUEST_ATTRIBUTE, None)
    if builder is None:
        domain, resource = view_target(view, queryset)
        params = getattr(request, "query_params", None)
        if params is None:
            params = request.GET
        if "fields" in params:
            # The serializer writes every field: deferring columns would cost a query per row.
            raise InvalidQuery({"fields": ["is not supported by this endpoint (every field is returned)."]})
        builder = QueryBuilder.from_params(resource, params, domain=domain, queryset=queryset,
                                           ignore=IGNORED_PARAMS)
        setattr(request, REQUEST_ATTRIBUTE, builder)
    return builder


def is_list(view: Any) -> bool:
    # get_object() runs filter_queryset too: a detail view's ?version= is no filter.
    return not getattr(view, "detail", False) and getattr(view, "action", "list") in ("list", None)


class ResourceFilterBackend(BaseFilterBackend):
    """A DRF filter backend: ``field=``, ``field__op=``, ``ordering=``, ``search=``."""

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        if not is_list(view):
            return queryset
        return builder_for(request, view, queryset).ordered()

    def describe(self, view: Any) -> dict[str, Any]:
        """Filters, ordering and search of the view's resource, for ``_meta``."""
        described = view_surface(view).describe()
        described.pop("pagination", None)  # ResourcePagination says that part
        return described

    template = "django_fluvius/rest/filters.html"

    def to_html(self, request: Any, queryset: Any, view: Any) -> str:
        """The browsable API's "Filters" form: one box per declared field and operator."""
        if not is_list(view):
            return ""
        try:
            surface = view_surface(view)
        except LookupError:
            return ""
        params = request.query_params
        fields = []
        for name, spec in surface.filterable.items():
            boxes = []
            for op in spec.operators:
                param = name if op == "exact" else f"{name}__{op}"
                boolean = spec.kind == "boolean" or op == "isnull"
                hint = OPERATOR_HINTS.get(op, "")
                boxes.append({
                    "param": param, "op": OPERATOR_LABELS.get(op, op),
                    "placeholder": f"{OPERATOR_LABELS.get(op, op)} {hint}".strip(),
                    "value": params.get(param, ""),
                    "input": INPUT_TYPES.get(spec.kind, "text") if op not in ("in", "range") else "text",
                    "choices": [("true", "yes"), ("false", "no")] if boolean else None,
                })
            fields.append({"name": name, "boxes": boxes})
        ordering = [(value, text) for field in sorted(surface.sortable)
                    for value, text in ((field, f"{field} ↑"), (f"-{field}", f"{field} ↓"))]
        context = {
            "fields": fields,
            "ordering": ordering,
            "current_ordering": params.get("ordering", ""),
            "search": {"value": params.get("search", ""), "hint": ", ".join(surface.searchable)}
            if surface.searchable else None,
        }
        return loader.get_template(self.template).render(context, request)

    # drf-spectacular / DRF schema generation.
    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        try:
            surface = view_surface(view)
        except LookupError:
            return []
        params: list[dict[str, Any]] = []
        for name, spec in surface.filterable.items():
            for op in spec.operators:
                key = name if op == "exact" else f"{name}__{op}"
                hint = {"in": " (comma-separated)", "range": " (low,high)", "isnull": " (true/false)"}.get(op, "")
                params.append({
                    "name": key, "required": False, "in": "query",
                    "description": f"{name} {op}{hint}",
                    "schema": _param_schema(spec.kind, op),
                })
        params.append({"name": "ordering", "required": False, "in": "query",
                       "description": "Comma-separated fields, '-' for descending: "
                                      + ", ".join(sorted(surface.sortable)),
                       "schema": {"type": "string"}})
        if surface.searchable:
            params.append({"name": "search", "required": False, "in": "query",
                           "description": "Words to find in " + ", ".join(surface.searchable),
                           "schema": {"type": "string"}})
        return params


# How the filter form names an operator, hints at its value, and which input it uses.
OPERATOR_LABELS = {"exact": "is", "iexact": "is (any case)", "icontains": "contains", "contains": "contains",
                   "startswith": "starts with", "istartswith": "starts with", "in": "one of",
                   "range": "between", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "isnull": "is empty"}
OPERATOR_HINTS = {"in": "a,b,c", "range": "low,high"}
INPUT_TYPES = {"integer": "number", "float": "number", "decimal": "number", "date": "date"}


# field kind -> OpenAPI schema of one value (lists and ranges are comma-separated strings).
_SCHEMA_TYPES: dict[str, dict[str, Any]] = {
    "integer": {"type": "integer"},
    "float": {"type": "number"},
    "decimal": {"type": "number"},
    "boolean": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
    "datetime": {"type": "string", "format": "date-time"},
    "uuid": {"type": "string", "format": "uuid"},
}


def _param_schema(kind: str, op: str) -> dict[str, Any]:
    if op == "isnull":
        return {"type": "boolean"}
    if op in ("in", "range"):
        return {"type": "string"}
    return dict(_SCHEMA_TYPES.get(kind, {"type": "string"}))

__all__ = ["DEFAULT_OPERATORS", "ResourceFilterBackend", "builder_for", "view_target"]
