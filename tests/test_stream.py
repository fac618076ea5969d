"""The event stream (``_stream/``) in process: the WSGI path (a worker thread polls for its
client), resuming, filters, metadata, row scoping, tenancy, bad input, and the gap-safe feed
(an event committed late is sent, in feed order, never skipped). Real clients against a real
ASGI server: tests/test_stream_live.py."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import connection, transaction
from rest_framework.test import APIClient

from tests.security_support import api as signed_in
from tests.security_support import as_user, fluvius_with, run
from tests.stream_support import read_until_heartbeat
from tests.testapp.domain import NoteDomain

pytest_plugins = ["tests.security_fixtures"]
pytestmark = [pytest.mark.urls("tests.stream_urls"), pytest.mark.django_db(transaction=True)]

SSE = {"HTTP_ACCEPT": "text/event-stream"}


@pytest.fixture(autouse=True)
def quick():
    with fluvius_with(STREAM_HEARTBEAT=0.3, STREAM_POLL=0.02):
        yield


def stream(client, path, **extra):
    response = client.get(path, **SSE, **extra)
    assert response.status_code == 200, response.json()
    try:
        return read_until_heartbeat(response)
    finally:
        response.close()


def note(title="n", body=""):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("create-note", {"title": title, "body": body}))


def edit(note_id, body):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("edit-note", {"body": body}, aggregate_id=note_id))


def test_the_wsgi_path_sends_resumes_and_filters():
    a, b = note("a"), note("b")
    edited = edit(a.aggregate_id, "again")
    folder = NoteDomain().process_command(NoteDomain().create_command("create-folder", {"name": "f"}))
    api = APIClient()
    everything = stream(api, "/api/test-notes/_stream/?after=0")
    positions = [a.events[0].position, b.events[0].position, edited.events[0].position, folder.events[0].position]
    assert [int(m.id) for m in everything] == positions
    assert [m.event for m in everything] == ["note-created", "note-created", "note-edited", "folder-created"]
    assert everything[2].json["payload"] == {"body": "again"}
    # The data is what the events endpoint renders.
    listed = api.get(f"/api/test-notes/note/{a.aggregate_id}/events/").json()["results"]
    assert [m.json for m in everything if m.json["aggregate_id"] == str(a.aggregate_id)] == listed

    # Resuming: Last-Event-ID wins over ?after= (a browser keeps its URL's ?after= on reconnect).
    rest = stream(api, "/api/test-notes/_stream/?after=0", HTTP_LAST_EVENT_ID=str(positions[1]))
    assert [int(m.id) for m in rest] == positions[2:]
    assert stream(api, f"/api/test-notes/_stream/?after={positions[-1]}") == []
    # Without either: from now on (nothing of the past).
    assert stream(api, "/api/test-notes/_stream/") == []

    only = lambda query: [int(m.id) for m in stream(api, f"/api/test-notes/_stream/?after=0&{query}")]  # noqa: E731
    assert only("resource=folder") == positions[3:]
    assert only(f"aggregate_id={a.aggregate_id}") == [positions[0], positions[2]]
    assert only("evt_key=note-edited,folder-created") == positions[2:]
    assert only("evt_key=note-edited&evt_key=note-created") == positions[:3]
    assert only("evt_key=nothing-like-it") == []
    # Another namespace's events are not in this one's stream.
    assert stream(api, "/api/app-user/_stream/?after=0") == []


def test_who_acted_is_shown_to_those_who_may_see_it(django_user_model):
    viewer = django_user_model.objects.create_user("viewer", password="pw")
    viewer.user_permissions.add(Permission.objects.get(codename="view_event"))
    note("a")
    anonymous = stream(APIClient(), "/api/test-notes/_stream/?after=0")[0].json["metadata"]
    client = APIClient()
    client.force_authenticate(django_user_model.objects.get(pk=viewer.pk))
    full = stream(client, "/api/test-notes/_stream/?after=0")[0].json["metadata"]
    assert "source" in anonymous and "user" not in anonymous
    assert set(anonymous) < set(full)


def test_row_scoping_hides_the_events_of_aggregates_the_client_may_not_read():
    mine, theirs = note("mine"), note("theirs")
    edit(theirs.aggregate_id, "hidden")
    edit(mine.aggregate_id, "shown")
    sent = stream(APIClient(), "/scoped/test-notes/_stream/?after=0")
    assert {m.json["aggregate_id"] for m in sent} == {str(mine.aggregate_id)}
    assert [m.event for m in sent] == ["note-created", "note-edited"]


def test_tenancy_and_permissions_apply(people, ticket_domain):
    acme = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "acme"})
    globex = run(as_user(people["carol"], "globex"), "open-ticket", {"title": "globex"})
    path = "/api/test-tickets/_stream/?after=0"
    assert [int(m.id) for m in stream(signed_in(people["alice"]), path)] == [acme.events[0].position]
    assert [int(m.id) for m in stream(signed_in(people["carol"]), path)] == [globex.events[0].position]
    dave = signed_in(people["dave"], HTTP_X_TENANT_ID="globex")
    assert [int(m.id) for m in stream(dave, path)] == [globex.events[0].position]
    refused = APIClient().get(path, **SSE)
    assert refused.status_code in (401, 403) and refused.json()["code"] in ("not_authenticated",
                                                                             "permission_denied")
    no_tenant = signed_in(people["eve"]).get(path, **SSE)
    assert (no_tenant.status_code, no_tenant.json()["code"]) == (400, "tenant_required")


@pytest.mark.parametrize(("path", "headers", "status", "code"), [
    ("/api/test-notes/_stream/", {"HTTP_LAST_EVENT_ID": "abc"}, 400, "invalid_position"),
    ("/api/test-notes/_stream/", {"HTTP_LAST_EVENT_ID": "-1"}, 400, "invalid_position"),
    ("/api/test-notes/_stream/?after=1.5", {}, 400, "invalid_position"),
    ("/api/test-notes/_stream/?after=424242", {}, 400, "invalid_position"),
    ("/api/test-notes/_stream/?after=%D9%A1%D9%A2", {}, 400, "invalid_position"),  # Arabic-Indic digits
    ("/api/test-notes/_stream/?resource=user", {}, 400, "invalid_parameter"),
    ("/api/test-notes/_stream/?aggregate_id=nope", {}, 400, "invalid_parameter"),
    ("/api/no-such/_stream/", {}, 404, "unknown_domain"),
    ("/api/test-notes/_stream", {}, 404, "missing_trailing_slash"),
])
def test_bad_input_is_a_json_error(path, headers, status, code):
    response = APIClient().get(path, **SSE, **headers)
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert response["Content-Type"] == "application/json"


def test_an_error_names_what_the_client_sent():
    note("a")
    beyond = APIClient().get("/api/test-notes/_stream/?after=424242", **SSE)
    assert list(beyond.json()["errors"]) == ["after"]
    header = APIClient().get("/api/test-notes/_stream/", **SSE, HTTP_LAST_EVENT_ID="424242")
    assert list(header.json()["errors"]) == ["Last-Event-ID"]


def test_head_answers_the_headers_without_a_body():
    note("a")
    response = APIClient().head("/api/test-notes/_stream/?after=0", **SSE)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/event-stream")
    assert not response.streaming and response.content == b""
    bad = APIClient().head("/api/test-notes/_stream/?after=x", **SSE)
    assert bad.status_code == 400


def test_under_asgi_a_full_opening_gate_is_a_503_with_retry_after_not_a_500():
    """ASGI: streams open through a gate of ``STREAM_OPENING_LIMIT`` slots (each opening holds a
    database connection); one that waits past ``STREAM_OPENING_TIMEOUT`` is told to come back."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    from django_fluvius.rest.sse import opening

    with fluvius_with(STREAM_OPENING_LIMIT=1, STREAM_OPENING_TIMEOUT=0.2), opening.slot():
        response = async_to_sync(AsyncClient().get)("/api/test-notes/_stream/", headers={"Accept": "text/event-stream"})
    assert response.status_code == 503, response.content
    assert response.json()["code"] == "streams_busy" and response["Retry-After"] == "1"
    # The slot was given back: the next opening goes through (a bad position answers at once).
    with fluvius_with(STREAM_OPENING_LIMIT=1, STREAM_OPENING_TIMEOUT=0.2):
        after = async_to_sync(AsyncClient().get)("/api/test-notes/_stream/?after=x",
                                                 headers={"Accept": "text/event-stream"})
    assert (after.status_code, after.json()["code"]) == (400, "invalid_position")


