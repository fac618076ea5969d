"""Multi-tenancy: nobody reads or changes another tenant's aggregates, on any path.

The ticket domain (tests/testapp/tickets.py) is tenant-scoped; users and their
tenants are in tests/security_support.py. Another tenant's aggregate must answer
exactly as a missing one (404, same words), and nothing may be stored.
"""

import uuid

import pytest
from django.core.management import call_command
from django.db import connection

from django_fluvius import AggregateNotFound, DomainContext, QueryBuilder
from django_fluvius.context import use_context
from django_fluvius.delivery.process import context_for
from django_fluvius.exceptions import ConfigurationError, TenantRequired
from django_fluvius.middleware import context_from_request
from django_fluvius.models import CommandLog, Event
from django_fluvius.ops.rebuild import rebuild
from django_fluvius.security.tenancy import check_tenancy, resolve_tenant
from django_fluvius.write.cache import aggregate_cache
from tests.security_support import api, as_user, ctx, fluvius_with, run
from tests.testapp.models import Ticket
from tests.testapp.tickets import TENANCY, TicketDomain

pytest_plugins = ["tests.security_fixtures"]
pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security_urls")]

COMMANDS = [("retitle-ticket", {"title": "taken over"}), ("close-ticket", {}), ("claim-ticket", {}),
            ("bump-ticket", {}), ("escalate-ticket", {})]


@pytest.fixture
def acme_ticket(people):
    return run(as_user(people["alice"], "acme"), "open-ticket", {"title": "acme printer"}).aggregate_id


@pytest.fixture
def globex_ticket(people):
    return run(as_user(people["carol"], "globex"), "open-ticket", {"title": "globex printer"}).aggregate_id


def missing_message(aggregate_id):
    return f"No test-tickets aggregate with id {aggregate_id}."


def stored(aggregate_id):
    return list(Event.objects.filter(aggregate_id=aggregate_id).values_list("version", "evt_key"))


# -- the tenant is stamped -----------------------------------------------------------------------


def test_a_create_stamps_its_tenant_on_the_event_the_row_and_the_log(people):
    result = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "x"})
    event = Event.objects.get(aggregate_id=result.aggregate_id)
    assert event.tenant == "acme" and event.metadata["tenant"] == "acme"
    assert Ticket.objects.get(pk=result.aggregate_id).tenant == "acme"
    assert CommandLog.objects.get(command_id=result.command.id).tenant == "acme"


def test_later_events_carry_the_aggregates_tenant_whoever_acts(people, acme_ticket):
    # A system context (a Celery task, a management command) has no tenant of its own.
    run(TicketDomain(DomainContext.system()), "bump-ticket", aggregate_id=acme_ticket)
    event = Event.objects.get(aggregate_id=acme_ticket, version=2)
    assert event.tenant == "acme" and "tenant" not in event.metadata
    assert CommandLog.objects.filter(aggregate_id=acme_ticket, status="done").latest("id").tenant == "acme"
    assert Ticket.objects.get(pk=acme_ticket).tenant == "acme"


def test_a_forged_tenant_in_a_payload_is_refused_and_nothing_is_stored(people):
    domain = as_user(people["carol"], "globex")
    with pytest.raises(Exception) as info:
        run(domain, "open-ticket", {"title": "x", "tenant": "acme"})
    assert getattr(info.value, "errors", {}) == {"tenant": ["Unknown field."]}
    assert not Ticket.objects.exists() and not Event.objects.exists()


# -- Python paths: commands -----------------------------------------------------------------------


@pytest.mark.parametrize(("key", "payload"), COMMANDS)
def test_another_tenants_aggregate_is_not_found_by_any_command(people, acme_ticket, key, payload):
    carol = as_user(people["carol"], "globex")  # carol may close tickets: it is the tenant that stops her
    with pytest.raises(AggregateNotFound) as other:
        run(carol, key, payload, aggregate_id=acme_ticket)
    nowhere = uuid.uuid4()
    with pytest.raises(AggregateNotFound) as missing:
        run(carol, key, payload, aggregate_id=nowhere)
    assert str(other.value) == missing_message(acme_ticket)
    assert str(missing.value) == missing_message(nowhere)
    assert (other.value.code, other.value.status_code) == (missing.value.code, missing.value.status_code)
    assert stored(acme_ticket) == [(1, "ticket-opened")]
    assert Ticket.objects.get(pk=acme_ticket).version == 1
    log = CommandLog.objects.filter(aggregate_id=acme_ticket, command=key).get()
    assert (log.status, log.error_code, log.tenant) == ("rejected", "not_found", "globex")


