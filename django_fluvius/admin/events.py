"""The event list, one event, an aggregate's timeline and the diff of two versions.

The list is built to stay quick on millions of events: no full-table count
(``EstimatedCountPaginator``), filters whose choices come from the registry, not
from ``SELECT DISTINCT``, search by exact ids only (each hits an index), and list
columns read from a short text prefix of the payload rather than the whole
document.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Substr
from django.http import Http404, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_fluvius.admin.base import (
    AggregateLinks,
    ReadOnlyAdmin,
    TenantRowsMixin,
    admin_context,
    admin_url,
    error_response,
    time_column,
    timeline_anchor,
)
from django_fluvius.admin.display import json_block, summary
from django_fluvius.admin.filters import (
    AggregateFilter,
    CommandIdFilter,
    CorrelationFilter,
    EventKeyFilter,
    NamespaceFilter,
    UserFilter,
)
from django_fluvius.admin.timeline import timeline, version_diff
from django_fluvius.events.store import EventStore
from django_fluvius.exceptions import FluviusError
from django_fluvius.models import Event

PREVIEW_CHARS = 160
TIMELINE_JSON_LIMIT = 20_000


class EventChangeList(ChangeList):
    """The list reads a prefix of each payload as text, and the username out of the metadata."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.defer("payload", "metadata").annotate(
            payload_head=Substr(Cast("payload", output_field=TextField()), 1, PREVIEW_CHARS + 1),
            username=KT("metadata__username"),
        )


