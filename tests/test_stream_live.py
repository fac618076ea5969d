"""The event stream (``_stream/``) with real clients against a real uvicorn server (issue 19).

A uvicorn process (ASGI: the stream is an async iterator, no thread per client)
serves tests/stream_urls.py on this test's database. Plain HTTP clients read the
stream line by line as it arrives while other clients' commands commit (over
HTTP, and from this test process: another process's commit reaches the server
through PostgreSQL ``NOTIFY``, or its poll on SQLite); a client that disconnects
and comes back with ``Last-Event-ID`` gets exactly what it missed. Chromium's
``EventSource`` shows events live on the page of docs/stream.md's example.
Tenancy and permissions: another tenant's events never appear.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

from tests.dispatch_support import wait_for
from tests.security_support import PASSWORD, TENANTS
from tests.stream_support import LiveStream
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser
from tests.test_deployment import free_port
from tests.test_rebuild import database_url
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Membership

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.django_db(transaction=True),
]


def basic(user: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()}


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


@pytest.fixture
def people(django_user_model):
    """The users of tests/security_support.py, committed (the server reads them)."""
    made = {}
    for name, tenants in TENANTS.items():
        user = django_user_model.objects.create_user(name, f"{name}@example.com", PASSWORD)
        for tenant in tenants:
            Membership.objects.create(user=user, tenant=tenant)
        made[name] = user
    return made


@pytest.fixture
def server(people, tmp_path):
    yield from uvicorn(tmp_path, tenancy=False)


@pytest.fixture
def tenant_server(people, tmp_path):
    yield from uvicorn(tmp_path, tenancy=True)


def uvicorn(tmp_path: Path, *, tenancy: bool):
    """uvicorn (one worker) serving tests/stream_urls.py on this test's database."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.stream_settings",
        "DATABASE_URL": database_url(),
        "PYTHONPATH": str(ROOT),
        "FLUVIUS_TEST_TENANCY": "1" if tenancy else "0",
    }
    env.pop("FLUVIUS_TEST_DB_NAME", None)
    log = tmp_path / "uvicorn.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "example_project.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1", "--no-access-log"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def up():
        if process.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{log.read_text()}")
        try:
            return http("GET", f"{base}/api/")[0] == 200
        except OSError:
            return False

    try:
        wait_for(up, 60, 0.2, "uvicorn to answer")
        yield base
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        connection.close()
        if process.returncode not in (0, -15):
            print(log.read_text())


def opened(url: str, headers: dict | None = None) -> LiveStream:
    stream = LiveStream(url, headers or {}).open()
    assert stream.status == 200, stream.response_headers
    assert stream.response_headers["Content-Type"].startswith("text/event-stream")
    first = stream.messages.get(timeout=10)  # "retry:" comes once the stream is attached to the feed
    assert first.retry == 2000
    return stream


def create_user(base: str, name: str, user: str = "alice") -> tuple[str, int]:
    status, head, body = http("POST", f"{base}/api/app-user/create-user/",
                              {"name": name, "email": f"{name.lower()}@example.com"}, basic(user))
    assert status == 201, body
    return body["aggregate_id"], int(head["Fluvius-Position"])