def test_an_event_committed_late_is_sent_in_feed_order_never_skipped():
    """PostgreSQL: positions are taken at insert, not commit. A transaction that took a lower
    position and commits later holds the stream back; both events come, in feed order."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: positions are taken in commit order")
    api = APIClient()
    start = note("before").events[0].position
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()
    late: list = []

    def slow_writer():
        try:
            with transaction.atomic():
                late.append(note("late"))
                inserted.set()
                release.wait(10)
        finally:
            connection.close()
            done.set()

    threading.Thread(target=slow_writer).start()
    assert inserted.wait(10)
    quick = note("quick")  # a higher position, committed first
    assert quick.events[0].position > late[0].events[0].position
    assert stream(api, f"/api/test-notes/_stream/?after={start}") == []  # held back, not skipped
    release.set()
    assert done.wait(10)
    sent = stream(api, f"/api/test-notes/_stream/?after={start}")
    assert [m.json["payload"]["title"] for m in sent] == ["late", "quick"]
    assert uuid.UUID(sent[0].json["aggregate_id"]) == late[0].aggregate_id


def test_commits_while_the_relay_lingers_are_announced_at_once():
    """PostgreSQL: the relay thread lingers RELAY_LINGER seconds between rounds; the commits
    that come meanwhile are announced (NOTIFY, what wakes streams and relays of other
    processes) within RELAY_NOTIFY_INTERVAL, not when the linger ends."""
    if connection.vendor != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's")
    import time

    from django_fluvius.delivery.dispatch import CHANNEL, relay

    wrapper = connection
    listener = wrapper.get_new_connection(wrapper.get_connection_params())
    listener.autocommit = True
    listener.execute(f"LISTEN {CHANNEL}")
    try:
        with fluvius_with(DISPATCH="inline", RELAY_LINGER=5.0):
            for title in ("first", "second"):  # a round each: the second one's lingers 5 s
                note(title)
                assert list(listener.notifies(timeout=3, stop_after=1)), f"the {title} commit is announced"
                time.sleep(0.1)
            note("third")
            started = time.monotonic()
            assert list(listener.notifies(timeout=3, stop_after=1)), "announced during the linger"
            assert time.monotonic() - started < 3
            assert relay.flush(10)
    finally:
        listener.close()