def test_a_cached_aggregate_does_not_bypass_the_tenant_check(people, acme_ticket):
    alice = as_user(people["alice"], "acme")
    run(alice, "bump-ticket", aggregate_id=acme_ticket)
    # Fill the cache as a commit would (a test transaction never commits).
    loaded = TicketDomain(DomainContext.system()).load(acme_ticket)
    aggregate_cache.put("default", acme_ticket, "test-tickets", "ticket", loaded.version, loaded.state,
                        loaded.created, loaded.updated, loaded.tenant)
    assert aggregate_cache.get("default", acme_ticket).tenant == "acme"
    carol = as_user(people["carol"], "globex")
    with pytest.raises(AggregateNotFound, match=str(acme_ticket)):
        run(carol, "bump-ticket", aggregate_id=acme_ticket)
    assert stored(acme_ticket) == [(1, "ticket-opened"), (2, "ticket-bumped")]
    # ... while its own tenant is served from the cache.
    result = run(alice, "bump-ticket", aggregate_id=acme_ticket)
    assert result.version == 3


@pytest.mark.django_db(transaction=True)
def test_a_cache_filled_by_a_real_commit_is_checked_too(people):
    alice = as_user(people["alice"], "acme")
    ticket = run(alice, "open-ticket", {"title": "committed"}).aggregate_id
    run(alice, "bump-ticket", aggregate_id=ticket)
    entry = aggregate_cache.get(connection.alias, ticket)
    assert entry is not None and entry.tenant == "acme" and entry.version == 2
    with pytest.raises(AggregateNotFound):
        run(as_user(people["carol"], "globex"), "bump-ticket", aggregate_id=ticket)
    assert Event.objects.filter(aggregate_id=ticket).count() == 2


def test_a_context_without_a_tenant_is_refused(people, acme_ticket):
    eve = as_user(people["eve"], None)
    with pytest.raises(TenantRequired) as info:
        run(eve, "open-ticket", {"title": "x"})
    assert info.value.status_code == 400 and info.value.code == "tenant_required"
    with pytest.raises(TenantRequired):
        run(eve, "bump-ticket", aggregate_id=acme_ticket)
    with pytest.raises(TenantRequired):
        eve.statemgr.find("ticket").count()
    with pytest.raises(TenantRequired):
        eve.load(acme_ticket)
    assert stored(acme_ticket) == [(1, "ticket-opened")]
    assert Ticket.objects.count() == 1


def test_a_superuser_sees_every_tenant_only_when_allowed(people, acme_ticket, globex_ticket):
    root = as_user(people["root"], None)
    with pytest.raises(TenantRequired):
        list(root.statemgr.find("ticket"))
    with fluvius_with(TENANCY={"USER_TENANT": None, "SUPERUSER_ALL_TENANTS": True}):
        assert root.statemgr.find("ticket").count() == 2
        run(root, "bump-ticket", aggregate_id=globex_ticket)
        with pytest.raises(TenantRequired):  # a new aggregate still needs a tenant
            run(root, "open-ticket", {"title": "whose?"})
    assert Event.objects.get(aggregate_id=globex_ticket, version=2).tenant == "globex"


# -- Python paths: reads ----------------------------------------------------------------------


def test_reads_see_the_contexts_tenant_only(people, acme_ticket, globex_ticket):
    carol = as_user(people["carol"], "globex")
    assert [t.pk for t in carol.statemgr.find("ticket")] == [globex_ticket]
    assert carol.statemgr.fetch("ticket", globex_ticket).title == "globex printer"
    with pytest.raises(AggregateNotFound):
        carol.statemgr.fetch("ticket", acme_ticket)
    assert carol.statemgr.find("ticket", title="acme printer").count() == 0
    query = QueryBuilder("test-tickets.ticket", context=ctx(people["carol"], "globex"))
    assert [t.pk for t in query.execute()] == [globex_ticket]
    assert query.filter(title__icontains="printer").count() == 1
    params = QueryBuilder.from_params("ticket", {"title": "acme printer"}, domain=TicketDomain,
                                      context=ctx(people["carol"], "globex"))
    assert params.execute() == []


