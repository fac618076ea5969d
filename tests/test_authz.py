"""Authorization: who may run which command, over REST and in Python, with the loaded aggregate.

The matrix runs every user of tests/security_support.py against a fresh ticket of
each tenant with every guarded command, once in Python and once over REST, and
checks the outcome against the rules written out in ``expected``:

1. the checks that need no aggregate (a permission string, ``IsAuthenticated``)
   come first: 403, whichever aggregate is named (so a 403 says nothing about it);
2. then the tenant: no tenant is 400, another tenant's ticket 404;
3. then the object checks, inside the transaction (``OwnedBy``): 403;
4. else the command runs.

A refusal stores nothing and leaves a rejected row in the command log.
"""

import uuid

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core import checks
from django.test import override_settings

from django_fluvius import DomainContext, PermissionDenied
from django_fluvius.exceptions import ConfigurationError, FluviusError
from django_fluvius.models import CommandLog, Event
from django_fluvius.security.permissions import (
    AllowAny,
    HasPerm,
    IsAuthenticated,
    OwnedBy,
    Policy,
    as_policy,
    check_authorization,
    command_permission,
    create_command_permissions,
)
from example_project.users.domain import UserDomain
from tests.security_support import api, as_user, ctx, fluvius_with, grant, run
from tests.testapp.models import Ticket
from tests.testapp.tickets import TENANCY, TicketDomain

pytest_plugins = ["tests.security_fixtures"]
pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security_urls")]

USER_TENANT = {"alice": "acme", "bob": "acme", "carol": "globex", "dave": "acme", "eve": None, "root": None}
OWNER = {"acme": "alice", "globex": "carol"}
CLOSERS = {"alice", "carol", "root"}  # testapp.close_ticket (root: a superuser has every permission)
MATRIX_COMMANDS = {"retitle-ticket": {"title": "renamed"}, "close-ticket": {}, "claim-ticket": {},
                   "bump-ticket": {}}


def expected(user: str, ticket_tenant: str, key: str) -> tuple[int, str | None]:
    if key == "close-ticket" and user not in CLOSERS:
        return 403, "permission_denied"
    tenant = USER_TENANT[user]
    if tenant is None:
        return 400, "tenant_required"
    if tenant != ticket_tenant:
        return 404, "not_found"
    if key == "retitle-ticket" and user != OWNER[ticket_tenant]:
        return 403, "permission_denied"
    return 200, None


def python_outcome(user, key, payload, ticket):
    try:
        run(as_user(user, USER_TENANT[user.username]), key, payload, aggregate_id=ticket)
    except FluviusError as exc:
        return exc.status_code, exc.code
    return 200, None


def rest_outcome(user, key, payload, ticket):
    headers = {"HTTP_X_TENANT_ID": "acme"} if user.username == "dave" else {}
    response = api(user).post(f"/api/test-tickets/{key}/{ticket}/", payload, format="json", **headers)
    return response.status_code, (response.json().get("code") if response.status_code != 200 else None)


@pytest.mark.parametrize("path", ["python", "rest"])
@pytest.mark.parametrize("key", sorted(MATRIX_COMMANDS))
@pytest.mark.parametrize("ticket_tenant", ["acme", "globex"])
@pytest.mark.parametrize("name", sorted(USER_TENANT))
def test_matrix_of_users_tenants_and_commands(people, name, ticket_tenant, key, path):
    owner = people[OWNER[ticket_tenant]]
    ticket = run(as_user(owner, ticket_tenant), "open-ticket", {"title": "matrix"}).aggregate_id
    outcome = (python_outcome if path == "python" else rest_outcome)(people[name], key, MATRIX_COMMANDS[key],
                                                                    ticket)
    assert outcome == expected(name, ticket_tenant, key)
    versions = Event.objects.filter(aggregate_id=ticket).count()
    log = CommandLog.objects.filter(aggregate_id=ticket, command=key).get()
    if outcome[0] == 200:
        assert versions == 2 and log.status == "done"
        assert Event.objects.get(aggregate_id=ticket, version=2).user == str(people[name].pk)
    else:
        assert versions == 1 and Ticket.objects.get(pk=ticket).version == 1
        assert (log.status, log.error_code, log.user) == ("rejected", outcome[1], str(people[name].pk))


# -- policies ------------------------------------------------------------------------------------


def test_an_object_check_sees_the_loaded_aggregate_inside_the_transaction(people):
    alice = as_user(people["alice"], "acme")
    ticket = run(alice, "open-ticket", {"title": "mine"}).aggregate_id
    run(alice, "close-ticket", aggregate_id=ticket)
    # claim-ticket: IsAuthenticated (before loading) and still_open (with the aggregate): closed now.
    with pytest.raises(PermissionDenied):
        run(as_user(people["bob"], "acme"), "claim-ticket", aggregate_id=ticket)
    assert Event.objects.filter(aggregate_id=ticket).count() == 2


