from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
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
    # Liveness (health/) and readiness (health/ready/): docs/deployment.md.
    path("health/", include("django_fluvius.health")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI and ReDoc load their JavaScript from drf-spectacular-sidecar's static files.
    path("schema/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="schema-docs"),
    # django-fluvius's ReDoc template leaves out drf-spectacular's Google Fonts links.
    path("schema/redoc/", SpectacularRedocView.as_view(url_name="schema", template_name="django_fluvius/redoc.html"),
         name="schema-redoc"),
    # Last under its prefix: the router answers unknown paths there with a JSON 404.
    path("api/", include(router.urls)),
]