def test_load_and_time_travel_answer_as_for_a_missing_aggregate(people, acme_ticket):
    carol = as_user(people["carol"], "globex")
    nowhere = uuid.uuid4()
    for kwargs in ({}, {"version": 1}):
        with pytest.raises(AggregateNotFound) as other:
            carol.load(acme_ticket, **kwargs)
        with pytest.raises(AggregateNotFound) as missing:
            carol.load(nowhere, **kwargs)
        assert str(other.value).replace(str(acme_ticket), "ID") == str(missing.value).replace(str(nowhere), "ID")
    at = Event.objects.get(aggregate_id=acme_ticket).created
    with pytest.raises(AggregateNotFound) as other:
        carol.load(acme_ticket, at=at)
    with pytest.raises(AggregateNotFound) as missing:
        carol.load(nowhere, at=at)
    assert str(other.value).replace(str(acme_ticket), "ID") == str(missing.value).replace(str(nowhere), "ID")
    assert as_user(people["alice"], "acme").load(acme_ticket, version=1).tenant == "acme"


def test_a_snapshot_keeps_the_tenant_check(people):
    alice = as_user(people["alice"], "acme")
    with fluvius_with(TENANCY=TENANCY, SNAPSHOT_EVERY=2):
        ticket = run(alice, "open-ticket", {"title": "snap"}).aggregate_id
        run(alice, "bump-ticket", aggregate_id=ticket)  # version 2: a snapshot, no event after it
        loaded = alice.load(ticket)
        assert loaded.version == 2 and loaded.tenant == "acme"
        with pytest.raises(AggregateNotFound):
            as_user(people["carol"], "globex").load(ticket)
        with pytest.raises(AggregateNotFound):
            run(as_user(people["carol"], "globex"), "bump-ticket", aggregate_id=ticket)


def test_a_rebuilt_projection_keeps_each_rows_tenant(people, acme_ticket, globex_ticket):
    Ticket.objects.all().delete()
    rebuild(["test-tickets.ticket"], progress=False)
    assert dict(Ticket.objects.values_list("pk", "tenant")) == {acme_ticket: "acme", globex_ticket: "globex"}


# -- system contexts: Celery tasks, management commands, handlers ---------------------------------------


def test_a_domain_built_without_a_context_outside_a_request_is_system(people, acme_ticket, globex_ticket):
    domain = TicketDomain()
    assert domain.context.is_system and domain.context.tenant is None
    assert domain.statemgr.find("ticket").count() == 2
    with pytest.raises(TenantRequired):
        run(domain, "open-ticket", {"title": "no tenant"})
    scoped = TicketDomain(DomainContext.system(tenant="globex"))
    assert [t.pk for t in scoped.statemgr.find("ticket")] == [globex_ticket]
    with pytest.raises(AggregateNotFound):
        run(scoped, "bump-ticket", aggregate_id=acme_ticket)


def test_the_current_context_is_what_a_domain_without_one_uses(people, acme_ticket, globex_ticket):
    with use_context(ctx(people["carol"], "globex")):
        domain = TicketDomain()
        assert not domain.context.is_system
        assert [t.pk for t in domain.statemgr.find("ticket")] == [globex_ticket]
        assert [t.pk for t in QueryBuilder("ticket").execute()] == [globex_ticket]
    assert TicketDomain().context.is_system


def test_a_command_issued_for_an_event_keeps_the_events_tenant(people, acme_ticket):
    event = Event.objects.get(aggregate_id=acme_ticket)
    context = context_for(event, namespace="test-tickets")
    assert context.is_system and context.tenant == "acme"
    domain = TicketDomain(context)
    assert [t.pk for t in domain.statemgr.find("ticket")] == [acme_ticket]


def test_a_handler_runs_as_system_even_inline_on_a_requests_commit(people, acme_ticket):
    from django_fluvius.delivery.handlers import HandlerSpec, handlers
    from django_fluvius.testing import capture_dispatch

    seen = []

    def handler(event):
        seen.append(TicketDomain().context)

    handlers.register(HandlerSpec(name="tests.tenancy.handler", func=handler, evt_keys=("ticket-bumped",)))
    try:
        with capture_dispatch():
            response = api(people["alice"]).post(f"/api/test-tickets/bump-ticket/{acme_ticket}/", {},
                                                 format="json")
    finally:
        handlers.unregister("tests.tenancy.handler")
    assert response.status_code == 200
    assert len(seen) == 1 and seen[0].is_system and seen[0].user is None


