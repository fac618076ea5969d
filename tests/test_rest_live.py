"""The REST face under real conditions: a running server, ATOMIC_REQUESTS, racing writers."""

import base64
import json
import threading
import urllib.error
import urllib.request
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from rest_framework.test import APIClient

from django_fluvius.delivery.handlers import event_handler, handlers
from django_fluvius.models import CommandLog, Event, IdempotencyRecord
from example_project.users.models import User
from tests.testapp import domain as testapp_domain
from tests.testapp.models import Note


def http(method, url, body=None, headers=None):
    """A plain HTTP request; (status, headers, JSON body or None)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, error.headers, error.read()
    return status, head, json.loads(raw) if raw else None


def test_a_real_server_with_a_plain_http_client(live_server, django_user_model):
    api = f"{live_server.url}/api"
    # The example project's commands need a signed-in user (HTTP Basic here); one who may
    # view events sees all of their metadata.
    user = django_user_model.objects.create_user("live", password="live-pw")
    user.user_permissions.add(Permission.objects.get(codename="view_event"))
    basic = {"Authorization": "Basic " + base64.b64encode(b"live:live-pw").decode()}
    status, head, body = http("POST", f"{api}/app-user/create-user/",
                              {"name": "Live", "email": "live@example.com"},
                              {"X-Correlation-ID": "live-1", **basic})
    assert status == 201, body
    assert head["ETag"] == '"1"'
    assert head["X-Correlation-ID"] == "live-1"
    assert head["Location"] == f"/api/app-user/user/{body['aggregate_id']}/"
    user_url = live_server.url + head["Location"]

    status, head, item = http("GET", user_url)
    assert (status, head["ETag"], item["name"]) == (200, '"1"', "Live")

    rename = f"{api}/app-user/rename-user/{body['aggregate_id']}/"
    status, head, _ = http("POST", rename, {"name": "Renamed"}, {"If-Match": '"1"', **basic})
    assert (status, head["ETag"]) == (200, '"2"')
    status, _, error = http("POST", rename, {"name": "Stale"}, {"If-Match": '"1"', **basic})
    assert (status, error["code"]) == (412, "precondition_failed")
    status, _, error = http("POST", rename, {"name": "x"}, {"If-Match": "yesterday", **basic})
    assert (status, error["code"]) == (400, "invalid_if_match")
    status, _, error = http("POST", rename, b'{"name": "Bro', {"Content-Type": "application/json", **basic})
    assert (status, error["code"]) == (400, "parse_error")
    status, _, error = http("POST", rename, b"name=x", {"Content-Type": "text/csv", **basic})
    assert (status, error["code"]) == (415, "unsupported_media_type")
    status, _, error = http("POST", f"{api}/app-user/create-user/",
                            {"name": "x" * 3_000_000, "email": "big@example.com"}, basic)
    assert (status, error["code"]) == (413, "request_too_large")
    status, _, error = http("GET", f"{api}/app-user/user/12345/")
    assert (status, error["code"]) == (404, "invalid_aggregate_id")
    status, _, error = http("GET", f"{api}/nowhere/")
    assert (status, error["code"]) == (404, "unknown_domain")

    status, _, item = http("GET", f"{user_url}?version=1")
    assert item["name"] == "Live"
    status, _, events = http("GET", f"{user_url}events/", headers=basic)
    assert [e["evt_key"] for e in events["results"]] == ["user-created", "user-renamed"]
    assert events["results"][1]["metadata"]["client_address"] == "127.0.0.1"
    assert User.objects.get(pk=body["aggregate_id"]).name == "Renamed"

    status, head, _ = http("GET", f"{live_server.url}/schema/", headers={"Accept": "application/json"})
    assert status == 200


# -- ATOMIC_REQUESTS -------------------------------------------------------------


@pytest.fixture
def atomic_requests(monkeypatch, transactional_db):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)


@pytest.fixture
def created_events():
    seen = []

    @event_handler("user-created", name="tests.rest.atomic_seen")
    def remember(event):
        seen.append(event.aggregate_id)

    yield seen
    handlers.unregister("tests.rest.atomic_seen")


@pytest.mark.urls("tests.test_rest_urls")
def test_commands_work_under_atomic_requests(atomic_requests, created_events):
    api = APIClient()
    response = api.post("/api/app-user/create-user/", {"name": "A", "email": "a@x.io"}, format="json",
                        headers={"Idempotency-Key": "atomic-1"})
    assert response.status_code == 201
    aggregate_id = uuid.UUID(response.json()["aggregate_id"])
    assert created_events == [aggregate_id]  # handlers ran once the request's transaction committed
    assert User.objects.filter(pk=aggregate_id).exists()
    assert IdempotencyRecord.objects.count() == 1

    replay = api.post("/api/app-user/create-user/", {"name": "A", "email": "a@x.io"}, format="json",
                      headers={"Idempotency-Key": "atomic-1"})
    assert replay.status_code == 201 and replay.json() == response.json()
    assert User.objects.count() == 1

    url = f"/api/app-user/rename-user/{aggregate_id}/"
    assert api.post(url, {"name": "B"}, format="json", headers={"If-Match": '"1"'}).status_code == 200
    stale = api.post(url, {"name": "C"}, format="json", headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    refused = api.post("/api/app-user/create-user/", {"name": "A", "email": "bad"}, format="json")
    assert refused.status_code == 422
    assert User.objects.get(pk=aggregate_id).name == "B"
    assert Event.objects.count() == 2
    # An error response rolls the request's transaction back, the rejection's log row with it.
    assert CommandLog.objects.filter(status="rejected").count() == 0
    assert api.get(f"/api/app-user/user/{aggregate_id}/?version=1").json()["name"] == "A"


# -- races (PostgreSQL: SQLite serializes writers before they can race) -----------


def race(requests, *, meet):
    """Run each request in its own thread; ``meet`` threads wait for each other inside the action."""
    barrier = threading.Barrier(meet, timeout=20)
    waited = threading.local()

    def meet_once(aggregate):
        # Only a thread's first run meets the others: the bus may run a command again.
        if not getattr(waited, "done", False):
            waited.done = True
            barrier.wait()

    testapp_domain.hooks["edit"] = meet_once
    results = [None] * len(requests)

    def worker(i, call):
        try:
            results[i] = call(APIClient())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(requests)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        testapp_domain.hooks.pop("edit", None)
    return results


@pytest.mark.server_database
@pytest.mark.urls("tests.test_rest_urls")
@pytest.mark.parametrize("atomic", [False, True], ids=["autocommit", "atomic_requests"])
def test_a_race_lost_at_commit_is_409(transactional_db, monkeypatch, settings, atomic):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", atomic)
    # Both writers read the stream from the store (with the in-process aggregate cache
    # the loser is run again instead: see the next test).
    settings.FLUVIUS = {**settings.FLUVIUS, "AGGREGATE_CACHE_SIZE": 0}
    note = APIClient().post("/api/test-notes/create-note/", {"title": "T"}, format="json").json()["aggregate_id"]
    url = f"/api/test-notes/edit-note/{note}/"

    def edit(body):
        return lambda api: api.post(url, {"body": body}, format="json", headers={"If-Match": '"1"'})

    responses = race([edit("one"), edit("two")], meet=2)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409], [r.content for r in responses]
    loser = next(r for r in responses if r.status_code == 409)
    assert loser.json()["code"] == "concurrency_conflict"  # not 412: If-Match held when it ran
    winner = next(r for r in responses if r.status_code == 200)
    assert Note.objects.get(pk=note).body == winner.json()["state"]["body"]
    assert Event.objects.filter(aggregate_id=note).count() == 2


@pytest.mark.server_database
@pytest.mark.urls("tests.test_rest_urls")
def test_with_the_aggregate_cache_the_loser_is_rechecked_against_the_store(transactional_db):
    note = APIClient().post("/api/test-notes/create-note/", {"title": "T"}, format="json").json()["aggregate_id"]
    url = f"/api/test-notes/edit-note/{note}/"
    responses = race([
        lambda api: api.post(url, {"body": "guarded"}, format="json", headers={"If-Match": '"1"'}),
        lambda api: api.post(url, {"body": "blind"}, format="json"),
    ], meet=2)
    by_body = {(r.json()["state"]["body"] if r.status_code == 200 else r.json()["code"]): r.status_code
               for r in responses}
    # Either the guarded edit won, and the blind one ran again on top of it (v3), or the
    # blind one won and the guarded one's If-Match no longer holds (412).
    assert by_body in ({"guarded": 200, "blind": 200}, {"blind": 200, "precondition_failed": 412}), by_body
    assert Event.objects.filter(aggregate_id=note).count() == 1 + len(
        [s for s in by_body.values() if s == 200])


@pytest.mark.server_database
@pytest.mark.urls("tests.test_rest_urls")
def test_racing_retries_with_one_key_run_once(transactional_db):
    note = APIClient().post("/api/test-notes/create-note/", {"title": "T"}, format="json").json()["aggregate_id"]
    url = f"/api/test-notes/edit-note/{note}/"

    def edit(api):
        return api.post(url, {"body": "same"}, format="json", headers={"Idempotency-Key": "race-key"})

    responses = race([edit, edit], meet=2)
    assert [r.status_code for r in responses] == [200, 200], [r.content for r in responses]
    assert responses[0].json() == responses[1].json()
    assert sum(1 for r in responses if r.get("Idempotent-Replayed") == "true") == 1
    assert Event.objects.filter(aggregate_id=note).count() == 2
    assert IdempotencyRecord.objects.count() == 1
