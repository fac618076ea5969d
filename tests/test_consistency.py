"""Read-your-writes (issue 19): positions out (Fluvius-Position) and in (Fluvius-Min-Position,
?min_position=, QueryBuilder.min_position, statemgr's min_position).

``test-activity/activity`` is kept by an async projection (tests/testapp/activity.py);
``test-notes/note`` by an inline one. In these tests nothing catches the projection up
unless the test does (DISPATCH off), or a real Celery worker does (the last test).
"""

from __future__ import annotations

import asyncio
import io
import os
import threading
import time

import pytest
import yaml
from celery import Celery
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from django_fluvius import QueryBuilder
from django_fluvius.delivery.dispatch import relay
from django_fluvius.delivery.projections import async_projections
from django_fluvius.exceptions import InvalidPosition, PositionNotReached
from django_fluvius.read import consistency
from tests import dispatch_handlers
from tests.dispatch_handlers import NoteActivityProjection
from tests.dispatch_support import (
    BROKER_URL,
    QUEUE,
    Worker,
    broker_reachable,
    flush_broker,
    fluvius,
)
from tests.testapp.activity import ActivityDomain
from tests.testapp.models import Note, NoteActivity

pytestmark = [pytest.mark.urls("tests.stream_urls"), pytest.mark.django_db(transaction=True)]


@pytest.fixture
def projection():
    """The activity projection registered, nothing delivering (this test catches it up)."""
    async_projections.register(NoteActivityProjection)
    with override_settings(FLUVIUS=fluvius(DISPATCH=None, MIN_POSITION_TIMEOUT=0.3)):
        NoteActivityProjection().checkpoint()
        yield NoteActivityProjection
    async_projections.unregister(NoteActivityProjection.name)
    consistency.forget()


def create_note(api: APIClient, title: str = "n") -> tuple[str, int]:
    response = api.post("/api/test-notes/create-note/", {"title": title}, format="json")
    assert response.status_code == 201, response.json()
    position = int(response.headers["Fluvius-Position"])
    assert position == response.json()["events"][-1]["position"]
    return response.json()["aggregate_id"], position


def test_commands_and_events_endpoints_say_their_position(projection):
    api = APIClient()
    note_id, created = create_note(api)
    edited = api.post(f"/api/test-notes/edit-note/{note_id}/", {"body": "b"}, format="json")
    assert int(edited.headers["Fluvius-Position"]) == edited.json()["events"][0]["position"] > created
    events = api.get(f"/api/test-notes/note/{note_id}/events/?limit=1")
    assert int(events.headers["Fluvius-Position"]) == int(edited.headers["Fluvius-Position"])
    # An Idempotency-Key retry answers with the same position.
    first = api.post("/api/test-notes/create-note/", {"title": "once"}, format="json",
                     headers={"Idempotency-Key": "pos-1"})
    again = api.post("/api/test-notes/create-note/", {"title": "once"}, format="json",
                     headers={"Idempotency-Key": "pos-1"})
    assert again.headers["Fluvius-Position"] == first.headers["Fluvius-Position"]


def test_a_read_waits_for_the_async_projection_feeding_its_resource(projection):
    api = APIClient()
    note_id, position = create_note(api, "waited for")
    url = f"/api/test-activity/activity/{note_id}/"
    assert api.get(url).status_code == 404  # the projection has not run: a plain read lags

    # Past MIN_POSITION_TIMEOUT: 503, Retry-After, the usual JSON error.
    started = time.monotonic()
    behind = api.get(url, headers={"Fluvius-Min-Position": str(position)})
    assert time.monotonic() - started >= 0.25
    assert behind.status_code == 503 and behind.headers["Retry-After"] == "1"
    assert behind.json()["code"] == "position_not_reached"
    assert behind.json()["details"]["position"] == position

    # The projection catches up while the read waits: the read answers with the row.
    threading.Timer(0.4, lambda: projection().catch_up()).start()
    with override_settings(FLUVIUS=fluvius(DISPATCH=None, MIN_POSITION_TIMEOUT=10)):
        started = time.monotonic()
        item = api.get(url, headers={"Fluvius-Min-Position": str(position)})
        assert item.status_code == 200 and item.json()["title"] == "waited for"
        assert time.monotonic() - started >= 0.3
        listed = api.get(f"/api/test-activity/activity/?min_position={position}")
        assert [row["id"] for row in listed.json()["results"]] == [note_id]


