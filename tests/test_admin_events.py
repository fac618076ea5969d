"""The event browser through Django's test client: list, filters, search, one event,
timelines, diffs, and the answers to bad input."""

from __future__ import annotations

import datetime
import re
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_fluvius import DomainContext
from django_fluvius.admin import filters
from django_fluvius.admin.pagination import EstimatedCountPaginator
from django_fluvius.models import Event
from example_project.orders.domain import OrderDomain
from tests.admin_support import make_staff, user_history
from tests.testapp.domain import NoteDomain

pytestmark = pytest.mark.django_db

EVENTS = "/admin/django_fluvius/event/"


def timeline_url(aggregate_id):
    return reverse("admin:django_fluvius_event_timeline", args=[aggregate_id])


def diff_url(aggregate_id):
    return reverse("admin:django_fluvius_event_diff", args=[aggregate_id])


def listed(response):
    return [(e.evt_key, e.aggregate_id) for e in response.context["cl"].result_list]


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def root(client):
    user = make_staff("root", superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def history(root):
    """A user with three versions (by root) and an order placed by nobody in particular."""
    user_id = user_history(root)
    order = OrderDomain().process_command(OrderDomain().create_command(
        "place-order", {"customer_id": str(uuid.uuid4()),
                        "items": [{"sku": "tea", "quantity": 2, "price": "4.50"}]}))
    return user_id, order.aggregate_id


# -- the list ---------------------------------------------------------------

def test_list_shows_newest_first_with_links_to_each_timeline(client, history):
    user_id, order_id = history
    response = client.get(EVENTS)
    assert response.status_code == 200
    assert listed(response) == [("order-placed", order_id), ("user-deactivated", user_id),
                                ("user-renamed", user_id), ("user-created", user_id)]
    html = response.content.decode()
    assert f'href="{timeline_url(user_id)}"' in html
    assert "root (" in html  # the username from the metadata, with the user id
    # Read-only: no add button, no action box (so no bulk delete).
    assert reverse("admin:django_fluvius_event_add") not in html and 'name="action"' not in html


@pytest.mark.parametrize("query, expected", [
    ({"namespace": "app-order"}, ["order-placed"]),
    ({"namespace": "app-user", "evt_key": "user-renamed"}, ["user-renamed"]),
    ({"evt_key": "order-placed"}, ["order-placed"]),
    ({"user": "root"}, ["user-deactivated", "user-renamed", "user-created"]),
    ({"created__gte": "2999-01-01 00:00:00+00:00"}, []),
])
def test_list_filters(client, history, query, expected):
    response = client.get(EVENTS, query)
    assert response.status_code == 200
    assert [key for key, _ in listed(response)] == expected


def test_filters_by_aggregate_user_id_correlation_and_command(client, root, history):
    user_id, order_id = history
    first = Event.objects.get(aggregate_id=user_id, version=1)
    assert [k for k, _ in listed(client.get(EVENTS, {"aggregate": str(order_id)}))] == ["order-placed"]
    assert len(listed(client.get(EVENTS, {"user": str(root.pk)}))) == 3
    # One context, one correlation id for the user's three commands; the order has its own.
    assert len(listed(client.get(EVENTS, {"correlation": first.correlation_id}))) == 3
    order_event = Event.objects.get(aggregate_id=order_id)
    assert listed(client.get(EVENTS, {"correlation": order_event.correlation_id})) == [("order-placed", order_id)]
    assert listed(client.get(EVENTS, {"command": str(first.command_id)})) == [("user-created", user_id)]
    today = f"{timezone.now().date().isoformat()} 00:00:00+00:00"
    tomorrow = f"{(timezone.now().date() + datetime.timedelta(days=1)).isoformat()} 00:00:00+00:00"
    assert len(listed(client.get(EVENTS, {"created__gte": today, "created__lt": tomorrow}))) == 4


def test_filter_choices_come_from_the_registry(client, history):
    html = client.get(EVENTS).content.decode()
    for key in ("user-created", "order-paid", "note-created"):  # order-paid was never stored
        assert f"evt_key={key}" in html
    for namespace in ("app-user", "app-order", "test-notes"):
        assert f"namespace={namespace}" in html
    # With a namespace chosen, only its event keys are offered.
    html = client.get(EVENTS, {"namespace": "app-order"}).content.decode()
    assert "evt_key=order-paid" in html and "evt_key=user-created" not in html


def test_an_event_key_filter_alone_finds_the_key_in_every_namespace_by_the_key_index(client, history):
    """Also in a namespace no domain declares any more; read by the (namespace, evt_key, ...) index."""
    user_id, _order = history
    retired = Event.objects.create(namespace="retired-ns", resource="user", aggregate_id=uuid.uuid4(),
                                   version=1, evt_key="user-created", payload={})
    Event.objects.create(namespace="retired-ns", resource="user", aggregate_id=uuid.uuid4(), version=1,
                         evt_key="user-archived", payload={})
    with CaptureQueriesContext(connection) as captured:
        found = listed(client.get(EVENTS, {"evt_key": "user-created"}))
    assert sorted(found, key=str) == sorted([("user-created", user_id), ("user-created", retired.aggregate_id)],
                                            key=str)
    assert any("WITH RECURSIVE" in q["sql"] for q in captured.captured_queries), "namespaces named"
    both = listed(client.get(EVENTS, {"evt_key": "user-created", "namespace": "retired-ns"}))
    assert both == [("user-created", retired.aggregate_id)]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")  # a table this small is read whole otherwise
            cursor.execute("EXPLAIN SELECT 1 FROM django_fluvius_event WHERE evt_key = 'user-created' AND namespace "
                           f"IN ({filters._STORED_NAMESPACES.format(table='django_fluvius_event', namespace='namespace')})")
            plan = "\n".join(row[0] for row in cursor.fetchall())
            cursor.execute("RESET enable_seqscan")
        assert "fluvius_event_key_feed" in plan, plan


def test_a_malformed_aggregate_filter_says_so_instead_of_failing(client, history):
    response = client.get(EVENTS, {"aggregate": "not-a-uuid"})
    assert response.status_code == 200
    assert listed(response) == []
    assert any("'not-a-uuid' is not a valid aggregate id (a UUID)" in m for m in messages_of(response))
    response = client.get(EVENTS, {"command": "12"})
    assert response.status_code == 200 and listed(response) == []


def test_search_by_aggregate_id_command_id_or_position(client, history):
    user_id, order_id = history
    assert len(listed(client.get(EVENTS, {"q": str(user_id)}))) == 3
    assert len(listed(client.get(EVENTS, {"q": user_id.hex}))) == 3
    event = Event.objects.get(aggregate_id=order_id)
    assert listed(client.get(EVENTS, {"q": str(event.command_id)})) == [("order-placed", order_id)]
    assert listed(client.get(EVENTS, {"q": str(event.position)})) == [("order-placed", order_id)]
    response = client.get(EVENTS, {"q": "robert'); drop table"})
    assert response.status_code == 200 and listed(response) == []
    assert any("neither an id" in m for m in messages_of(response))


def test_list_never_counts_the_whole_table(client, history):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(EVENTS).status_code == 200
        assert client.get(EVENTS, {"namespace": "app-user"}).status_code == 200
    counts = [q["sql"] for q in queries.captured_queries
              if "COUNT(" in q["sql"].upper() and "django_fluvius_event" in q["sql"]]
    assert counts, "the list should count (up to a cap)"
    assert all("LIMIT" in sql.upper() for sql in counts), counts
    # The list reads a prefix of each payload, not the whole document.
    table = connection.ops.quote_name("django_fluvius_event")
    selects = [q["sql"] for q in queries.captured_queries if f"FROM {table}" in q["sql"]
               and "ORDER BY" in q["sql"]]
    assert selects and all(re.search(r"SUBSTR", sql, re.I) for sql in selects)


# -- counting -----------------------------------------------------------------

def _notes(n):
    domain = NoteDomain()
    return [domain.process_command(domain.create_command("create-note", {"title": f"n{i}"})).aggregate_id
            for i in range(n)]


class SmallCap(EstimatedCountPaginator):
    cap = 5


def test_paginator_counts_exactly_below_the_cap():
    _notes(4)
    paginator = SmallCap(Event.objects.order_by("-position"), 2)
    assert paginator.count == 4 and not paginator.is_estimate
    assert paginator.num_pages == 2


def test_paginator_estimates_past_the_cap(is_postgres):
    _notes(12)
    if is_postgres:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE django_fluvius_event")
    paginator = SmallCap(Event.objects.order_by("-position"), 5)
    assert paginator.count == 12 and paginator.is_estimate
    assert list(paginator.page(3).object_list) == list(Event.objects.order_by("-position")[10:])

    filtered = SmallCap(Event.objects.filter(namespace="test-notes").order_by("-position"), 5)
    # PostgreSQL's planner estimates; elsewhere a filtered list past the cap is counted.
    assert filtered.count >= 6
    assert filtered.is_estimate == is_postgres
    if not is_postgres:
        assert filtered.count == 12


def test_list_says_about_when_the_count_is_an_estimate(client, root, monkeypatch, is_postgres):
    _notes(7)
    if is_postgres:
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE django_fluvius_event")
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 5)
    html = client.get(EVENTS).content.decode()
    assert re.search(r"about\s+7\s+events", html)
    monkeypatch.setattr(EstimatedCountPaginator, "cap", 100)
    html = client.get(EVENTS).content.decode()
    assert not re.search(r"about\s+7", html) and re.search(r"\b7\s+events", html)


