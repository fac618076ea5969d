"""Snapshots: a cache of folded state, shown read-only (deleting them is harmless).

Deleting is the one change allowed: a snapshot is a cache, and loading an
aggregate without it folds the events instead, so nothing is lost.
"""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from django_fluvius.admin.base import (
    AggregateLinks,
    ReadOnlyAdmin,
    TenantRowsMixin,
    admin_context,
    time_column,
)
from django_fluvius.admin.display import json_block
from django_fluvius.admin.filters import AggregateFilter, NamespaceFilter
from django_fluvius.models import Event
from django_fluvius.privacy.copies import readable
from django_fluvius.security import tenancy


class SnapshotAdmin(TenantRowsMixin, AggregateLinks, ReadOnlyAdmin):
    list_display = ("aggregate_short", "namespace", "resource", "version", "schema_version", "created_time")
    list_filter = (NamespaceFilter, AggregateFilter)
    ordering = ("-id",)
    fields = ("aggregate_link", "namespace", "resource", "version", "schema_version", "created",
              "state_pretty")
    readonly_fields = ("aggregate_link", "state_pretty")
    created_time = time_column("created", _("created"))

    def scope_rows(self, request, queryset):
        # A snapshot's tenant is its aggregate's: the one on the stream's first event.
        if not tenancy.enabled():
            return queryset
        heads = tenancy.scope_rows(Event.objects.filter(version=1), admin_context(request))
        return queryset.filter(aggregate_id__in=heads.values("aggregate_id"))

    def has_delete_permission(self, request, obj=None):
        # A snapshot is a cache: removing one changes no result, so Django's permission decides.
        return admin.ModelAdmin.has_delete_permission(self, request, obj)

    @admin.display(description=_("state"))
    def state_pretty(self, obj):
        return json_block(readable(obj.state, obj._state.db or "default"))  # personal fields opened
