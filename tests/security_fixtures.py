"""Fixtures of the middleware, authorization and tenancy tests (``pytest_plugins``).

``ticket_domain`` registers the tenant-scoped ticket domain with tenancy on;
``people`` makes the users of tests/security_support.py.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from django_fluvius.registry import domains
from django_fluvius.security.permissions import create_command_permissions
from django_fluvius.write.cache import aggregate_cache
from tests.security_support import PASSWORD, PERMS, TENANTS, fluvius_with, grant
from tests.testapp import tickets
from tests.testapp.models import Membership
from tests.testapp.tickets import TicketDomain


@pytest.fixture
def ticket_domain():
    """TicketDomain registered (and its run_ permissions made, as migrate would), tenancy on."""
    domains.register(TicketDomain)
    create_command_permissions(verbosity=0)
    aggregate_cache.clear()
    with fluvius_with(TENANCY=tickets.TENANCY):
        yield TicketDomain
    domains.unregister(TicketDomain.__namespace__)
    tickets.hooks.clear()
    aggregate_cache.clear()


@pytest.fixture
def people(ticket_domain):
    model = get_user_model()
    made = {}
    for name, tenants in TENANTS.items():
        if name == "root":
            user = model.objects.create_superuser(name, f"{name}@example.com", PASSWORD)
        else:
            user = model.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)
        for tenant in tenants:
            Membership.objects.create(user=user, tenant=tenant)
        made[name] = grant(user, *PERMS.get(name, ()))
    return made
