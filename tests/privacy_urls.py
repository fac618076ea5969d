"""The privacy tests' API: the member domain (tests/testapp/members.py) behind signed-in commands."""

from django.urls import include, path
from rest_framework.permissions import IsAuthenticated

from django_fluvius.rest import CommandViewSet, DomainRouter
from tests.testapp.members import MemberDomain


class SignedInCommands(CommandViewSet):
    permission_classes = [IsAuthenticated]


router = DomainRouter()
router.register(MemberDomain, command_viewset=SignedInCommands)

urlpatterns = [path("api/", include(router.urls))]
