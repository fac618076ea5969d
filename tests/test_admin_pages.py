"""What the admin pages show a person: payload summaries, times to the second, names, buttons, widgets.

The layout itself (columns that fit 1400 px, no console errors) is checked in a
real browser by tests/test_screenshots.py; these tests pin what the server sends.
"""

from __future__ import annotations

import re
import uuid

import pytest
from django.contrib.admin import widgets as admin_widgets
from django.utils import timezone

from django_fluvius import DomainContext
from django_fluvius.admin.display import summary
from django_fluvius.admin.forms import command_form_class
from django_fluvius.models import CommandLog, Event
from example_project.orders.domain import OrderDomain
from example_project.users.models import User
from tests.admin_support import PASSWORD, make_staff, user_history

EVENTS = "/admin/django_fluvius/event/"
MAP = "/admin/django_fluvius/domainmap/"


@pytest.fixture
def root(client, db):
    user = make_staff("root", superuser=True)
    client.login(username="root", password=PASSWORD)
    return user


def cells(page: str, column: str) -> list[str]:
    return re.findall(rf'<td class="field-{column}[^"]*">(.*?)</td>', page, re.S)


def test_summary_names_the_fields_of_a_payload_on_one_line():
    assert summary('{"sku": "PEN-7", "quantity": 3, "price": "1.20"}') == "sku: PEN-7, quantity: 3, price: 1.20"
    whole = summary('{"customer_id": "0003a5ca-8632-4b49-9d4c-3d972ca125bc", "items": [{"a": 1}, {"b": 2}], '
                    '"address": {"city": "Ghent", "zip": "9000"}, "note": null}')
    assert whole == "customer_id: 0003a5ca…, items: [2 items], address: {city, zip}, note: null"
    # A head cut inside the document: keys and values without quotes, marked as cut.
    assert summary('{"items": [{"sku": "BOOK-1", "qu') == "items: [{sku: BOOK-1, qu…"
    assert summary('{"bio": "' + "x" * 500 + '"}') == "bio: " + "x" * 39 + "…"  # one long value
    assert len(summary("{" + ", ".join(f'"k{i}": {i}' for i in range(100)) + "}", 80)) == 80


def test_event_list_shows_a_one_line_summary_and_seconds(client, root):
    user_history(name="Ada")
    page = client.get(EVENTS).content.decode()
    previews = [re.sub(r"<[^>]+>", "", c) for c in cells(page, "payload_preview")]
    assert "name: Ada, email: ada@example.com, active: true" in previews
    created = Event.objects.order_by("position").first().created
    shown = timezone.localtime(created).strftime("%Y-%m-%d %H:%M:%S")
    assert f'datetime="{created.isoformat()}">{shown}</time>' in page
    # The log tables open without the app sidebar; the stylesheet sets their columns.
    assert 'id="nav-sidebar"' not in page and "django_fluvius/admin.css" in page


def test_an_event_page_offers_the_timeline_not_an_empty_history(client, root):
    user_id = user_history()
    event = Event.objects.get(aggregate_id=user_id, version=2)
    page = client.get(f"{EVENTS}{event.pk}/change/").content.decode()
    assert "/history/" not in page
    assert f'href="/admin/django_fluvius/event/aggregate/{user_id}/?page=1#v2" class="fluvius-timeline-link"' in page


def test_command_log_reads_commands_as_words_with_the_key_beside(client, root):
    user_history()
    page = client.get("/admin/django_fluvius/commandlog/").content.decode()
    assert '<span title="deactivate-user" data-command="deactivate-user">Deactivate user</span>' in page
    assert f"{CommandLog.objects.count()} command log entries" in page


def test_plural_names_are_plural_and_the_projection_page_has_one_name(client, root):
    index = client.get("/admin/").content.decode()
    for name in ("Command log entries", "Projections", "Domain map"):
        assert f">{name}</a>" in index
    assert "Outbox" not in index  # the event log is the outbox (issue 14)
    assert "Projection checkpoints" not in index
    page = client.get("/admin/django_fluvius/checkpoint/").content.decode()
    assert "<title>Projections |" in page and "checkpoint" not in re.search(
        r'<div class="breadcrumbs">(.*?)</div>', page, re.S).group(1).lower()


