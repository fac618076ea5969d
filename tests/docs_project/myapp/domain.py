"""The user domain of docs/quickstart.md (its blocks titled myapp/domain.py are excerpts of this file)."""

from django_fluvius import Aggregate, Domain, DomainError, action


class UserAggregate(Aggregate):
    @action(evt_key="user-created", resources=["user"], create=True)
    def create_user(self, name: str, email: str):
        if not email or "@" not in email:
            raise DomainError("Invalid email")
        return {"name": name, "email": email, "active": True}

    @action(evt_key="user-renamed", resources=["user"])
    async def rename_user(self, name: str):          # sync and async actions both work
        return {"name": name}

    @action(evt_key="user-deactivated", resources=["user"])
    def deactivate_user(self):
        if not self.state["active"]:                  # the state, folded from the events
            raise DomainError("User is already inactive", code="already_inactive")
        return {"active": False}


class UserDomain(Domain):
    __aggregate__ = UserAggregate
    __namespace__ = "app-user"
    __resources__ = {"user": "myapp.User"}