# -- one event ----------------------------------------------------------------

def test_event_page_shows_pretty_payload_and_metadata_read_only(client, history):
    user_id, _ = history
    event = Event.objects.get(aggregate_id=user_id, version=1)
    url = reverse("admin:django_fluvius_event_change", args=[event.pk])
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert '{\n  &quot;active&quot;: true,\n  &quot;email&quot;: &quot;ada@example.com&quot;' in html
    assert "&quot;correlation_id&quot;" in html and "&quot;source&quot;: &quot;python&quot;" in html
    assert f'href="{timeline_url(user_id)}"' in html
    assert 'name="_save"' not in html and "deletelink" not in html


def test_the_admin_cannot_add_change_or_delete_events(client, history):
    user_id, _ = history
    event = Event.objects.get(aggregate_id=user_id, version=2)
    before = list(Event.objects.values_list("position", "payload"))
    assert client.post(reverse("admin:django_fluvius_event_add"), {"evt_key": "x"}).status_code == 403
    change = client.post(reverse("admin:django_fluvius_event_change", args=[event.pk]),
                         {"evt_key": "hacked", "payload": "{}"})
    assert change.status_code == 403
    assert client.post(reverse("admin:django_fluvius_event_delete", args=[event.pk]),
                       {"post": "yes"}).status_code == 403
    assert list(Event.objects.values_list("position", "payload")) == before


