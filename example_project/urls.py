from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from django_fluvius.rest import CommandViewSet, DomainRouter
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain


class SignedInCommands(CommandViewSet):
    """Commands need a signed-in user (session or HTTP Basic); reads stay open."""

    permission_classes = [IsAuthenticated]


router = DomainRouter()
router.register(UserDomain, command_viewset=SignedInCommands)
# OrderDomain.__media__ opts its orders in to .../order/<id>/media/ uploads.
router.register(OrderDomain, command_viewset=SignedInCommands)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="schema-docs"),
    # Last under its prefix: the router answers unknown paths there with a JSON 404.
    path("api/", include(router.urls)),
]
