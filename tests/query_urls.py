"""URLs of the REST query tests: the test domains next to the example project's."""

from django.urls import include, path

from django_fluvius.rest import DomainRouter
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain
from tests.query_domains import ScopedNoteDomain
from tests.testapp.domain import NoteDomain

router = DomainRouter()
router.register(UserDomain)
router.register(OrderDomain)
router.register(NoteDomain)
router.register(ScopedNoteDomain)

urlpatterns = [path("api/", include(router.urls))]