def test_a_huge_payload_is_shown_in_part_and_served_whole(client, root):
    blob = "x" * 300_000
    event = Event.objects.create(namespace="app-user", resource="user", aggregate_id=uuid.uuid4(),
                                 version=1, evt_key="user-created", payload={"bio": blob, "name": "Big"})
    html = client.get(reverse("admin:django_fluvius_event_change", args=[event.pk])).content.decode()
    assert "Showing the first 100.0 kB of 300.0 kB" in html
    assert len(html) < 200_000
    json_url = reverse("admin:django_fluvius_event_json", args=[event.pk])
    assert f'href="{json_url}?part=payload"' in html
    whole = client.get(json_url, {"part": "payload"})
    assert whole.status_code == 200 and whole.json() == {"bio": blob, "name": "Big"}
    assert client.get(json_url, {"part": "metadata"}).json() == {}
    # In the list, a short head only.
    listing = client.get(EVENTS).content.decode()
    cell = re.search(r'<td class="field-payload_preview"><span[^>]*>(.*?)</span></td>', listing, re.S).group(1)
    assert len(cell) < 200 and cell.endswith("…")
    # The timeline folds it and caps what it shows.
    page = client.get(timeline_url(event.aggregate_id))
    assert page.status_code == 200 and len(page.content) < 150_000


def test_json_view_of_a_missing_event_or_part_is_a_404(client, root):
    assert client.get(reverse("admin:django_fluvius_event_json", args=[999_999])).status_code == 404
    event = Event.objects.create(namespace="x", resource="x", aggregate_id=uuid.uuid4(), version=1,
                                 evt_key="x", payload={})
    assert client.get(reverse("admin:django_fluvius_event_json", args=[event.pk]),
                      {"part": "secrets"}).status_code == 404


def test_a_non_numeric_event_position_is_not_an_error(client, root):
    response = client.get("/admin/django_fluvius/event/abc/change/", follow=True)
    assert response.status_code == 200
    assert any("doesn’t exist" in m for m in messages_of(response))


# -- timeline -----------------------------------------------------------------

def test_timeline_shows_each_event_with_the_state_after_it(client, history):
    user_id, _ = history
    response = client.get(timeline_url(user_id))
    assert response.status_code == 200
    timeline = response.context["timeline"]
    assert (timeline.namespace, timeline.resource, timeline.latest_version) == ("app-user", "user", 3)
    entries = timeline.entries
    assert [e.event.evt_key for e in entries] == ["user-created", "user-renamed", "user-deactivated"]
    assert entries[0].state == {"name": "Ada", "email": "ada@example.com", "active": True}
    assert entries[1].state["name"] == "Ada L."
    assert entries[2].state == {"name": "Ada L.", "email": "ada@example.com", "active": False}
    assert [(c.path, c.kind, c.old, c.new) for c in entries[1].changes] == [("name", "changed", "Ada", "Ada L.")]
    html = response.content.decode()
    assert html.index('data-evt-key="user-created"') < html.index('data-evt-key="user-deactivated"')
    assert 'data-path="active"' in html


