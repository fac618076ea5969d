from django.db import models

from django_fluvius.models import Projection


class Note(Projection):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    tags = models.JSONField(default=list)
    priority = models.IntegerField(default=0)
    archived = models.BooleanField(default=False)
    edits = models.IntegerField(default=0)
    due = models.DateField(null=True, blank=True)


class Folder(Projection):
    name = models.CharField(max_length=200)


class Effect(models.Model):
    """What the dispatch tests' handlers do: one row per run (no unique key, so a
    second run of the same (handler, event) would show as a second row)."""

    handler = models.CharField(max_length=100)
    position = models.BigIntegerField()
    aggregate_id = models.UUIDField(null=True)
    version = models.IntegerField(null=True)
    detail = models.CharField(max_length=200, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.handler} @ {self.position}"


class NoteActivity(models.Model):
    """Read model of the async projections in the tests and benchmarks."""

    id = models.UUIDField(primary_key=True)
    title = models.CharField(max_length=200, blank=True)
    events = models.IntegerField(default=0)
    last_version = models.IntegerField(default=0)
    last_position = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.title}: {self.events} events"


class Ticket(Projection):
    """Read model of the tenant-scoped ticket domain of the security tests (tests/testapp/tickets.py)."""

    title = models.CharField(max_length=200)
    owner = models.CharField(max_length=150, blank=True)
    status = models.CharField(max_length=20, default="open")
    bumps = models.IntegerField(default=0)
    tenant = models.CharField(max_length=100, blank=True, db_index=True)

    class Meta:
        permissions = [("close_ticket", "Can close any ticket")]

    def __str__(self) -> str:
        return self.title


class Membership(models.Model):
    """Which tenants a user belongs to: what the security tests' tenant resolver reads."""

    user = models.ForeignKey("auth.User", on_delete=models.CASCADE, related_name="memberships")
    tenant = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="testapp_membership_once")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.tenant}"


class Member(Projection):
    """Read model of the privacy tests' member domain (tests/testapp/members.py): plaintext by design."""

    name = models.CharField(max_length=200)
    email = models.CharField(max_length=200)
    nickname = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 - erased to None, not ""
    active = models.BooleanField(default=True)


class Card(Projection):
    """A member's card: personal data whose subject is the member, not the card (PersonalData(subject=...))."""

    member_id = models.UUIDField(null=True)
    address = models.CharField(max_length=200, blank=True)
    level = models.IntegerField(default=1)
