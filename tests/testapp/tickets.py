"""A tenant-scoped domain for the middleware, authorization and tenancy tests.

Not in FLUVIUS['DOMAINS']: the tests register it (fixture ``ticket_domain``), so the
rest of the suite and ``manage.py check`` never see a tenant-scoped domain.
"""

from django_fluvius import Aggregate, Domain, DomainError, action
from django_fluvius.security.permissions import IsAuthenticated, OwnedBy

from .models import Membership

# Tests put callables here to run code inside an action (e.g. make a race).
hooks: dict = {}


def still_open(context, command, aggregate) -> bool:
    """A plain function policy: only an open ticket may be claimed."""
    return aggregate.state.get("status") == "open"


class TicketAggregate(Aggregate):
    @action(evt_key="ticket-opened", resources=["ticket"], create=True)
    def open_ticket(self, title: str):
        return {"title": title, "owner": self.context.user_id, "status": "open", "bumps": 0}

    @action(evt_key="ticket-retitled", resources=["ticket"], permission=OwnedBy("owner"))
    def retitle_ticket(self, title: str):
        return {"title": title}

    @action(evt_key="ticket-closed", resources=["ticket"], permission="testapp.close_ticket")
    def close_ticket(self):
        if self.state.get("status") == "closed":
            raise DomainError("The ticket is already closed.")
        return {"status": "closed"}

    @action(evt_key="ticket-claimed", resources=["ticket"], permission=[IsAuthenticated, still_open])
    def claim_ticket(self):
        return {"owner": self.context.user_id}

    @action(evt_key="ticket-bumped", resources=["ticket"], retry_safe=True)
    def bump_ticket(self):
        hook = hooks.get("bump")
        if hook:
            hook(self)
        return {"bumps": self.state.get("bumps", 0) + 1}

    @action(evt_key="ticket-escalated", resources=["ticket"])
    def escalate_ticket(self):
        hook = hooks.get("bump")
        if hook:
            hook(self)
        return {"bumps": self.state.get("bumps", 0) + 10}


class TicketDomain(Domain):
    __aggregate__ = TicketAggregate
    __namespace__ = "test-tickets"
    __resources__ = {"ticket": "testapp.Ticket"}
    __tenancy__ = True


def user_tenants(user):
    """FLUVIUS['TENANCY']['USER_TENANTS'] of the tests: the user's memberships."""
    return Membership.objects.filter(user=user).order_by("tenant").values_list("tenant", flat=True)


TENANCY = {"USER_TENANT": None, "USER_TENANTS": user_tenants, "HEADER": "X-Tenant-ID"}