def test_the_wait_skips_events_the_projection_does_not_read(projection):
    api = APIClient()
    note_id, position = create_note(api)
    projection().catch_up()
    folder = api.post("/api/test-notes/create-folder/", {"name": "f"}, format="json")  # not read by it
    later = int(folder.headers["Fluvius-Position"])
    # Nothing it reads lies between its checkpoint and the folder's event: no wait.
    consistency.forget()
    started = time.monotonic()
    assert api.get(f"/api/test-activity/activity/?min_position={later}").status_code == 200
    assert time.monotonic() - started < 0.25


def test_inline_resources_never_wait_for_a_position_they_were_given(projection, django_assert_max_num_queries):
    api = APIClient()
    note_id, position = create_note(api)
    started = time.monotonic()
    assert api.get(f"/api/test-notes/note/{note_id}/", headers={"Fluvius-Min-Position": str(position)}).status_code == 200
    assert time.monotonic() - started < 0.25
    # Once seen reached, a position (or any below it) costs no query at all.
    with django_assert_max_num_queries(0):
        consistency.wait_for(Note, position)
        consistency.wait_for(Note, position - 1)


def test_python_reads_take_a_minimum_position(projection):
    api = APIClient()
    note_id, position = create_note(api, "python")
    domain = ActivityDomain()
    with pytest.raises(PositionNotReached):
        domain.statemgr.fetch("activity", note_id, min_position=position)
    with pytest.raises(PositionNotReached):
        QueryBuilder("activity", domain=ActivityDomain).min_position(position).execute()
    with pytest.raises(PositionNotReached):
        asyncio.run(QueryBuilder("activity", domain=ActivityDomain).min_position(position).aexecute())
    assert QueryBuilder("activity", domain=ActivityDomain).execute() == []  # without it: no wait, stale
    projection().catch_up()
    assert domain.statemgr.fetch("activity", note_id, min_position=position).title == "python"
    assert [r.title for r in QueryBuilder("activity", domain=ActivityDomain).min_position(position)] == ["python"]
    assert [r.title for r in domain.statemgr.find("activity", min_position=position)] == ["python"]
    with pytest.raises(InvalidPosition):
        QueryBuilder("activity", domain=ActivityDomain).min_position(-1)


def test_a_reset_projection_is_waited_for_again(projection):
    api = APIClient()
    note_id, position = create_note(api)
    projection().catch_up()
    consistency.wait_for(NoteActivity, position)
    projection().reset()  # its rows are gone until it replays
    with pytest.raises(PositionNotReached):
        consistency.wait_for(NoteActivity, position, timeout=0.1)


@pytest.mark.parametrize(("header", "query"), [
    ("abc", None), ("-1", None), ("1.5", None), (" ", None), ("1" * 19, None), (None, "x"), (None, "-2"),
    (None, "\u0661\u0662"), (None, "\uff11"), (None, "%2B12"), (None, "1_0"),  # digits other than ASCII 0-9
])
def test_a_bad_position_is_a_400(projection, header, query):
    api = APIClient()
    note_id, _ = create_note(api)
    url = f"/api/test-notes/note/{note_id}/" + (f"?min_position={query}" if query is not None else "")
    response = api.get(url, headers={"Fluvius-Min-Position": header} if header is not None else {})
    assert response.status_code == 400 and response.json()["code"] == "invalid_position"


