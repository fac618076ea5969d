"""The user bounded context of the DESIGN.md example."""

from django_fluvius import Aggregate, Domain, DomainError, action
from django_fluvius.read.surface import QuerySurface


class UserAggregate(Aggregate):
    @action(evt_key="user-created", resources=["user"], create=True,
            example={"name": "Ann Smith", "email": "ann@example.com"})
    def create_user(self, name: str, email: str):
        """Register a new user."""
        if not email or "@" not in email:
            raise DomainError("Invalid email")
        return {"name": name, "email": email, "active": True}

    @action(evt_key="user-renamed", resources=["user"], example={"name": "Ann Jones"})
    async def rename_user(self, name: str):
        """Give a user a new name."""
        if not name.strip():
            raise DomainError("A name cannot be blank")
        return {"name": name}

    @action(evt_key="user-deactivated", resources=["user"])
    def deactivate_user(self):
        """Deactivate a user; an inactive user cannot be deactivated again."""
        if not self.state["active"]:
            raise DomainError("User is already inactive")
        return {"active": False}


class UserQuery(QuerySurface):
    """What clients may filter, sort and search on users (GET /api/app-user/user/)."""

    filters = {
        "name": ["exact", "iexact", "icontains", "startswith", "in"],
        "email": ["exact", "iexact", "icontains", "in"],
        "active": ["exact"],
        "created_at": ["gt", "gte", "lt", "lte", "range"],
        "updated_at": ["gt", "gte", "lt", "lte"],
        "version": ["exact", "gt", "gte", "lt", "lte"],
    }
    ordering = ["name", "email", "created_at", "updated_at"]
    default_ordering = ["-created_at"]
    search = ["name", "email"]  # matches the SearchIndex of the User model
    search_config = "simple"


class UserDomain(Domain):
    """The people who use the shop: their name, email and whether their account is active."""

    __aggregate__ = UserAggregate
    __namespace__ = "app-user"
    __resources__ = {"user": "app_user.User"}
    __query__ = {"user": UserQuery}