def test_a_function_policy_runs_once_per_try_with_the_aggregate(people):
    seen = []

    def policy(context, command, aggregate):
        seen.append((context.user_id, command.key, aggregate.version, aggregate.tenant, aggregate.state["title"]))
        return True

    spec = TicketDomain.commands()["bump-ticket"]
    alice = as_user(people["alice"], "acme")
    ticket = run(alice, "open-ticket", {"title": "policy"}).aggregate_id
    spec.permission = policy
    try:
        with fluvius_with(COMMAND_MIDDLEWARE=["django_fluvius.security.permissions.AuthorizationMiddleware"]):
            run(alice, "bump-ticket", aggregate_id=ticket)
            run(TicketDomain(DomainContext.system()), "bump-ticket", aggregate_id=ticket)  # system: not asked
    finally:
        spec.permission = None
    assert seen == [(str(people["alice"].pk), "bump-ticket", 1, "acme", "policy")]


def test_a_system_context_runs_every_command(people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    system = TicketDomain(DomainContext.system(tenant="acme"))
    run(system, "close-ticket", aggregate_id=ticket)
    run(system, "retitle-ticket", {"title": "by a task"}, aggregate_id=ticket)
    assert Ticket.objects.get(pk=ticket).title == "by a task"


def test_policies_combine_like_drf_permissions(people):
    alice, bob = people["alice"], people["bob"]
    command = TicketDomain(ctx(alice, "acme")).create_command("bump-ticket", {}, aggregate_id=uuid.uuid4())

    class Aggregate:
        state = {"owner": str(alice.pk)}
        version = 1

    def allows(policy, user):
        context = ctx(user, "acme")
        return policy.has_permission(context, command) and policy.has_object_permission(context, command,
                                                                                        Aggregate())

    owner_or_closer = OwnedBy() | HasPerm("testapp.close_ticket")
    assert allows(owner_or_closer, alice) and not allows(owner_or_closer, bob)
    assert allows(owner_or_closer, grant(bob, "testapp.close_ticket"))
    assert not allows(OwnedBy() & HasPerm("testapp.close_ticket"), people["carol"])
    assert allows(~OwnedBy(), bob) and not allows(~OwnedBy(), alice)
    assert not allows(IsAuthenticated(), get_user_model()(username="ghost", is_active=False))
    assert allows(AllowAny(), None)
    assert as_policy(OwnedBy).checks_objects  # a class is instantiated; it checks objects
    assert not as_policy("testapp.close_ticket").checks_objects
    assert as_policy(None) is None and as_policy([]) is None


def test_a_policy_says_why(people):
    class BusinessHours(Policy):
        message = "Tickets are closed outside business hours."

        def has_permission(self, context, command):
            return False

    spec = TicketDomain.commands()["bump-ticket"]
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    spec.permission = BusinessHours
    try:
        with fluvius_with(COMMAND_MIDDLEWARE=["django_fluvius.security.permissions.AuthorizationMiddleware"]):
            response = api(people["alice"]).post(f"/api/test-tickets/bump-ticket/{ticket}/", {}, format="json")
    finally:
        spec.permission = None
    assert response.status_code == 403
    assert response.json() == {"code": "permission_denied", "message": "Tickets are closed outside business hours."}


def test_a_permission_that_is_not_one_is_a_configuration_error(ticket_domain):
    with pytest.raises(ConfigurationError):
        as_policy(42)
    with pytest.raises(ConfigurationError):
        HasPerm("no-dot")
    spec = TicketDomain.commands()["bump-ticket"]
    spec.permission = 42
    try:
        assert [e.id for e in check_authorization() if e.obj is TicketDomain] == ["fluvius.E072"]
    finally:
        spec.permission = None


# -- command permissions -------------------------------------------------------------------------


def test_migrate_creates_a_permission_per_command():
    permission = Permission.objects.get(content_type__app_label="app_user", codename="run_create_user")
    assert permission.name == "Can run create-user" and permission.content_type.model == "user"
    assert command_permission(UserDomain, UserDomain.commands()["rename-user"]) == "app_user.run_rename_user"
    assert Permission.objects.filter(content_type__app_label="app_order", codename="run_place_order").exists()
    assert create_command_permissions(verbosity=0) == 0  # idempotent


def test_command_permissions_wait_for_the_tables_of_contenttypes_and_auth(django_assert_num_queries):
    """``migrate django_fluvius 0008`` on a new database: post_migrate runs before those tables exist."""
    from django.apps import apps as global_apps
    from django.contrib.auth.models import Permission
    from django.db.migrations.state import ProjectState

    Permission.objects.filter(codename__startswith="run_").delete()
    with django_assert_num_queries(0):
        assert create_command_permissions(verbosity=0, apps=ProjectState().apps) == 0
    assert create_command_permissions(verbosity=0, apps=global_apps) > 0, "with them, it makes them"


def test_command_permissions_when_required(people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    with fluvius_with(TENANCY=TENANCY,
                      COMMAND_PERMISSIONS=True):
        bob = as_user(people["bob"], "acme")
        with pytest.raises(PermissionDenied):
            run(bob, "bump-ticket", aggregate_id=ticket)
        bob = as_user(grant(people["bob"], "testapp.run_bump_ticket"), "acme")
        assert run(bob, "bump-ticket", aggregate_id=ticket).version == 2
        # A declared permission still applies on top of the run permission.
        with pytest.raises(PermissionDenied):
            run(as_user(grant(people["bob"], "testapp.run_close_ticket"), "acme"), "close-ticket",
                aggregate_id=ticket)
        run(TicketDomain(DomainContext.system()), "bump-ticket", aggregate_id=ticket)  # system: exempt
        root = as_user(people["root"], None)
        with pytest.raises(FluviusError) as info:  # a superuser holds every permission; the tenant stops it
            run(root, "bump-ticket", aggregate_id=ticket)
        assert info.value.code == "tenant_required"
    assert Event.objects.filter(aggregate_id=ticket).count() == 3


@pytest.mark.urls("example_project.urls")
def test_command_permissions_over_rest(client):
    user = get_user_model().objects.create_user("writer", password="pw")
    body = {"name": "Ada", "email": "ada@example.com"}
    with override_settings(FLUVIUS={**settings.FLUVIUS, "COMMAND_PERMISSIONS": True}):
        # The example project's commands need a signed-in user (its urls.py): refused by the
        # view, before the bus.
        anonymous = client.post("/api/app-user/create-user/", body, content_type="application/json")
        assert anonymous.status_code == 403 and anonymous.json()["code"] == "not_authenticated"
        client.force_login(user)
        refused = client.post("/api/app-user/create-user/", body, content_type="application/json")
        assert refused.status_code == 403
        client.force_login(grant(user, "app_user.run_create_user"))
        created = client.post("/api/app-user/create-user/", body, content_type="application/json")
        assert created.status_code == 201
    assert Event.objects.count() == 1
    statuses = list(CommandLog.objects.order_by("id").values_list("status", "error_code", "user"))
    assert statuses == [("rejected", "permission_denied", str(user.pk)), ("done", "", str(user.pk))]


def test_permissions_are_looked_up_once_per_user_object(people, django_assert_num_queries):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    alice = get_user_model().objects.get(username="alice")
    domain = as_user(alice, "acme")
    run(domain, "close-ticket", aggregate_id=ticket)  # loads alice's permissions
    run(domain, "bump-ticket", aggregate_id=ticket)
    reopened = run(TicketDomain(DomainContext.system()), "retitle-ticket", {"title": "again"}, aggregate_id=ticket)
    assert reopened.version == 4
    command = domain.create_command("close-ticket", {}, aggregate_id=ticket)
    with django_assert_num_queries(0):
        assert HasPerm("testapp.close_ticket").has_permission(domain.context, command)


def test_the_admin_asks_for_the_run_permission_when_required(client, people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    staff = grant(people["bob"], "testapp.view_ticket", "testapp.change_ticket")
    client.force_login(staff)
    url = f"/admin/testapp/ticket/{ticket}/command/bump-ticket/"
    assert client.get(url).status_code == 200  # the model's change permission, by default
    with fluvius_with(TENANCY=TENANCY,
                      COMMAND_PERMISSIONS=True):
        assert client.get(url).status_code == 403
        client.force_login(grant(staff, "testapp.run_bump_ticket"))
        assert client.get(url).status_code == 200
        assert client.post(url, {}).status_code == 302
    assert Event.objects.filter(aggregate_id=ticket).count() == 2


def test_a_denied_command_from_the_admin_is_denied_by_the_bus_too(client, people):
    # The page shows what the admin's own permission allows; the bus still applies the policy.
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    client.force_login(grant(people["bob"], "testapp.view_ticket", "testapp.change_ticket"))
    response = client.post(f"/admin/testapp/ticket/{ticket}/command/close-ticket/", {})
    assert response.status_code == 200 and "You may not run close-ticket" in response.content.decode()
    assert Event.objects.filter(aggregate_id=ticket).count() == 1
    assert CommandLog.objects.filter(command="close-ticket").get().error_code == "permission_denied"


def test_checks_warn_when_nothing_enforces_declared_permissions(ticket_domain):
    with fluvius_with(COMMAND_MIDDLEWARE=[]):
        assert "fluvius.W071" in [e.id for e in check_authorization()]
    assert "fluvius.W071" not in [e.id for e in check_authorization()]
    with fluvius_with(COMMAND_PERMISSIONS=True):
        assert not [e for e in check_authorization() if e.level >= checks.ERROR]