def test_a_celery_task_runs_handlers_as_system_and_their_commands_keep_the_tenant(people, acme_ticket):
    """The Celery delivery task's own code path (tasks.deliver -> run_attempt -> the handler), run in-process."""
    from django_fluvius import tasks
    from django_fluvius.delivery.handlers import HandlerSpec, handlers
    from django_fluvius.delivery.process import issue

    seen = []

    def escalate_on_open(event):
        domain = TicketDomain()
        seen.append((domain.context.is_system, domain.statemgr.find("ticket").count()))
        issue(TicketDomain, "bump-ticket", caused_by=event, aggregate_id=event.aggregate_id)

    run(as_user(people["carol"], "globex"), "open-ticket", {"title": "globex one"})
    handlers.register(HandlerSpec(name="tests.tenancy.escalate", func=escalate_on_open,
                                  evt_keys=("ticket-opened",)))
    opened = Event.objects.get(aggregate_id=acme_ticket, version=1)
    try:
        with use_context(ctx(people["carol"], "globex")):  # a worker has no request; nor may a leftover
            outcome = tasks.deliver([["tests.tenancy.escalate", opened.position, 1, 0]])
    finally:
        handlers.unregister("tests.tenancy.escalate")
    assert outcome == {"done": 1}
    assert seen == [(True, 2)]  # system: every tenant's tickets
    bumped = Event.objects.get(aggregate_id=acme_ticket, version=2)
    assert bumped.tenant == "acme" and bumped.metadata["tenant"] == "acme"
    assert bumped.metadata["source"] == "process-manager" and bumped.user == ""
    assert bumped.causation_id == f"event:{opened.position}" and bumped.correlation_id == opened.correlation_id
    assert CommandLog.objects.get(command="bump-ticket").tenant == "acme"


def test_a_management_command_gets_a_system_context(people, acme_ticket, globex_ticket, capsys):
    call_command("shell", command=(
        "from tests.testapp.tickets import TicketDomain; d = TicketDomain(); "
        "print(d.context.is_system, d.context.source, d.statemgr.find('ticket').count())"))
    assert capsys.readouterr().out.strip().splitlines()[-1].split() == ["True", "python", "2"]


# -- REST ----------------------------------------------------------------------------------------


def test_rest_lists_and_items_of_another_tenant_are_not_found(people, acme_ticket, globex_ticket):
    carol = api(people["carol"])
    listed = carol.get("/api/test-tickets/ticket/").json()
    assert [row["id"] for row in listed["results"]] == [str(globex_ticket)]
    nowhere = uuid.uuid4()
    for suffix in ("", "events/", "?version=1"):
        other = carol.get(f"/api/test-tickets/ticket/{acme_ticket}/{suffix}")
        missing = carol.get(f"/api/test-tickets/ticket/{nowhere}/{suffix}")
        assert other.status_code == missing.status_code == 404, suffix
        assert other.json()["code"] == missing.json()["code"]
        assert other.json()["message"].replace(str(acme_ticket), "ID") == \
            missing.json()["message"].replace(str(nowhere), "ID")


@pytest.mark.parametrize(("key", "payload"), COMMANDS)
def test_rest_commands_on_another_tenants_aggregate_are_not_found(people, acme_ticket, key, payload):
    response = api(people["carol"]).post(f"/api/test-tickets/{key}/{acme_ticket}/", payload, format="json")
    assert response.status_code == 404 and response.json() == {
        "code": "not_found", "message": missing_message(acme_ticket)}
    assert stored(acme_ticket) == [(1, "ticket-opened")]


def test_rest_create_uses_the_users_tenant_and_ignores_forged_ones(people):
    carol = api(people["carol"])
    forged = carol.post("/api/test-tickets/open-ticket/", {"title": "x", "tenant": "acme"}, format="json")
    assert forged.status_code == 400 and forged.json()["errors"] == {"tenant": ["Unknown field."]}
    response = carol.post("/api/test-tickets/open-ticket/", {"title": "mine"}, format="json",
                          HTTP_X_TENANT_ID="acme", HTTP_X_USER_ID=str(people["alice"].pk))
    assert response.status_code == 201
    row = Ticket.objects.get()
    assert (row.tenant, row.owner) == ("globex", str(people["carol"].pk))
    event = Event.objects.get()
    assert (event.tenant, event.user) == ("globex", str(people["carol"].pk))
    # The header named a tenant carol does not belong to: ignored, never trusted.
    assert len(carol.get("/api/test-tickets/ticket/", HTTP_X_TENANT_ID="acme").json()["results"]) == 1


