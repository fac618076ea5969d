"""Helpers shared by the admin tests: staff users with chosen permissions, a user's history."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from django_fluvius import DomainContext
from example_project.users.domain import UserDomain

PASSWORD = "pw-for-tests"


def make_staff(username: str, *perms: str, superuser: bool = False):
    """A staff user holding ``perms`` ("app_label.codename")."""
    model = get_user_model()
    if superuser:
        return model.objects.create_superuser(username, f"{username}@example.com", PASSWORD)
    user = model.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label,
                                                         codename=codename))
    return model.objects.get(pk=user.pk)  # fresh: no cached permissions


def user_history(actor=None, *, name="Ada", email="ada@example.com"):
    """A user created, renamed and deactivated: three versions. Returns its id."""
    domain = UserDomain(DomainContext.create(namespace="app-user", user=actor))
    created = domain.process_command(domain.create_command("create-user", {"name": name, "email": email}))
    domain.process_command(domain.create_command("rename-user", {"name": f"{name} L."},
                                                 aggregate_id=created.aggregate_id))
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    return created.aggregate_id
