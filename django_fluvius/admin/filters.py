"""List filters for the event and command-log lists.

None of them asks the database for its choices: namespaces and event keys come
from the domain registry (a ``SELECT DISTINCT`` over millions of events would
cost more than the page), and ids are typed into a text box. A value that
cannot match (a malformed UUID) gives a clear message and an empty list, not an
error page.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db import connections
from django.db.models.expressions import RawSQL
from django.utils.translation import gettext_lazy as _

from django_fluvius.registry import domains


class InputFilter(admin.SimpleListFilter):
    """A filter whose value is typed, not picked: ids, users, correlation ids."""

    template = "admin/django_fluvius/input_filter.html"
    field_name: str = ""
    placeholder = ""

    def lookups(self, request, model_admin):
        return ()

    def has_output(self) -> bool:
        return True

    def choices(self, changelist):
        # Keep the other parameters (filters, search, ordering) when this box is submitted.
        keep = [(k, v) for k, v in changelist.params.items() if k != self.parameter_name]
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": _("All"),
            "hidden": keep,
        }

    def clean(self, request, value: str):
        """The value to filter on, or None after telling the user why it cannot match."""
        return value.strip()

    def queryset(self, request, queryset):
        raw = self.value()
        if raw is None or not raw.strip():
            return queryset
        value = self.clean(request, raw)
        if value is None:
            return queryset.none()
        return queryset.filter(**{self.field_name: value})


class UUIDInputFilter(InputFilter):
    placeholder = "UUID"

    def clean(self, request, value):
        try:
            return uuid.UUID(value.strip())
        except ValueError:
            messages.warning(request, _("%(value)r is not a valid %(what)s (a UUID).")
                             % {"value": value, "what": self.title})
            return None


class AggregateFilter(UUIDInputFilter):
    title = _("aggregate id")
    parameter_name = "aggregate"
    field_name = "aggregate_id"


class CommandIdFilter(UUIDInputFilter):
    title = _("command id")
    parameter_name = "command"
    field_name = "command_id"


class CorrelationFilter(InputFilter):
    title = _("correlation id")
    parameter_name = "correlation"
    field_name = "correlation_id"


class UserFilter(InputFilter):
    """By user id, or by username (looked up once in the user table)."""

    title = _("user")
    parameter_name = "user"
    field_name = "user"
    placeholder = "id or username"

    def clean(self, request, value):
        value = value.strip()
        model = get_user_model()
        pk = (model._default_manager.filter(**{model.USERNAME_FIELD: value})
              .values_list("pk", flat=True).first())
        return str(pk) if pk is not None else value


class DeclaredValueFilter(admin.SimpleListFilter):
    """Choices from what the registered domains declare, not a SELECT DISTINCT on a big table.

    A value in the URL that no code declares (an old event key, say) is kept as a choice.
    """

    field_name: str

    def declared(self, request) -> list[str]:
        raise NotImplementedError

    def lookups(self, request, model_admin):
        values = self.declared(request)
        current = self.value()
        if current and current not in values:
            values.append(current)
        return [(v, v) for v in values]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(**{self.field_name: self.value()})
        return queryset


class NamespaceFilter(DeclaredValueFilter):
    title = _("namespace")
    parameter_name = "namespace"
    field_name = "namespace"

    def declared(self, request):
        return sorted(d.__namespace__ for d in domains)


def declared_event_keys(namespace: str | None = None) -> list[str]:
    """The event keys the registered aggregates produce or fold, for one namespace or all."""
    keys: set[str] = set()
    for domain in domains:
        if namespace and domain.__namespace__ != namespace:
            continue
        aggregate = getattr(domain, "__aggregate__", None)
        if aggregate is None:
            continue
        keys.update(spec.evt_key for spec in aggregate.actions().values())
        keys.update(getattr(aggregate, "_appliers", {}))
    return sorted(keys)


class EventKeyFilter(DeclaredValueFilter):
    title = _("event key")
    parameter_name = "evt_key"
    field_name = "evt_key"

    def declared(self, request):
        return declared_event_keys(request.GET.get("namespace") or None)

    def queryset(self, request, queryset):
        queryset = super().queryset(request, queryset)
        if self.value() and not request.GET.get("namespace"):
            # The event table's key index leads with the namespace (namespace, evt_key, txid,
            # position): name every namespace the table holds, found by walking that index
            # (a few lookups), and a key alone is read as one index range per namespace
            # instead of a scan of the table (141 ms for a rare key at 1,000,000 events: 1 ms).
            quote = connections[queryset.db].ops.quote_name
            queryset = queryset.filter(namespace__in=RawSQL(_STORED_NAMESPACES.format(
                table=quote(queryset.model._meta.db_table), namespace=quote("namespace")), []))
        return queryset


# Every distinct namespace of the event table, by a loose index scan (recursive: the next
# namespace above the last one found, from the index): as many lookups as namespaces.
_STORED_NAMESPACES = (
    "WITH RECURSIVE ns(n) AS (SELECT MIN({namespace}) FROM {table} UNION ALL "
    "SELECT (SELECT MIN({namespace}) FROM {table} WHERE {namespace} > ns.n) FROM ns WHERE ns.n IS NOT NULL) "
    "SELECT n FROM ns WHERE n IS NOT NULL"
)


def declared_commands(namespace: str | None = None) -> list[str]:
    names: set[str] = set()
    for domain in domains:
        if namespace and domain.__namespace__ != namespace:
            continue
        aggregate = getattr(domain, "__aggregate__", None)
        if aggregate is not None:
            names.update(aggregate.actions())
    return sorted(names)


class CommandNameFilter(DeclaredValueFilter):
    title = _("command")
    parameter_name = "command_name"
    field_name = "command"

    def declared(self, request):
        return declared_commands(request.GET.get("namespace") or None)