def test_rest_a_user_of_several_tenants_says_which(people, acme_ticket, globex_ticket):
    dave = api(people["dave"])
    unsure = dave.get("/api/test-tickets/ticket/")
    assert unsure.status_code == 400 and unsure.json()["code"] == "tenant_required"
    created = dave.post("/api/test-tickets/open-ticket/", {"title": "?"}, format="json")
    assert created.status_code == 400 and created.json()["code"] == "tenant_required"
    for tenant, ticket in (("acme", acme_ticket), ("globex", globex_ticket)):
        rows = dave.get("/api/test-tickets/ticket/", HTTP_X_TENANT_ID=tenant).json()["results"]
        assert [row["id"] for row in rows] == [str(ticket)]
    strange = dave.get("/api/test-tickets/ticket/", HTTP_X_TENANT_ID="initech")
    assert strange.status_code == 400 and strange.json()["code"] == "tenant_required"
    bumped = dave.post(f"/api/test-tickets/bump-ticket/{globex_ticket}/", {}, format="json",
                       HTTP_X_TENANT_ID="globex")
    assert bumped.status_code == 200
    crossed = dave.post(f"/api/test-tickets/bump-ticket/{globex_ticket}/", {}, format="json",
                        HTTP_X_TENANT_ID="acme")
    assert crossed.status_code == 404
    assert Event.objects.filter(aggregate_id=globex_ticket).count() == 2
    assert Event.objects.filter(aggregate_id=globex_ticket).count() == 2


def test_rest_users_without_a_tenant(people, acme_ticket):
    for name in ("eve", "root"):
        response = api(people[name]).get("/api/test-tickets/ticket/")
        assert response.status_code == 400 and response.json()["code"] == "tenant_required", name
    assert api().get("/api/test-tickets/ticket/").status_code == 403  # anonymous: DRF says no first


def test_rest_the_context_carries_correlation_user_tenant_and_address(people):
    response = api(people["alice"]).post("/api/test-tickets/open-ticket/", {"title": "traced"}, format="json",
                                         HTTP_X_CORRELATION_ID="trace-42", REMOTE_ADDR="10.1.2.3")
    assert response.status_code == 201 and response["X-Correlation-ID"] == "trace-42"
    event = Event.objects.get()
    assert (event.correlation_id, event.tenant, event.user) == ("trace-42", "acme", str(people["alice"].pk))
    assert event.metadata["client_address"] == "10.1.2.3" and event.metadata["source"] == "http"
    log = CommandLog.objects.get()
    assert (log.correlation_id, log.tenant, log.user) == ("trace-42", "acme", str(people["alice"].pk))


# -- the request context -----------------------------------------------------------------------


def test_the_resolver_trusts_the_header_only_for_a_members_tenant(people, rf):
    request = rf.get("/", HTTP_X_TENANT_ID="globex")
    assert resolve_tenant(request, people["dave"]) == "globex"
    assert resolve_tenant(request, people["alice"]) == "acme"   # not hers: ignored, her own tenant
    assert resolve_tenant(request, people["eve"]) is None
    assert resolve_tenant(rf.get("/"), people["dave"]) is None  # two tenants, none named


def test_context_from_request_is_built_once_per_user(people, rf, django_assert_num_queries):
    request = rf.get("/", HTTP_X_CORRELATION_ID="abc")
    request.user = people["alice"]
    with django_assert_num_queries(1):  # the memberships, once
        first = context_from_request(request, "test-tickets")
        again = context_from_request(request, "test-tickets")
    assert first == again and (first.tenant, first.correlation_id, first.source) == ("acme", "abc", "http")
    admin = context_from_request(request, source="admin")
    assert admin.source == "admin" and admin.tenant == "acme" and admin.correlation_id == "abc"
    request.user = people["carol"]
    assert context_from_request(request).tenant == "globex"


# -- configuration ----------------------------------------------------------------------------