def test_timeline_folds_with_the_domain_rules(client, root):
    domain = OrderDomain()
    placed = domain.process_command(domain.create_command(
        "place-order", {"customer_id": str(uuid.uuid4()), "items": [{"sku": "a", "quantity": 3, "price": "2.00"}]}))
    domain.process_command(domain.create_command("add-item", {"sku": "b", "quantity": 1, "price": "1.50"},
                                                 aggregate_id=placed.aggregate_id))
    entries = client.get(timeline_url(placed.aggregate_id)).context["timeline"].entries
    # @apply("order-item-added") appends the line and recomputes the total; a plain merge would not.
    assert entries[1].state["total"] == "7.50"
    assert [i["sku"] for i in entries[1].state["items"]] == ["a", "b"]
    assert {c.path for c in entries[1].changes} == {"items[1]", "total"}


def test_long_timelines_are_paged_and_each_page_starts_from_the_right_state(client, root):
    domain = NoteDomain()
    note = domain.process_command(domain.create_command("create-note", {"title": "t"})).aggregate_id
    for i in range(60):
        domain.process_command(domain.create_command("edit-note", {"body": f"b{i}"}, aggregate_id=note))
    first = client.get(timeline_url(note)).context["timeline"]
    assert (first.page, first.num_pages, first.first_version, first.last_version) == (1, 2, 1, 50)
    second = client.get(timeline_url(note), {"page": 2}).context["timeline"]
    assert [e.event.version for e in second.entries] == list(range(51, 62))
    # The @apply for note-edited counts edits: version v has v - 1 of them.
    assert all(e.state["edits"] == e.event.version - 1 for e in second.entries)
    assert second.entries[0].changes[0].path == "body"
    assert client.get(timeline_url(note), {"page": 99}).context["timeline"].page == 2
    assert client.get(timeline_url(note), {"page": "x"}).context["timeline"].page == 1


def test_timeline_of_a_namespace_no_domain_owns_still_shows(client, root):
    aggregate_id = uuid.uuid4()
    for version, payload in ((1, {"a": 1}), (2, {"b": 2})):
        Event.objects.create(namespace="retired-ns", resource="thing", aggregate_id=aggregate_id,
                             version=version, evt_key="thing-happened", payload=payload)
    response = client.get(timeline_url(aggregate_id))
    assert response.status_code == 200
    assert ("No registered domain has the namespace 'retired-ns'"
            in response.content.decode().replace("&#x27;", "'"))
    assert response.context["timeline"].entries[1].state == {"a": 1, "b": 2}


def test_a_fold_that_fails_is_reported_on_the_page(client, root):
    domain = NoteDomain()
    note = domain.process_command(domain.create_command("create-note", {"title": "t"})).aggregate_id
    # A corrupt stored event: the note-edited fold reads payload["body"].
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=note, version=2,
                         evt_key="note-edited", payload={"text": "wrong shape"})
    response = client.get(timeline_url(note))
    assert response.status_code == 200
    entries = response.context["timeline"].entries
    assert entries[0].state["title"] == "t"
    assert entries[1].state is None and "Folding version 2 (note-edited) failed: KeyError" in entries[1].error
    assert "Folding version 2 (note-edited) failed" in response.content.decode()


@pytest.mark.parametrize("bad, status, message", [
    ("not-a-uuid", 404, "'not-a-uuid' is not a valid aggregate id (a UUID)."),
    ("12345", 404, "'12345' is not a valid aggregate id (a UUID)."),
    (str(uuid.UUID(int=7)), 404, f"No events are stored for aggregate {uuid.UUID(int=7)}."),
])
def test_timeline_of_a_bad_or_unknown_id_says_what_is_wrong(client, root, bad, status, message):
    response = client.get(f"{EVENTS}aggregate/{bad}/")
    assert response.status_code == status
    assert message in response.content.decode().replace("&#x27;", "'")


# -- diff ---------------------------------------------------------------------

def test_diff_between_two_versions(client, history):
    user_id, _ = history
    response = client.get(diff_url(user_id), {"from": 1, "to": 3})
    assert response.status_code == 200
    diff = response.context["diff"]
    assert [(c.path, c.old, c.new) for c in diff.changes] == [("active", True, False), ("name", "Ada", "Ada L.")]
    assert [e.version for e in diff.events] == [2, 3]
    assert "2 changes from version 1 to version 3" in response.content.decode()
    # Backwards, and from before the first event.
    back = client.get(diff_url(user_id), {"from": 3, "to": 2}).context["diff"]
    assert [(c.path, c.old, c.new) for c in back.changes] == [("active", False, True)]
    scratch = client.get(diff_url(user_id), {"from": 0, "to": 1}).context["diff"]
    assert {(c.path, c.kind) for c in scratch.changes} == {("name", "added"), ("email", "added"),
                                                          ("active", "added")}