class EventAdmin(TenantRowsMixin, AggregateLinks, ReadOnlyAdmin):
    list_display = ("position", "created_time", "namespace", "evt_key_display", "aggregate_short", "version",
                    "user_display", "payload_preview")
    list_display_links = ("position",)
    list_filter = (NamespaceFilter, EventKeyFilter, AggregateFilter, UserFilter, CorrelationFilter,
                   CommandIdFilter, ("created", admin.DateFieldListFilter))
    ordering = ("-position",)
    sortable_by = ("position", "created")
    search_fields = ("aggregate_id",)  # shows the box; get_search_results does the matching
    search_help_text = _("An aggregate id, command id or correlation id (exact), or an event position.")
    fieldsets = (
        (None, {"fields": ("position", "created_time", "namespace", "resource", "aggregate_link",
                           "version", "evt_key", "schema_version")}),
        (_("Payload"), {"fields": ("payload_pretty",)}),
        (_("Metadata"), {"fields": ("user_display", "tenant", "command_link", "correlation_link",
                                    "causation_id", "metadata_pretty")}),
    )
    readonly_fields = ("created_time", "aggregate_link", "user_display", "payload_pretty", "metadata_pretty",
                       "command_link", "correlation_link")
    timeline_template = "admin/django_fluvius/event/timeline.html"
    diff_template = "admin/django_fluvius/event/diff.html"

    created_time = time_column("created", _("created"))

    # -- list ----------------------------------------------------------------

    def get_changelist(self, request, **kwargs):
        return EventChangeList

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(position=int(term)), False
        try:
            value = uuid.UUID(term)
        except ValueError:
            messages.warning(request, _(
                "%(term)r is neither an id (a UUID) nor an event position: search takes an "
                "aggregate id, command id, correlation id or position.") % {"term": term})
            return queryset.none(), False
        query = (Q(aggregate_id=value) | Q(command_id=value)
                 | Q(correlation_id__in={term, value.hex, str(value)}))
        return queryset.filter(query), False

    @admin.display(description=_("user"))
    def user_display(self, obj):
        name = getattr(obj, "username", None)
        if name is None and "metadata" not in obj.get_deferred_fields():
            name = (obj.metadata or {}).get("username")
        if name and obj.user:
            return f"{name} ({obj.user})"
        return obj.user or "—"

    @admin.display(description=_("event key"), ordering="evt_key")
    def evt_key_display(self, obj):
        return format_html('<span title="{}">{}</span>', obj.evt_key, obj.evt_key)

    @admin.display(description=_("payload"))
    def payload_preview(self, obj):
        """One line of the payload's fields (the whole document is on the event's page)."""
        head = getattr(obj, "payload_head", None)
        if head is None:
            head = json.dumps(obj.payload, cls=DjangoJSONEncoder)[:PREVIEW_CHARS + 1]
        line = summary(head, PREVIEW_CHARS)
        return format_html('<span class="fluvius-preview" title="{}">{}</span>', line, line)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        event = self.get_object(request, object_id)
        extra = {"fluvius_timeline_url": timeline_anchor(self.admin_site, event.aggregate_id, event.version)
                 if event is not None else None}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    # -- one event -----------------------------------------------------------

    def _decoded(self, obj):
        cached = getattr(obj, "_fluvius_decoded", None)
        if cached is None:
            try:
                cached = (EventStore().decode(obj), "")
            except Exception as exc:  # noqa: BLE001 - a broken event is shown with its error
                cached = (obj, f"{type(exc).__name__}: {exc}")
            obj._fluvius_decoded = cached
        return cached

    @admin.display(description=_("payload (decoded)"))
    def payload_pretty(self, obj):
        event, problem = self._decoded(obj)
        block = json_block(event.payload, raw_url=self._json_url(obj, "payload"))
        if problem:
            return format_html('<p class="errornote">{}</p>{}',
                               _("This event cannot be decoded: ") + problem, block)
        return block

    @admin.display(description=_("metadata"))
    def metadata_pretty(self, obj):
        return json_block(obj.metadata, raw_url=self._json_url(obj, "metadata"))

    @admin.display(description=_("command"))
    def command_link(self, obj):
        if not obj.command_id:
            return "—"
        url = admin_url(self.admin_site, "django_fluvius_commandlog_changelist",
                        query={"command": str(obj.command_id)})
        events = admin_url(self.admin_site, "django_fluvius_event_changelist",
                           query={"command": str(obj.command_id)})
        if url:
            return format_html('<a href="{}">{}</a> (<a href="{}">{}</a>)', url, obj.command_id,
                               events, _("its events"))
        return format_html('{} (<a href="{}">{}</a>)', obj.command_id, events, _("its events"))

    @admin.display(description=_("correlation id"))
    def correlation_link(self, obj):
        if not obj.correlation_id:
            return "—"
        url = admin_url(self.admin_site, "django_fluvius_event_changelist",
                        query={"correlation": obj.correlation_id})
        return format_html('<a href="{}">{}</a>', url, obj.correlation_id)

    def _json_url(self, obj, part):
        return admin_url(self.admin_site, "django_fluvius_event_json", obj.pk, query={"part": part})

    # -- extra views ---------------------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("aggregate/<str:aggregate_id>/", wrap(self.timeline_view),
                 name="{}_{}_timeline".format(*info)),
            path("aggregate/<str:aggregate_id>/diff/", wrap(self.diff_view), name="{}_{}_diff".format(*info)),
            path("<int:position>/json/", wrap(self.json_view), name="{}_{}_json".format(*info)),
            *super().get_urls(),
        ]

    def _check_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name

    def _base_context(self, request, title):
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "events_url": admin_url(self.admin_site, "django_fluvius_event_changelist"),
            "can_see_commands": request.user.has_perm("django_fluvius.view_commandlog"),
        }

    def timeline_view(self, request, aggregate_id):
        self._check_view(request)
        try:
            result = timeline(aggregate_id, page=request.GET.get("page", 1),
                              context=admin_context(request, self.admin_site))
        except FluviusError as error:
            return error_response(request, self.admin_site, error, title=_("Aggregate timeline"),
                                  back_url=admin_url(self.admin_site, "django_fluvius_event_changelist"))
        context = {
            **self._base_context(request, _("Timeline of %(resource)s %(id)s") % {
                "resource": result.resource, "id": result.aggregate_id}),
            "timeline": result,
            "json_limit": TIMELINE_JSON_LIMIT,
            "entries": [
                {
                    "entry": entry,
                    "payload": json_block(entry.event.payload, TIMELINE_JSON_LIMIT,
                                          raw_url=self._json_url(entry.event, "payload")),
                    "state": json_block(entry.state, TIMELINE_JSON_LIMIT) if entry.state is not None else None,
                    "event_url": admin_url(self.admin_site, "django_fluvius_event_change", entry.event.pk),
                    "command_url": admin_url(self.admin_site, "django_fluvius_commandlog_changelist",
                                             query={"command": str(entry.event.command_id)})
                    if entry.event.command_id else None,
                }
                for entry in result.entries
            ],
            "diff_url": admin_url(self.admin_site, "django_fluvius_event_diff", result.aggregate_id),
            "stream_events_url": admin_url(self.admin_site, "django_fluvius_event_changelist",
                                           query={"aggregate": str(result.aggregate_id)}),
            "default_from": max(result.latest_version - 1, 0),
        }
        return TemplateResponse(request, self.timeline_template, context)

    def diff_view(self, request, aggregate_id):
        self._check_view(request)
        timeline_url = admin_url(self.admin_site, "django_fluvius_event_timeline", aggregate_id)
        try:
            result = version_diff(aggregate_id, request.GET.get("from", ""), request.GET.get("to", ""),
                                  context=admin_context(request, self.admin_site))
        except FluviusError as error:
            return error_response(request, self.admin_site, error, title=_("Compare versions"),
                                  back_url=timeline_url if "/" not in aggregate_id else None)
        context = {
            **self._base_context(request, _("%(resource)s %(id)s: version %(a)s → %(b)s") % {
                "resource": result.resource, "id": result.aggregate_id,
                "a": result.old_version, "b": result.new_version}),
            "diff": result,
            "event_links": [(event, timeline_anchor(self.admin_site, result.aggregate_id, event.version))
                            for event in result.events],
            "old_state": json_block(result.old_state, TIMELINE_JSON_LIMIT),
            "new_state": json_block(result.new_state, TIMELINE_JSON_LIMIT),
            "timeline_url": timeline_url,
            "diff_url": admin_url(self.admin_site, "django_fluvius_event_diff", result.aggregate_id),
        }
        return TemplateResponse(request, self.diff_template, context)

    def json_view(self, request, position):
        """The whole payload or metadata of one event as JSON (the pages show a capped part)."""
        self._check_view(request)
        part = request.GET.get("part", "payload")
        if part not in ("payload", "metadata"):
            raise Http404("part must be payload or metadata")
        event = self.scope_rows(request, Event.objects.filter(pk=position)).first()
        if event is None:
            raise Http404(f"No event at position {position}.")
        value = self._decoded(event)[0].payload if part == "payload" else event.metadata
        return JsonResponse(value, safe=False, json_dumps_params={"indent": 2, "sort_keys": True})