def test_a_client_follows_commits_live_and_resumes_with_last_event_id(server):
    reader = opened(f"{server}/api/app-user/_stream/")
    try:
        # Other clients' commands, at the same time.
        made: list[tuple[str, int]] = []
        threads = [threading.Thread(target=lambda n=n: made.append(create_user(server, n)))
                   for n in ("Ann", "Bob", "Cy")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        received = reader.events(3)
        assert sorted(int(m.id) for m in received) == sorted(position for _, position in made)
        assert [m.event for m in received] == ["user-created"] * 3
        # The data is the event as the events endpoint renders it (for this anonymous reader).
        ann_id = next(m.json["aggregate_id"] for m in received if m.json["payload"]["name"] == "Ann")
        status, head, listed = http("GET", f"{server}/api/app-user/user/{ann_id}/events/")
        assert status == 200 and int(head["Fluvius-Position"]) == listed["results"][0]["position"]
        assert [m.json for m in received if m.json["aggregate_id"] == ann_id] == listed["results"]
        assert "user" not in listed["results"][0]["metadata"]  # who acted: not for anonymous readers

        # A commit by another process (this test's): NOTIFY on PostgreSQL, the poll on SQLite.
        note_stream = opened(f"{server}/api/test-notes/_stream/")
        try:
            notes = NoteDomain()
            for title in ("elsewhere", "live"):
                note = notes.process_command(notes.create_command("create-note", {"title": title}))
                got = note_stream.next_event()
                assert (int(got.id), got.json["payload"]["title"]) == (note.events[0].position, title)
        finally:
            note_stream.close()
        # What a browser keeps: the id of the last message (feed order is commit order on
        # PostgreSQL, which may differ from position order).
        last_seen = int(received[-1].id)
    finally:
        reader.close()

    # Disconnected: two more commits happen, then the client comes back.
    status, _, _ = http("POST", f"{server}/api/app-user/rename-user/{ann_id}/", {"name": "Ann B."}, basic("bob"))
    assert status == 200
    _, dee_position = create_user(server, "Dee")
    back = opened(f"{server}/api/app-user/_stream/", {"Last-Event-ID": str(last_seen)})
    try:
        missed = back.events(2)
        assert [m.event for m in missed] == ["user-renamed", "user-created"]
        assert int(missed[1].id) == dee_position
        # Exactly those: the next message is a heartbeat, not an event (nothing repeated).
        following = back.messages.get(timeout=5)
        assert following.comment == "heartbeat" and following.event is None
    finally:
        back.close()
    # ?after= resumes the same way (what a client without the header sends).
    again = opened(f"{server}/api/app-user/_stream/?after={last_seen}&evt_key=user-renamed")
    try:
        assert [m.json["payload"]["name"] for m in [again.next_event()]] == ["Ann B."]
        assert again.messages.get(timeout=5).comment == "heartbeat"
    finally:
        again.close()


def test_bad_stream_requests_are_json_errors_at_once(server):
    cases = [
        ("/api/app-user/_stream/", {"Last-Event-ID": "yesterday"}, 400, "invalid_position"),
        ("/api/app-user/_stream/?after=-3", {}, 400, "invalid_position"),
        ("/api/app-user/_stream/?after=999999999", {}, 400, "invalid_position"),
        ("/api/app-user/_stream/?resource=nope", {}, 400, "invalid_parameter"),
        ("/api/app-user/_stream/?aggregate_id=12", {}, 400, "invalid_parameter"),
        ("/api/nowhere/_stream/", {}, 404, "unknown_domain"),
    ]
    for path, headers, status, code in cases:
        got, head, body = http("GET", server + path, headers={"Accept": "text/event-stream", **headers})
        assert (got, body["code"]) == (status, code), path
        assert head["Content-Type"] == "application/json"
    got, _, body = http("GET", f"{server}/api/app-user/_stream/", headers={"Accept": "application/json"})
    assert (got, body["code"]) == (406, "not_acceptable")


def test_another_tenants_events_never_appear(tenant_server):
    server = tenant_server

    def open_ticket(user: str, title: str, tenant: str | None = None) -> int:
        headers = {**basic(user), **({"X-Tenant-ID": tenant} if tenant else {})}
        status, head, body = http("POST", f"{server}/api/test-tickets/open-ticket/", {"title": title}, headers)
        assert status == 201, body
        return int(head["Fluvius-Position"])

    # Reads of tickets need a signed-in user: so does their stream.
    status, _, body = http("GET", f"{server}/api/test-tickets/_stream/", headers={"Accept": "text/event-stream"})
    assert status in (401, 403) and body["code"] in ("not_authenticated", "permission_denied")
    # A user without a tenant gets no stream of a tenant-scoped domain.
    status, _, body = http("GET", f"{server}/api/test-tickets/_stream/",
                           headers={"Accept": "text/event-stream", **basic("eve")})
    assert (status, body["code"]) == (400, "tenant_required")

    early = open_ticket("carol", "globex before")
    alice = opened(f"{server}/api/test-tickets/_stream/?after=0", basic("alice"))
    carol = opened(f"{server}/api/test-tickets/_stream/", basic("carol"))
    dave_globex = opened(f"{server}/api/test-tickets/_stream/", {**basic("dave"), "X-Tenant-ID": "globex"})
    try:
        acme = [open_ticket("alice", "acme 1"), open_ticket("bob", "acme 2")]
        globex = [open_ticket("carol", "globex 1"), open_ticket("dave", "globex 2", tenant="globex")]
        acme.append(open_ticket("dave", "acme 3", tenant="acme"))
        assert [int(m.id) for m in alice.events(3)] == acme
        assert [int(m.id) for m in carol.events(2)] == globex
        assert [int(m.id) for m in dave_globex.events(2)] == globex
        for stream in (alice, carol, dave_globex):  # and nothing else came
            assert stream.messages.get(timeout=5).comment == "heartbeat"
        assert early not in acme
    finally:
        for stream in (alice, carol, dave_globex):
            stream.close()


def test_a_browser_event_source_shows_events_live(server):
    sync_playwright = _need_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            page.goto(f"{server}/stream-page/")
            page.wait_for_function("document.getElementById('status').textContent === 'live'")
            ann, _ = create_user(server, "Ann")
            page.wait_for_function("document.querySelectorAll('#events li').length === 1")
            http("POST", f"{server}/api/app-user/rename-user/{ann}/", {"name": "Ann Jones"}, basic("alice"))
            page.wait_for_function("document.querySelectorAll('#events li').length === 2")
            items = page.locator("#events li").all_text_contents()
            assert items == ["user-created Ann", "user-renamed Ann Jones"]
            positions = page.eval_on_selector_all("#events li", "items => items.map(i => Number(i.dataset.position))")
            assert positions == sorted(positions) and all(p > 0 for p in positions)
        finally:
            browser.close()


class PeakConnections:
    """The most connections the server holds to this database at once, sampled in a thread."""

    def __init__(self) -> None:
        self.most = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> PeakConnections:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)

    def _sample(self) -> None:
        import psycopg

        name = connection.settings_dict["NAME"]
        with psycopg.connect(host="127.0.0.1", port=5432, dbname=name, user=connection.settings_dict["USER"] or
                             "postgres", autocommit=True) as conn:
            while not self.done.is_set():
                count = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                                     "AND pid <> pg_backend_pid()", [name]).fetchone()[0]
                self.most = max(self.most, count - 1)  # not the test's own connection


