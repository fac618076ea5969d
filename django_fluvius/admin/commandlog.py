"""The command log: who ran what, when, with what outcome, how long it took.

Read-only: every command writes its row (done, rejected or failed) through the
bus; the admin never adds, edits or deletes one, so the audit trail stays whole.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.db.models import Q
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_fluvius.admin.base import (
    AggregateLinks,
    ReadOnlyAdmin,
    TenantRowsMixin,
    admin_url,
    command_label,
    time_column,
)
from django_fluvius.admin.display import json_block, preview
from django_fluvius.admin.filters import (
    AggregateFilter,
    CommandIdFilter,
    CommandNameFilter,
    CorrelationFilter,
    NamespaceFilter,
    UserFilter,
)
from django_fluvius.privacy.copies import readable

STATUS_COLOURS = {
    "done": "var(--message-success-fg, #2e7d32)",
    "rejected": "var(--message-warning-fg, #b26a00)",
    "failed": "var(--error-fg, #ba2121)",
}


class CommandLogAdmin(TenantRowsMixin, AggregateLinks, ReadOnlyAdmin):
    list_display = ("created_time", "namespace", "command_label", "status_badge", "user_display",
                    "aggregate_short", "version", "duration", "error_summary", "events_link")
    list_display_links = ("created_time",)
    list_filter = ("status", NamespaceFilter, CommandNameFilter, UserFilter, AggregateFilter,
                   CommandIdFilter, CorrelationFilter, ("created", admin.DateFieldListFilter))
    ordering = ("-id",)
    sortable_by = ("created", "duration_ms")
    search_fields = ("command_id",)
    search_help_text = _("A command id, aggregate id or correlation id (exact).")
    fieldsets = (
        (None, {"fields": ("command_id", "created_time", "namespace", "command_label", "resource", "aggregate_link",
                           "status_badge", "version", "duration")}),
        (_("Who"), {"fields": ("user_display", "tenant", "correlation_id", "causation_id")}),
        (_("Error"), {"fields": ("error_code", "error_message")}),
        (_("Payload"), {"fields": ("payload_pretty",)}),
        (_("Produced"), {"fields": ("events_link",)}),
        (_("Metadata"), {"fields": ("metadata_pretty",)}),
    )
    readonly_fields = ("created_time", "command_label", "aggregate_link", "status_badge", "duration", "user_display", "payload_pretty",
                       "metadata_pretty", "events_link", "error_summary")

    created_time = time_column("created", _("created"))

    @admin.display(description=_("command"), ordering="command")
    def command_label(self, obj):
        """"Pay order", with the key itself (``pay-order``) in the tooltip."""
        return format_html('<span title="{}" data-command="{}">{}</span>', obj.command, obj.command,
                           command_label(obj.command))

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            value = uuid.UUID(term)
        except ValueError:
            messages.warning(request, _("%(term)r is not an id (a UUID): search takes a command id, "
                                        "aggregate id or correlation id.") % {"term": term})
            return queryset.none(), False
        return queryset.filter(Q(command_id=value) | Q(aggregate_id=value)
                               | Q(correlation_id__in={term, value.hex, str(value)})), False

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj):
        return format_html('<strong style="color: {}" class="fluvius-status-{}">{}</strong>',
                           STATUS_COLOURS.get(obj.status, "inherit"), obj.status, obj.get_status_display())

    @admin.display(description=_("duration"), ordering="duration_ms")
    def duration(self, obj):
        return f"{obj.duration_ms:.1f} ms"

    @admin.display(description=_("user"))
    def user_display(self, obj):
        name = (obj.metadata or {}).get("username")
        if name and obj.user:
            return f"{name} ({obj.user})"
        return obj.user or "—"

    @admin.display(description=_("error"))
    def error_summary(self, obj):
        if not obj.error_code:
            return ""
        text = f"{obj.error_code}: {preview(obj.error_message, 300)}"
        return format_html('<span title="{}">{}</span>', text, text)

    @admin.display(description=_("events"))
    def events_link(self, obj):
        if obj.status != "done":
            return "—"
        url = admin_url(self.admin_site, "django_fluvius_event_changelist",
                        query={"command": str(obj.command_id)})
        if url is None:
            return "—"
        return format_html('<a href="{}" title="{}">{}</a>', url, _("events produced"), _("events"))

    @admin.display(description=_("payload"))
    def payload_pretty(self, obj):
        return json_block(readable(obj.payload, obj._state.db or "default"))  # personal fields opened

    @admin.display(description=_("metadata"))
    def metadata_pretty(self, obj):
        return json_block(obj.metadata)
