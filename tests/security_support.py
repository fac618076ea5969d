"""Helpers shared by the middleware, authorization and tenancy tests (their fixtures:
tests/security_fixtures.py, loaded with ``pytest_plugins = ["tests.security_fixtures"]``).

Users (password ``PASSWORD``):

| user  | tenants        | permissions                  |
|-------|----------------|------------------------------|
| alice | acme           | testapp.close_ticket         |
| bob   | acme           | none                         |
| carol | globex         | testapp.close_ticket         |
| dave  | acme, globex   | none (must say which tenant) |
| eve   | none           | none                         |
| root  | none           | superuser                    |
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import override_settings
from rest_framework.test import APIClient

from django_fluvius import DomainContext
from tests.testapp.tickets import TicketDomain

PASSWORD = "pw-for-tests"
TENANTS = {"alice": ["acme"], "bob": ["acme"], "carol": ["globex"], "dave": ["acme", "globex"],
           "eve": [], "root": []}
PERMS = {"alice": ["testapp.close_ticket"], "carol": ["testapp.close_ticket"]}


def fluvius_with(**changes):
    """override_settings of FLUVIUS with these keys changed (the rest as the test settings say)."""
    from django.conf import settings

    return override_settings(FLUVIUS={**settings.FLUVIUS, **changes})


def grant(user, *perms):
    model = get_user_model()
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return model.objects.get(pk=user.pk)  # fresh: no cached permissions


def ctx(user=None, tenant=None, **kwargs):
    """A user's context as the request resolver would make it (tenant given explicitly here)."""
    return DomainContext.create(namespace="test-tickets", user=user, tenant=tenant, **kwargs)


def as_user(user, tenant):
    return TicketDomain(ctx(user, tenant))


def run(domain, key, payload=None, aggregate_id=None, **kwargs):
    return domain.process_command(domain.create_command(key, payload or {}, aggregate_id=aggregate_id, **kwargs))


def api(user=None, **headers):
    client = APIClient(**headers)
    if user is not None:
        client.force_authenticate(user)
    return client