def test_checks_refuse_a_tenant_scoped_resource_without_a_tenant_field(ticket_domain):
    from django_fluvius.registry import domains
    from tests.testapp.domain import NoteDomain

    class TenantNotes(NoteDomain):
        __namespace__ = "test-tenant-notes-check"
        __tenancy__ = True

    domains.register(TenantNotes)
    try:
        ids = [e.id for e in check_tenancy() if e.obj is TenantNotes]
        assert ids == ["fluvius.E070", "fluvius.E070"]  # note and folder
        with pytest.raises(ConfigurationError, match="has no 'tenant' field"):
            TenantNotes(ctx(tenant="acme")).statemgr.find("note")
    finally:
        domains.unregister("test-tenant-notes-check")


def test_checks_on_the_tenancy_setting(ticket_domain):
    def ours():
        return [e.id for e in check_tenancy() if e.obj in (None, TicketDomain)]

    assert ours() == []
    with fluvius_with(TENANCY={"NOPE": 1}):
        assert ours() == ["fluvius.E071"]
    with fluvius_with(TENANCY=None):
        assert ours() == ["fluvius.W070"]  # the ticket domain says __tenancy__ = True
    # With tenancy on for every domain, the example domains' models lack a tenant field.
    from example_project.users.domain import UserDomain

    assert "fluvius.E070" in [e.id for e in check_tenancy() if e.obj is UserDomain]


def test_a_domain_can_opt_out_of_tenancy(people):
    from example_project.users.domain import UserDomain

    class SharedUsers(UserDomain):
        __tenancy__ = False

    eve = DomainContext.create(namespace="app-user", user=people["eve"])  # no tenant
    result = run(SharedUsers(eve), "create-user", {"name": "Eve", "email": "eve@example.com"})
    assert SharedUsers(eve).statemgr.fetch("user", result.aggregate_id).name == "Eve"
    with pytest.raises(TenantRequired):  # the same domain, following FLUVIUS['TENANCY']
        UserDomain(eve).statemgr.fetch("user", result.aggregate_id)


# -- DomainContextMiddleware -------------------------------------------------------------------


def test_a_plain_view_acts_for_the_request_through_the_current_context(client, people, acme_ticket, globex_ticket):
    client.force_login(people["carol"])
    response = client.get("/mine/", HTTP_X_CORRELATION_ID="req-7", HTTP_X_TENANT_ID="acme")
    body = response.json()
    assert body == {"user": str(people["carol"].pk), "tenant": "globex", "system": False,
                    "correlation_id": "req-7", "titles": ["globex printer"]}
    assert response["X-Correlation-ID"] == "req-7"
    made = client.get("/mine/", HTTP_X_CORRELATION_ID="not a valid id!")
    assert made["X-Correlation-ID"] == made.json()["correlation_id"] != "not a valid id!"
    client.logout()
    anonymous = client.get("/mine/")
    assert anonymous.status_code == 400 and anonymous.json()["code"] == "tenant_required"


def test_the_middleware_on_an_async_stack(async_client, people, acme_ticket, globex_ticket):
    from asgiref.sync import async_to_sync

    async_client.force_login(people["alice"])
    for path in ("/mine-async/", "/api/test-tickets/ticket/"):
        response = async_to_sync(async_client.get)(path, headers={"X-Correlation-ID": "async-1"})
        assert response.status_code == 200, path
        assert response["X-Correlation-ID"] == "async-1"
    assert async_to_sync(async_client.get)("/mine-async/").json()["titles"] == ["acme printer"]


def test_tenancy_true_reads_the_users_tenant_attribute(people, rf):
    alice = people["alice"]
    alice.tenant = "acme"  # as a custom user model's field would
    with fluvius_with(TENANCY=True):
        request = rf.get("/")
        request.user = alice
        assert context_from_request(request).tenant == "acme"
        assert resolve_tenant(request, people["bob"]) is None  # no such attribute: no tenant
        assert "fluvius.E071" not in [e.id for e in check_tenancy()]  # True is a valid setting


def test_a_resolver_of_your_own(people, rf):
    def by_subdomain(request, user):
        host = request.META.get("HTTP_HOST", "").split(".")[0]
        return host if user.memberships.filter(tenant=host).exists() else None

    with fluvius_with(TENANCY={"RESOLVER": by_subdomain}):
        request = rf.get("/", HTTP_HOST="globex.example.com")
        request.user = people["dave"]
        assert context_from_request(request).tenant == "globex"
        request = rf.get("/", HTTP_HOST="globex.example.com")
        request.user = people["alice"]
        assert context_from_request(request).tenant is None
