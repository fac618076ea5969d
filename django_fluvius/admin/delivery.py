"""Deliveries that failed: the dead letters.

A dead letter is a (handler or async projection, event) pair that failed its
last try. What is still pending is a subscription's lag (the projections page
shows it for handlers too). Dead letters are shown read-only, with actions that
go through ``dispatch``:

* **re-drive** (``change``: deliver again from the first try, oldest event
  first) and **discard** (``delete``: give up for good, an ordered handler moves
  past it).

Every action asks for confirmation first.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from django_fluvius.admin.base import (
    AggregateLinks,
    ReadOnlyAdmin,
    admin_url,
    time_column,
    timeline_anchor,
)
from django_fluvius.admin.display import preview
from django_fluvius.admin.filters import AggregateFilter, NamespaceFilter
from django_fluvius.privacy.copies import readable_text

# One action handles at most this many rows (each may run handlers in this request).
MAX_ROWS = 1000


def confirm(model_admin, request, queryset, *, action: str, question: str, warning: str = "",
            button: str) -> TemplateResponse | None:
    """None when the user confirmed (``post=yes``); else the page that asks."""
    if request.POST.get("post") == "yes":
        return None
    objects = list(queryset[: MAX_ROWS + 1])
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": question,
        "objects": objects[:MAX_ROWS],
        "too_many": len(objects) > MAX_ROWS,
        "max_rows": MAX_ROWS,
        "action": action,
        "warning": warning,
        "button": button,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    request.current_app = model_admin.admin_site.name
    return TemplateResponse(request, "admin/django_fluvius/confirm_action.html", context)


class DeliveryAdmin(AggregateLinks, ReadOnlyAdmin):
    """Read-only rows with permission-checked actions (ReadOnlyAdmin turns actions off)."""

    actions: Any = ()

    def has_retry_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def has_discard_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.delete_{self.opts.model_name}")

    def _timeline_url(self, obj):
        return timeline_anchor(self.admin_site, obj.aggregate_id, obj.version)

    created_time = time_column("created", gettext_lazy("created"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        obj = self.get_object(request, object_id)
        extra = {"fluvius_timeline_url": self._timeline_url(obj) if obj is not None and obj.aggregate_id
                 else None}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    @admin.display(description=gettext_lazy("waiting for"))
    def age(self, obj):
        return timesince(obj.created, timezone.now())


class DeadLetterAdmin(DeliveryAdmin):
    list_display = ("created_time", "kind_short", "handler_short", "evt_key", "aggregate_short", "event_link",
                    "attempts", "error_summary")
    list_filter = ("kind", "handler", NamespaceFilter, AggregateFilter, ("created", admin.DateFieldListFilter))
    ordering = ("-id",)
    fieldsets = (
        (None, {"fields": ("kind", "handler", "created_time", "attempts")}),
        (gettext_lazy("Event"), {"fields": ("event_link", "namespace", "evt_key", "aggregate_link", "version")}),
        (gettext_lazy("Error"), {"fields": ("error_type", "error_text", "traceback_block")}),
    )
    readonly_fields = ("created_time", "aggregate_link", "event_link", "error_text", "traceback_block")
    actions = ("redrive", "discard")

    @admin.display(description=gettext_lazy("event"), ordering="position")
    def event_link(self, obj):
        url = admin_url(self.admin_site, "django_fluvius_event_change", obj.position)
        return format_html('<a href="{}">#{}</a>', url, obj.position)

    @admin.display(description=gettext_lazy("kind"), ordering="kind")
    def kind_short(self, obj):
        """"handler" or "projection" (the list is narrow); the whole label in the tooltip."""
        return format_html('<span title="{}">{}</span>', obj.get_kind_display(), obj.kind)

    @admin.display(description=gettext_lazy("handler or projection"), ordering="handler")
    def handler_short(self, obj):
        """The handler's own name (``send_welcome_email``); its dotted path in the tooltip."""
        return format_html('<span title="{}">{}</span>', obj.handler, obj.handler.rsplit(".", 1)[-1])

    @admin.display(description=gettext_lazy("error"))
    def error_summary(self, obj):
        if not obj.error_type:
            return ""
        # The exception's own name reads first (smtplib.SMTPServerDisconnected -> SMTPServerDisconnected).
        message = self.error_text(obj)
        whole = preview(f"{obj.error_type}: {message}", 300)
        short = preview(f"{obj.error_type.rsplit('.', 1)[-1]}: {message}", 300)
        return format_html('<span title="{}">{}</span>', whole, short)

    @admin.display(description=gettext_lazy("error message"))
    def error_text(self, obj):
        # Sealed when the event carried personal data (privacy/copies.py): opened for display.
        return readable_text(obj.error_message, obj._state.db or "default")

    @admin.display(description=gettext_lazy("traceback"))
    def traceback_block(self, obj):
        return format_html('<pre class="fluvius-json" style="white-space: pre-wrap">{}</pre>',
                           readable_text(obj.traceback, obj._state.db or "default")) if obj.traceback else "—"

    @admin.action(description=gettext_lazy("Re-drive (deliver again)"), permissions=["retry"])
    def redrive(self, request, queryset):
        page = confirm(self, request, queryset, action="redrive",
                       question=_("Deliver these events again to their handlers?"),
                       button=_("Yes, re-drive them"))
        if page is not None:
            return page
        from django_fluvius.delivery import dispatch

        letters = list(queryset.order_by("position", "id")[:MAX_ROWS])
        try:
            count = dispatch.redrive(letters)
        except LookupError as exc:  # a handler or projection that no longer exists
            self.message_user(request, str(exc).strip("'\""), messages.ERROR)
            return None
        self.message_user(request, ngettext("Re-drove %(n)d dead letter.", "Re-drove %(n)d dead letters.", count)
                          % {"n": count}, messages.SUCCESS)
        return None

    @admin.action(description=gettext_lazy("Discard (give up for good)"), permissions=["discard"])
    def discard(self, request, queryset):
        page = confirm(self, request, queryset, action="discard",
                       question=_("Give up on these deliveries for good?"),
                       warning=_("Their handlers will never run for these events; an ordered handler "
                                 "moves on past them."),
                       button=_("Yes, discard them"))
        if page is not None:
            return page
        from django_fluvius.delivery import dispatch

        count = dispatch.discard(list(queryset[:MAX_ROWS]))
        self.message_user(request, ngettext("Discarded %(n)d dead letter.", "Discarded %(n)d dead letters.", count)
                          % {"n": count}, messages.SUCCESS)
        return None