@pytest.mark.parametrize("query, status, message", [
    ({"from": 1, "to": 9}, 404, "has no version 9 (its versions are 1 to 3)"),
    ({"from": -1, "to": 2}, 404, "has no version -1"),
    ({"from": "abc", "to": 2}, 400, "The first version 'abc' is not a whole number."),
    ({"to": 2}, 400, "The first version '' is not a whole number."),
    ({"from": 1, "to": "2.5"}, 400, "The second version '2.5' is not a whole number."),
])
def test_diff_with_bad_versions_says_what_is_wrong(client, history, query, status, message):
    user_id, _ = history
    response = client.get(diff_url(user_id), query)
    assert response.status_code == status
    assert message in response.content.decode().replace("&#x27;", "'")


def test_diff_of_a_bad_id_is_a_clear_404(client, root):
    response = client.get(f"{EVENTS}aggregate/zzz/diff/", {"from": 1, "to": 2})
    assert response.status_code == 404
    assert "is not a valid aggregate id" in response.content.decode()


def test_reads_through_the_admin_use_a_context_of_the_staff_user(root, history):
    from django.test import RequestFactory

    from django_fluvius.admin.events import admin_context

    request = RequestFactory().get("/")
    request.user = root
    context = admin_context(request, None)
    assert isinstance(context, DomainContext) and context.user_id == str(root.pk)
    assert context.source == "admin"


# -- decoding -----------------------------------------------------------------

@pytest.fixture
def split_names():
    """An upcaster: user-created v1 payloads gain first/last names when read."""
    from django_fluvius.events.upcasting import registry

    def split(payload):
        first, _, last = payload["name"].partition(" ")
        return {**payload, "first_name": first, "last_name": last}

    registry.register("user-created", 1, split, namespace="app-user")
    yield
    registry.unregister("user-created", 1, namespace="app-user")


def test_payloads_are_shown_decoded(client, root, split_names):
    aggregate_id = uuid.uuid4()
    event = Event.objects.create(namespace="app-user", resource="user", aggregate_id=aggregate_id, version=1,
                                 evt_key="user-created", schema_version=1,
                                 payload={"name": "Ada Lovelace", "email": "ada@example.com", "active": True})
    html = client.get(reverse("admin:django_fluvius_event_change", args=[event.pk])).content.decode()
    assert "&quot;first_name&quot;: &quot;Ada&quot;" in html
    json_url = reverse("admin:django_fluvius_event_json", args=[event.pk])
    assert client.get(json_url).json()["last_name"] == "Lovelace"
    state = client.get(timeline_url(aggregate_id)).context["timeline"].entries[0].state
    assert state["first_name"] == "Ada" and state["last_name"] == "Lovelace"


def test_an_event_that_cannot_be_decoded_is_shown_raw_with_the_reason(client, root):
    aggregate_id = uuid.uuid4()
    event = Event.objects.create(namespace="app-user", resource="user", aggregate_id=aggregate_id, version=1,
                                 evt_key="user-created", schema_version=9, payload={"name": "From the future"})
    page = client.get(reverse("admin:django_fluvius_event_change", args=[event.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "This event cannot be decoded: EventDecodeError" in html and "From the future" in html
    timeline = client.get(timeline_url(aggregate_id))
    assert timeline.status_code == 200
    entry = timeline.context["timeline"].entries[0]
    assert entry.state is None
    assert entry.error.startswith("The state cannot be rebuilt for versions 1 to 1: EventDecodeError")
    assert "From the future" in timeline.content.decode()  # the stored payload, as it is


def test_diff_links_each_event_to_its_page_of_the_timeline(client, root):
    domain = NoteDomain()
    note = domain.process_command(domain.create_command("create-note", {"title": "t"})).aggregate_id
    for i in range(54):
        domain.process_command(domain.create_command("edit-note", {"body": f"b{i}"}, aggregate_id=note))
    response = client.get(diff_url(note), {"from": 49, "to": 52})
    html = response.content.decode()
    assert f'href="{timeline_url(note)}?page=1#v50"' in html
    assert f'href="{timeline_url(note)}?page=2#v52"' in html
    assert [c.path for c in response.context["diff"].changes] == ["body", "edits"]
