"""What the event-browser pages share: read-only admins, error pages, admin links.

Invariant: the event store is append-only in the admin too — every admin built
on ``ReadOnlyAdmin`` refuses add, change and delete whatever the user's
permissions; ``TenantRowsMixin`` narrows its queryset to the admin user's tenant,
so every list, detail and filter of such a page sees only that tenant's rows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from django_fluvius.admin.pagination import EstimatedCountPaginator
from django_fluvius.context import DomainContext
from django_fluvius.exceptions import FluviusError
from django_fluvius.middleware import context_from_request
from django_fluvius.ops.catalog import label
from django_fluvius.security import tenancy


def admin_context(request, site: admin.AdminSite | None = None) -> DomainContext:
    """The context of reads and commands done through the admin: the staff user, its tenant."""
    return context_from_request(request, source="admin")


class TenantRowsMixin:
    """With tenancy on, list and show only the rows of the admin user's tenant (``tenant_field``).

    A user whose context sees every tenant (a superuser with ``SUPERUSER_ALL_TENANTS``)
    sees them all; one with no tenant sees none.
    """

    tenant_field = "tenant"

    def get_queryset(self, request):
        queryset = super().get_queryset(request)  # type: ignore[misc]
        return self.scope_rows(request, queryset)

    def scope_rows(self, request, queryset):
        return tenancy.scope_rows(queryset, admin_context(request), self.tenant_field)


# Times in the event browser are read to the second (commands of one request are
# a few milliseconds apart; Django's default format stops at the minute).
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# The stylesheet of every event-browser page (column widths that fit 1400 px).
ADMIN_CSS = "django_fluvius/admin.css"


def format_time(value) -> str:
    """A datetime as ``2026-12-06 17:01:23`` in the current time zone, in a ``<time>`` element."""
    if value is None:
        return "—"
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return format_html('<time class="fluvius-time" datetime="{}">{}</time>', value.isoformat(),
                       local.strftime(TIME_FORMAT))


def time_column(field: str, description: Any = None):
    """A list column showing ``field`` to the second, sortable by it."""
    @admin.display(description=description or field, ordering=field)
    def column(self, obj):
        return format_time(getattr(obj, field))

    column.__name__ = f"{field}_time"
    return column


def command_label(name: str) -> str:
    """A command key as people read it: ``lend-book`` -> ``Lend book`` (as the domain map says it)."""
    return label(name)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows are shown, never added, changed or deleted through the admin.

    Seeing them needs the model's Django ``view`` permission (``change`` implies
    ``view`` in Django, and grants nothing more here). The lists are log tables
    read across their width, so they open without the app sidebar (the breadcrumbs
    and the index lead on); a row's page has no "History" button: rows written by the
    framework have no admin change history.
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 50
    actions = None
    change_form_template = "admin/django_fluvius/readonly_change_form.html"

    class Media:
        css = {"all": (ADMIN_CSS,)}

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {"is_nav_sidebar_enabled": False, **(extra_context or {})})

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class AggregateLinks:
    """Columns linking a row's ``aggregate_id`` to its timeline: whole id, or short for lists."""

    admin_site: admin.AdminSite  # given by the ModelAdmin this is mixed into

    def _timeline_url(self, obj):
        return admin_url(self.admin_site, "django_fluvius_event_timeline", obj.aggregate_id)

    @admin.display(description=_("aggregate"), ordering="aggregate_id")
    def aggregate_link(self, obj):
        if not obj.aggregate_id:
            return "—"
        return format_html('<a href="{}">{}</a>', self._timeline_url(obj), obj.aggregate_id)

    @admin.display(description=_("aggregate"))
    def aggregate_short(self, obj):
        if not obj.aggregate_id:
            return "—"
        return format_html('<a href="{}" title="{}" class="fluvius-id">{}…</a>', self._timeline_url(obj),
                           obj.aggregate_id, str(obj.aggregate_id)[:8])


def timeline_anchor(site: admin.AdminSite, aggregate_id: Any, version: int | None) -> str | None:
    """The timeline page that shows ``version`` of an aggregate, scrolled to it."""
    from django_fluvius.admin.timeline import PER_PAGE

    url = admin_url(site, "django_fluvius_event_timeline", aggregate_id)
    if url is None or not version:
        return url
    return f"{url}?page={(version - 1) // PER_PAGE + 1}#v{version}"


def admin_url(site: admin.AdminSite, name: str, *args: Any, query: dict | None = None) -> str | None:
    """The URL of an admin view on ``site``, or None when it is not registered there."""
    try:
        url = reverse(f"{site.name}:{name}", args=args)
    except NoReverseMatch:
        return None
    return f"{url}?{urlencode(query)}" if query else url


def error_response(request, site: admin.AdminSite, error: FluviusError, *, title: Any = "",
                   back_url: str | None = None) -> TemplateResponse:
    """A page that says what was wrong with the request, with the error's HTTP status."""
    status = error.status_code if 400 <= error.status_code < 500 else 400
    context = {
        **site.each_context(request),
        "title": title or "Cannot show this page",
        "error": error,
        "back_url": back_url,
    }
    return TemplateResponse(request, "admin/django_fluvius/error.html", context, status=status)
