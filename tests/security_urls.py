"""URLs of the security tests: the tenant-scoped ticket domain over REST and on an admin site."""

from django.contrib import admin
from django.http import JsonResponse
from django.urls import include, path
from rest_framework.permissions import IsAuthenticated

from django_fluvius.admin import AggregateAdmin, register_on
from django_fluvius.rest import CommandViewSet, DomainRouter, ResourceViewSet
from example_project.users.domain import UserDomain
from tests.testapp.models import Ticket
from tests.testapp.tickets import TicketDomain


class TicketCommands(CommandViewSet):
    permission_classes = [IsAuthenticated]


class TicketResources(ResourceViewSet):
    permission_classes = [IsAuthenticated]


class TicketAdmin(AggregateAdmin):
    domain = TicketDomain
    list_display = ("title", "owner", "status", "tenant", "version")
    commands = "__all__"


def my_tickets(request):
    """A plain Django view: a domain built without a context acts for the request (DomainContextMiddleware)."""
    domain = TicketDomain()
    context = domain.context
    return JsonResponse({
        "user": context.user_id, "tenant": context.tenant, "system": context.is_system,
        "correlation_id": context.correlation_id,
        "titles": sorted(domain.statemgr.find("ticket").values_list("title", flat=True)),
    })


async def my_tickets_async(request):
    from asgiref.sync import sync_to_async

    return await sync_to_async(my_tickets)(request)


site = admin.AdminSite(name="security_admin")
register_on(site)
site.register(Ticket, TicketAdmin)

router = DomainRouter()
router.register(TicketDomain, command_viewset=TicketCommands, resource_viewset=TicketResources)
router.register(UserDomain)

urlpatterns = [
    path("mine/", my_tickets),
    path("mine-async/", my_tickets_async),
    path("admin/", site.urls),
    path("api/", include(router.urls)),
]