def test_a_position_beyond_the_head_is_a_400_at_once(projection):
    """No response ever gave a position beyond the newest event: refused at once, no waiting."""
    api = APIClient()
    note_id, position = create_note(api)
    started = time.monotonic()
    response = api.get(f"/api/test-notes/note/{note_id}/?min_position={position + 1000}")
    assert time.monotonic() - started < 0.25
    assert response.status_code == 400 and response.json()["code"] == "invalid_position"
    assert f"position {position + 1000}" in response.json()["message"]
    assert list(response.json()["errors"]) == ["min_position"]
    # Sent as the header, the error names the header.
    by_header = api.get(f"/api/test-notes/note/{note_id}/", headers={"Fluvius-Min-Position": str(position + 1000)})
    assert by_header.status_code == 400 and list(by_header.json()["errors"]) == ["Fluvius-Min-Position"]


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_a_replica_is_checked_for_the_position(projection):
    api = APIClient()
    note_id, position = create_note(api)
    with override_settings(FLUVIUS=fluvius(DISPATCH=None, READ_DATABASE="replica", MIN_POSITION_TIMEOUT=0.3)):
        consistency.forget()
        assert api.get(f"/api/test-notes/note/{note_id}/?min_position={position}").status_code == 200
        # A position the primary does not have either is refused at once (not waited for).
        assert api.get(f"/api/test-notes/note/{note_id}/?min_position={position + 50}").status_code == 400


@pytest.mark.urls("example_project.urls")
def test_the_schema_documents_the_headers():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    paths = yaml.safe_load(out.getvalue())["paths"]
    for path in ("/api/app-user/user/", "/api/app-user/user/{aggregate_id}/"):
        operation = paths[path]["get"]
        names = {(p["in"], p["name"]) for p in operation["parameters"]}
        assert {("header", "Fluvius-Min-Position"), ("query", "min_position")} <= names
        assert "503" in operation["responses"]
    created = paths["/api/app-user/create-user/"]["post"]["responses"]["201"]
    assert "Fluvius-Position" in created["headers"]
    assert "Fluvius-Position" in paths["/api/app-user/user/{aggregate_id}/events/"]["get"]["responses"]["200"]["headers"]


# -- with a real Celery worker ------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path, monkeypatch):
    if not broker_reachable():
        if os.environ.get("CI"):
            pytest.fail("CI must run the Celery tests")
        pytest.skip("needs the Redis broker")
    monkeypatch.setenv("FLUVIUS_TEST_SCRATCH", str(tmp_path))
    app = Celery("fluvius-tests", broker=BROKER_URL, set_as_current=False)
    dispatch_handlers.install()
    flush_broker()
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="thread", CELERY_APP=app, CELERY_QUEUE=QUEUE,
                                           MIN_POSITION_TIMEOUT=20)):
        started = Worker(connection.settings_dict["NAME"], tmp_path, tmp_path).start()
        try:
            yield started
        finally:
            started.stop()
            assert relay.close_connections(10)
    dispatch_handlers.uninstall()
    flush_broker()
    app.close()
    consistency.forget()


@pytest.mark.broker
def test_read_your_writes_with_a_projection_kept_by_a_celery_worker(worker):
    api = APIClient()
    for round_ in range(3):
        note_id, position = create_note(api, f"celery {round_}")
        edited = api.post(f"/api/test-notes/edit-note/{note_id}/", {"body": "b"}, format="json")
        position = int(edited.headers["Fluvius-Position"])
        # No sleeping, no polling here: the read itself waits for the worker's projection.
        item = api.get(f"/api/test-activity/activity/{note_id}/", headers={"Fluvius-Min-Position": str(position)})
        assert item.status_code == 200, (item.json(), worker.output()[-2000:])
        assert (item.json()["title"], item.json()["events"]) == (f"celery {round_}", 2)
        assert item.json()["last_position"] == position
