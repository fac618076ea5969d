"""URLs of the stream and read-your-writes tests (tests/test_stream.py, test_stream_live.py).

``api/``: the example project's user domain (commands need a signed-in user), the test
notes, the tenant-scoped tickets (reads need a signed-in user, as in security_urls) and
the read-only activity domain an async projection keeps; ``scoped/``: the notes with row
scoping. ``stream-page/``: the page of
docs/stream.md's JavaScript example, for the browser test.
"""

from pathlib import Path

from django.http import HttpResponse
from django.urls import include, path
from rest_framework.permissions import IsAuthenticated

from django_fluvius.rest import CommandViewSet, DomainRouter, ResourceViewSet
from example_project.users.domain import UserDomain
from tests.testapp.activity import ActivityDomain
from tests.testapp.domain import NoteDomain
from tests.testapp.tickets import TicketDomain

PAGE = Path(__file__).resolve().parent / "data" / "stream_page.html"


class SignedInCommands(CommandViewSet):
    permission_classes = [IsAuthenticated]


class SignedInReads(ResourceViewSet):
    permission_classes = [IsAuthenticated]


class OwnNotesDomain(NoteDomain):
    """The notes titled "mine" only (row scoping): its stream sends their events only."""

    def scope_queryset(self, resource, queryset):
        return queryset.filter(title="mine") if resource == "note" else queryset.none()


def stream_page(request):
    return HttpResponse(PAGE.read_text(), content_type="text/html; charset=utf-8")


router = DomainRouter()
router.register(UserDomain, command_viewset=SignedInCommands)
router.register(NoteDomain)
router.register(TicketDomain, command_viewset=SignedInCommands, resource_viewset=SignedInReads)
router.register(ActivityDomain)
scoped = DomainRouter()
scoped.register(OwnNotesDomain)

urlpatterns = [
    path("stream-page/", stream_page),
    path("scoped/", include(scoped.urls)),
    path("api/", include(router.urls)),
]