def test_aggregate_page_has_timeline_and_humanized_command_buttons(client, root):
    user_id = user_history(name="Bo", email="bo@example.com")
    page = client.get(f"/admin/app_user/user/{user_id}/change/").content.decode()
    assert "/history/" not in page and "fluvius-timeline-link" in page
    assert 'data-command="rename-user" title="rename-user">Rename user</a>' in page
    user = User.objects.get(pk=user_id)
    shown = timezone.localtime(user.updated_at).strftime("%Y-%m-%d %H:%M:%S")
    assert f">{shown}</time>" in page  # the row's times to the second
    listing = client.get("/admin/app_user/user/").content.decode()
    assert f">{shown}</time>" in listing
    assert 'data-command="create-user" title="create-user">Create user</a>' in listing
    assert '<option value="fluvius_command__rename-user">Rename user…</option>' in listing


def test_command_forms_use_the_admin_widgets():
    specs = OrderDomain.commands()
    form = command_form_class(specs["schedule-delivery"])()
    assert isinstance(form.fields["deliver_on"].widget, admin_widgets.AdminDateWidget)
    assert [value for value, _label in form.fields["slot"].choices] == ["", "morning", "afternoon", "evening"]
    assert form.fields["slot"].initial == "morning"
    place = command_form_class(specs["place-order"])()
    assert isinstance(place.fields["customer_id"].widget, admin_widgets.AdminUUIDInputWidget)
    assert isinstance(place.fields["items"].widget, admin_widgets.AdminTextareaWidget)


def test_the_command_page_loads_the_calendar_and_names_the_command(client, root):
    domain = OrderDomain(DomainContext.create(namespace="app-order"))
    order = domain.process_command(domain.create_command(
        "place-order", {"customer_id": str(uuid.uuid4()), "items": [{"sku": "a", "quantity": 1, "price": "2"}]}))
    domain.process_command(domain.create_command("pay-order", {"amount": "2"}, aggregate_id=order.aggregate_id))
    url = f"/admin/app_order/order/{order.aggregate_id}/command/schedule-delivery/"
    page = client.get(url).content.decode()
    assert "<h1>Schedule delivery <code" in page and ">schedule-delivery</code></h1>" in page
    assert "admin/js/calendar.js" in page and "admin/js/admin/DateTimeShortcuts.js" in page
    assert "/admin/jsi18n/" in page and 'class="vDateField"' in page
    assert 'value="Schedule delivery"' in page
    done = client.post(url, {"deliver_on": "2026-12-24", "slot": "evening", "_expected_version": "2"},
                       follow=True)
    assert "Schedule delivery: done" in done.content.decode()
    event = Event.objects.get(aggregate_id=order.aggregate_id, version=3)
    assert event.payload == {"delivery": {"on": "2026-12-24", "slot": "evening"}}


def test_domain_map_pages_draw_each_domain_from_the_code(client, root):
    index = client.get(MAP).content.decode()
    assert 'href="app-order/"' in index and 'href="app-user/"' in index
    page = client.get(f"{MAP}app-user/").content.decode()
    row = re.search(r'data-command="deactivate-user".*?<div class="fluvius-subs">(.*?)</div>\s*</div>',
                    page, re.S)
    assert row is not None
    assert 'data-evt-key="user-deactivated"' in page
    assert "fluvius-kind-process-manager" in row.group(1)
    assert 'href="/admin/django_fluvius/domainmap/app-order/#cmd-app-order-cancel-order"' in row.group(1)
    assert "<script" not in page.split("</head>", 1)[1]  # drawn on the server, no script
    assert client.get(f"{MAP}app-nothing/").status_code == 404


def test_domain_map_needs_its_view_permission(client, db):
    make_staff("clerk", "django_fluvius.view_event")
    client.login(username="clerk", password=PASSWORD)
    assert client.get(MAP).status_code == 403
    make_staff("reader", "django_fluvius.view_domainmap")
    client.login(username="reader", password=PASSWORD)
    assert client.get(f"{MAP}app-user/").status_code == 200