def test_a_crowd_of_clients_opening_at_once_all_get_their_stream(server):
    """200 clients connecting in the same instant (browsers reconnecting after a deploy): each
    opening holds a database connection, more than PostgreSQL's default 100 at once; through
    the opening gate (STREAM_OPENING_LIMIT) every one gets its stream, and then its events."""
    crowd = 200
    port = int(server.rsplit(":", 1)[1])

    async def client(attached: asyncio.Event, events: asyncio.Queue) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api/app-user/_stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Accept: text/event-stream\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status = (await reader.readline()).decode().strip()
        try:
            while line := await reader.readline():
                if line.startswith(b"retry:"):
                    attached.set()
                elif line.startswith(b"id: "):
                    await events.put(int(line[4:]))
                    return status
            return status
        finally:
            writer.close()

    async def main() -> tuple[list[str], list[int]]:
        attached = [asyncio.Event() for _ in range(crowd)]
        queues: list[asyncio.Queue] = [asyncio.Queue() for _ in range(crowd)]
        tasks = [asyncio.create_task(client(a, q)) for a, q in zip(attached, queues, strict=True)]
        all_attached = asyncio.ensure_future(asyncio.gather(*(a.wait() for a in attached)))
        # A client's task ends early only when its stream does (an error status): stop at the first.
        await asyncio.wait([all_attached, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not all_attached.done():
            all_attached.cancel()
            ended = [task.result() for task in tasks if task.done() and not task.exception()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return ended or [f"{sum(not a.is_set() for a in attached)} clients never attached"], []
        _, position = await asyncio.to_thread(create_user, server, "Crowd")
        got = await asyncio.wait_for(asyncio.gather(*(q.get() for q in queues)), 30)
        await asyncio.gather(*tasks, return_exceptions=True)
        return [], [g - position for g in got]

    peak = PeakConnections().start() if connection.vendor == "postgresql" else None
    try:
        refused, offsets = asyncio.run(main())
    finally:
        if peak is not None:
            peak.stop()
    assert not refused, refused[:3]  # e.g. "HTTP/1.1 500 Internal Server Error": too many clients
    if peak is not None:
        # The gate's 8 openings, the feed reader, its LISTEN, the command's and its delivery's; a
        # closed opening's backend stays in pg_stat_activity a moment after its slot's next one
        # connects (seen under CI load as one over 12), so each slot may count twice. Not 200.
        assert peak.most <= 2 * 8 + 4, f"{peak.most} server connections at once"
    assert offsets == [0] * crowd  # every client got the event committed once all were attached


def test_connected_clients_hold_no_database_connection_each(server):
    """Under ASGI a waiting client costs a coroutine: not a thread, nor a database connection."""
    if connection.vendor != "postgresql":
        pytest.skip("counts the server's PostgreSQL connections")

    def server_connections() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    streams = [opened(f"{server}/api/app-user/_stream/") for _ in range(12)]
    try:
        _, position = create_user(server, "Many")
        assert all(int(s.next_event().id) == position for s in streams)
        # The feed reader, its LISTEN, the command's: not 12. Waited for, as a closed opening's
        # backend and a delivery thread's idle connection leave pg_stat_activity a moment later.
        wait_for(lambda: server_connections() <= 4, 10, 0.1, "the server to hold at most 4 connections")
    finally:
        for stream in streams:
            stream.close()
