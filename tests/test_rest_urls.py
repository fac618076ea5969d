"""URLs the REST tests run against (a URLconf, no tests of its own).

``api/``: the example project's domains and the test app's notes, with the
viewsets as they come. ``locked/``: the same domains behind ``IsAuthenticated``
(and ``IsAdminUser`` for deactivate-user), as a project would configure them.
"""

from django.urls import include, path
from rest_framework.authentication import BasicAuthentication
from rest_framework.permissions import IsAdminUser, IsAuthenticated

from django_fluvius.rest import CommandViewSet, DomainRouter, ResourceViewSet
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain
from tests.testapp.domain import NoteDomain

router = DomainRouter()
for domain in (UserDomain, OrderDomain, NoteDomain):
    router.register(domain)


class LockedCommands(CommandViewSet):
    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]


class AdminOnlyCommands(LockedCommands):
    permission_classes = [IsAdminUser]


class LockedResources(ResourceViewSet):
    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]


locked = DomainRouter()
locked.register(
    UserDomain,
    command_viewset={"create-user": LockedCommands, "rename-user": LockedCommands,
                     "deactivate-user": AdminOnlyCommands},
    resource_viewset=LockedResources,
)

urlpatterns = [
    path("locked/", include((locked.urls, "locked"))),
    path("api/", include(router.urls)),
]
