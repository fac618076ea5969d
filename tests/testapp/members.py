"""The privacy tests' domain: members whose name and email are personal, and cards whose
address is their member's (docs/privacy.md)."""

import uuid

from django_fluvius import Aggregate, Domain, DomainError, action
from django_fluvius.privacy import PersonalData


class MemberAggregate(Aggregate):
    @action(evt_key="member-joined", resources=["member"], create=True)
    def join(self, name: str, email: str, nickname: str | None = None):
        if "@" not in email:
            raise DomainError(f"Invalid email {email}")
        return {"name": name, "email": email, "nickname": nickname, "active": True}

    @action(evt_key="member-renamed", resources=["member"])
    def rename(self, name: str):
        return {"name": name}

    @action(evt_key="member-left", resources=["member"])
    def leave(self):
        return {"active": False}

    @action(evt_key="card-issued", resources=["card"], create=True)
    def issue_card(self, member_id: uuid.UUID, address: str):
        return {"member_id": member_id, "address": address, "level": 1}

    @action(evt_key="card-upgraded", resources=["card"])
    def upgrade_card(self):
        return {"level": self.state["level"] + 1}


def card_holder(aggregate_id, state):
    """A card's personal data belongs to its member."""
    return state.get("member_id")


class MemberDomain(Domain):
    __aggregate__ = MemberAggregate
    __namespace__ = "test-members"
    __resources__ = {"member": "testapp.Member", "card": "testapp.Card"}
    __personal__ = {
        "member": ["name", "email", "nickname"],
        "card": PersonalData(["address"], subject=card_holder),
    }
