"""Domains the query tests declare their own surfaces on (registered by the tests that use them)."""

from django_fluvius import Domain
from django_fluvius.read.surface import QuerySurface
from tests.testapp.domain import NoteAggregate


class ScopedNoteQuery(QuerySurface):
    """A declared surface: body hidden, few operators, archived notes only for staff."""

    exclude = ["body"]
    filters = {
        "title": ["exact", "icontains"],
        "priority": "__default__",
        "archived": ["exact"],
        "due": "__default__",
        "created_at": ["gte", "lt"],
    }
    ordering = ["priority", "due", "title", "created_at"]
    default_ordering = ["-priority"]
    search = ["title"]
    default_limit = 5
    max_limit = 20

    def scope(self, queryset, context):
        # Row scoping from the request context: only staff see archived notes.
        if getattr(getattr(context, "user", None), "is_staff", False):
            return queryset
        return queryset.filter(archived=False)


class ScopedNoteDomain(Domain):
    __aggregate__ = NoteAggregate
    __namespace__ = "test-scoped-notes"
    __resources__ = {"note": "testapp.Note"}
    __query__ = {"note": ScopedNoteQuery}


class TenantNoteDomain(Domain):
    """Domain-wide scoping (Domain.scope_queryset) combined with the default surface."""

    __aggregate__ = NoteAggregate
    __namespace__ = "test-tenant-notes"
    __resources__ = {"note": "testapp.Note", "folder": "testapp.Folder"}

    def scope_queryset(self, resource, queryset):
        tenant = self.context.tenant
        if resource == "note" and tenant:
            return queryset.filter(title__startswith=f"{tenant}:")
        return queryset
