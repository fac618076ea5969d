from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from django_fluvius.rest import DomainRouter
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain

router = DomainRouter()
router.register(UserDomain)
router.register(OrderDomain)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("schema/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="schema-docs"),
    # Last under its prefix: the router answers unknown paths there with a JSON 404.
    path("api/", include(router.urls)),
]
