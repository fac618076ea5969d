"""Multi-tenancy in the admin: resource pages, commands and the event browser show one tenant."""

import pytest

from django_fluvius.models import CommandLog, Event
from tests.security_support import as_user, fluvius_with, grant, run
from tests.testapp.models import Ticket
from tests.testapp.tickets import TENANCY

pytest_plugins = ["tests.security_fixtures"]
pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.security_urls")]

ADMIN = "/admin/"
STAFF_PERMS = ("testapp.view_ticket", "testapp.change_ticket", "django_fluvius.view_event",
               "django_fluvius.view_commandlog", "django_fluvius.view_snapshot")


@pytest.fixture
def tickets(people):
    acme = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "acme printer"}).aggregate_id
    globex = run(as_user(people["carol"], "globex"), "open-ticket", {"title": "globex printer"}).aggregate_id
    return {"acme": acme, "globex": globex}


@pytest.fixture
def alice_client(client, people):
    client.force_login(grant(people["alice"], *STAFF_PERMS))
    return client


def test_the_resource_list_shows_the_users_tenant_only(alice_client, tickets):
    html = alice_client.get(f"{ADMIN}testapp/ticket/").content.decode()
    assert "acme printer" in html and "globex printer" not in html


def test_another_tenants_row_page_is_not_found(alice_client, tickets):
    own = alice_client.get(f"{ADMIN}testapp/ticket/{tickets['acme']}/change/")
    assert own.status_code == 200 and "acme printer" in own.content.decode()
    other = alice_client.get(f"{ADMIN}testapp/ticket/{tickets['globex']}/change/", follow=True)
    assert "globex printer" not in other.content.decode()
    assert "doesn’t exist" in other.content.decode() or "doesn't exist" in other.content.decode()


def test_a_command_from_the_admin_on_another_tenants_row_is_not_found(alice_client, tickets):
    url = f"{ADMIN}testapp/ticket/{tickets['globex']}/command/bump-ticket/"
    assert alice_client.get(url).status_code == 404
    assert alice_client.post(url, {}).status_code == 404
    assert Event.objects.filter(aggregate_id=tickets["globex"]).count() == 1
    done = alice_client.post(f"{ADMIN}testapp/ticket/{tickets['acme']}/command/bump-ticket/", {})
    assert done.status_code == 302
    event = Event.objects.get(aggregate_id=tickets["acme"], version=2)
    assert event.tenant == "acme" and event.metadata["source"] == "admin"
    assert event.metadata["tenant"] == "acme"


def test_an_admin_action_only_reaches_the_users_rows(alice_client, tickets):
    # Even a forged selection naming another tenant's row: the queryset is scoped first.
    response = alice_client.post(f"{ADMIN}testapp/ticket/", {
        "action": "fluvius_command__bump-ticket", "_selected_action": [str(tickets["acme"]), str(tickets["globex"])],
        "_fluvius_run": "1"})
    assert response.status_code in (200, 302)
    assert Event.objects.filter(aggregate_id=tickets["acme"]).count() == 2
    assert Event.objects.filter(aggregate_id=tickets["globex"]).count() == 1


def test_the_event_browser_shows_the_users_tenant_only(alice_client, tickets):
    html = alice_client.get(f"{ADMIN}django_fluvius/event/").content.decode()
    assert str(tickets["acme"])[:8] in html and str(tickets["globex"])[:8] not in html
    assert alice_client.get(f"{ADMIN}django_fluvius/event/aggregate/{tickets['acme']}/").status_code == 200
    assert alice_client.get(f"{ADMIN}django_fluvius/event/aggregate/{tickets['globex']}/").status_code == 404
    diff = alice_client.get(f"{ADMIN}django_fluvius/event/aggregate/{tickets['globex']}/diff/",
                            {"from": 0, "to": 1})
    assert diff.status_code == 404
    globex_event = Event.objects.get(aggregate_id=tickets["globex"])
    assert alice_client.get(f"{ADMIN}django_fluvius/event/{globex_event.pk}/json/").status_code == 404
    acme_event = Event.objects.get(aggregate_id=tickets["acme"])
    assert alice_client.get(f"{ADMIN}django_fluvius/event/{acme_event.pk}/json/").status_code == 200
    other = alice_client.get(f"{ADMIN}django_fluvius/event/{globex_event.pk}/change/", follow=True)
    assert "globex printer" not in other.content.decode()


def test_the_command_log_and_snapshots_show_the_users_tenant_only(alice_client, tickets, people):
    html = alice_client.get(f"{ADMIN}django_fluvius/commandlog/").content.decode()
    assert CommandLog.objects.count() == 2
    assert str(tickets["acme"])[:8] in html and str(tickets["globex"])[:8] not in html
    with fluvius_with(TENANCY=TENANCY, SNAPSHOT_EVERY=1):
        run(as_user(people["carol"], "globex"), "bump-ticket", aggregate_id=tickets["globex"])
        run(as_user(people["alice"], "acme"), "bump-ticket", aggregate_id=tickets["acme"])
        html = alice_client.get(f"{ADMIN}django_fluvius/snapshot/").content.decode()
    assert str(tickets["acme"])[:8] in html and str(tickets["globex"])[:8] not in html


def test_staff_without_a_tenant_sees_no_rows(client, people, tickets):
    client.force_login(grant(people["eve"], *STAFF_PERMS))
    html = client.get(f"{ADMIN}testapp/ticket/").content.decode()
    assert "printer" not in html and "this request has no tenant" in html
    assert str(tickets["acme"])[:8] not in client.get(f"{ADMIN}django_fluvius/event/").content.decode()


def test_a_superuser_sees_every_tenant_when_allowed(client, people, tickets):
    client.force_login(people["root"])
    assert "acme printer" not in client.get(f"{ADMIN}testapp/ticket/").content.decode()
    with fluvius_with(TENANCY={**TENANCY,
                               "SUPERUSER_ALL_TENANTS": True}):
        html = client.get(f"{ADMIN}testapp/ticket/").content.decode()
        assert "acme printer" in html and "globex printer" in html
        events = client.get(f"{ADMIN}django_fluvius/event/").content.decode()
        assert str(tickets["acme"])[:8] in events and str(tickets["globex"])[:8] in events
    assert Ticket.objects.count() == 2
