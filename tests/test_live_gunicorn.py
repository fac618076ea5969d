"""Issue 16 under a real server: gunicorn (sync workers, a process of its own) on the test
database, driven by plain sockets.

- A worker SIGKILLed in the middle of an upload leaves its staged file behind; the sweep
  (the management command, and the startup of the worker gunicorn starts in its place)
  removes it.
- Bodies nested past the recursion limit, lone surrogates and NUL are JSON 400s, and a
  chunked JSON body is read.
"""

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection

from django_fluvius.models import CommandLog, Event, MediaEntry
from tests.media_support import place_order, png

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db(transaction=True)
BOUNDARY = "live-boundary"


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    scheme, port = {"postgresql": ("postgres", 5432), "mysql": ("mysql", 3306)}[connection.vendor]
    return f"{scheme}://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or port}/{db['NAME']}"


class Gunicorn:
    """gunicorn on 127.0.0.1, a port of the kernel's choosing (read from its log)."""

    def __init__(self, media_root: Path, *extra: str):
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.live_settings", "DATABASE_URL": database_url(),
               "LIVE_MEDIA_ROOT": str(media_root), "PYTHONPATH": str(ROOT)}
        env.pop("FLUVIUS_TEST_DB_NAME", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "example_project.wsgi:application", "--bind", "127.0.0.1:0",
             "--workers", "1", "--worker-class", "sync", "--timeout", "120", "--log-level", "info",
             "--chdir", str(ROOT), *extra],
            env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.log: list[str] = []
        self.port: int | None = None
        self.ready = threading.Event()
        threading.Thread(target=self._read_log, daemon=True).start()
        if not self.ready.wait(60) or self.port is None:
            self.stop()
            raise AssertionError("gunicorn did not start:\n" + "".join(self.log[-30:]))
        self.wait_for(lambda: self.worker() is not None, "a worker")

    def _read_log(self) -> None:
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                self.ready.set()
        self.ready.set()

    def worker(self) -> int | None:
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}:\n" + "".join(self.log[-30:]))

    def request(self, method, path, body=None, headers=None, **kwargs):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {}, **kwargs)
            response = conn.getresponse()
            raw = response.read()
            return response.status, response.getheader("Content-Type") or "", raw
        finally:
            conn.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture
def media_root(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def auth():
    get_user_model().objects.create_user("live", password="live-pw")
    return {"Authorization": "Basic " + base64.b64encode(b"live:live-pw").decode()}


def stages(media_root: Path) -> list[Path]:
    return sorted((media_root / ".incoming").glob(".upload-*.part"))


def start_upload_and_stall(server: Gunicorn, order_id, auth) -> socket.socket:
    """Send the head of an 8 MiB upload and 2 MiB of it, then nothing: the worker waits mid-upload."""
    part_head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
                 f"Content-Type: image/png\r\n\r\n").encode()
    length = len(part_head) + 8 * 1024 * 1024 + len(f"\r\n--{BOUNDARY}--\r\n")
    head = (f"POST /api/app-order/order/{order_id}/media/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: {auth['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {length}\r\n\r\n").encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(head + part_head + png(2 * 1024 * 1024))
    return sock


@pytest.mark.parametrize("preload", [True, False], ids=["swept-by-command", "swept-by-next-worker"])
def test_a_sigkilled_worker_leaves_a_stage_and_the_sweep_removes_it(media_root, auth, preload):
    order_id = place_order()
    # --preload: the app loads once, in the master, so a new worker does not sweep at its start
    # (what stays behind can be seen); without it each worker loads the app and sweeps.
    server = Gunicorn(media_root, *(["--preload"] if preload else []))
    try:
        sock = start_upload_and_stall(server, order_id, auth)
        server.wait_for(lambda: stages(media_root), "the upload's stage file")
        stage = stages(media_root)[0]
        worker = server.worker()
        assert stage.name.startswith(f".upload-{worker}@"), (stage.name, worker)  # whose it is

        os.kill(worker, signal.SIGKILL)
        server.wait_for(lambda: server.worker() not in (None, worker), "the replacement worker")
        sock.close()
        if preload:
            time.sleep(1.0)
            assert stage.exists()  # nothing of the dead worker cleaned up after it
            out = io.StringIO()
            call_command("fluvius_sweep_uploads", "--dir", str(media_root / ".incoming"), verbosity=2,
                         stdout=out)
            assert str(stage) in out.getvalue() and "Removed 1 staged upload(s)." in out.getvalue()
        else:
            server.wait_for(lambda: not stage.exists(), "the new worker's sweep at start", timeout=30)
        assert not stage.exists()

        # The server goes on: a whole upload works and leaves no stage.
        body = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="ok.png"\r\n'
                f"Content-Type: image/png\r\n\r\n").encode() + png(4096) + f"\r\n--{BOUNDARY}--\r\n".encode()
        status, _, raw = server.request("POST", f"/api/app-order/order/{order_id}/media/", body,
                                        {**auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        assert status == 201, raw[:300]
        assert stages(media_root) == [] and MediaEntry.objects.count() == 1
    finally:
        server.stop()


def test_hostile_json_bodies_are_json_400s_and_chunked_bodies_are_read(media_root, auth):
    order_id = place_order()
    logged = CommandLog.objects.count()
    server = Gunicorn(media_root)
    try:
        json_headers = {**auth, "Content-Type": "application/json"}
        add_item = f"/api/app-order/add-item/{order_id}/"
        for body in (b"[" * 100_000, b'{"sku": ' + b"[" * 100_000):
            status, ctype, raw = server.request("POST", add_item, body, json_headers)
            assert (status, json.loads(raw)["code"]) == (400, "parse_error"), raw[:300]
            assert ctype.startswith("application/json")
        nested = "x"
        for _ in range(200):
            nested = {"n": nested}
        status, _, raw = server.request("POST", "/api/app-order/place-order/",
                                        json.dumps({"customer_id": str(uuid.uuid4()), "items": [nested]}),
                                        json_headers)
        assert (status, json.loads(raw)["code"]) == (400, "invalid_payload"), raw[:300]
        for body in (b'{"name": "a", "email": "a@x.io", "\\ud800": 1}',
                     json.dumps({"customer_id": str(uuid.uuid4()),
                                 "items": [{"sku": "a\u0000", "quantity": 1, "price": "1.00"}]}).encode()):
            url = "/api/app-user/create-user/" if b"email" in body else "/api/app-order/place-order/"
            status, _, raw = server.request("POST", url, body, json_headers)
            assert status == 400 and json.loads(raw)["code"] == "invalid_payload", raw[:300]
        assert CommandLog.objects.count() == logged  # none of it reached the bus

        chunks = [b'{"name": "Chunked", ', b'"email": "chunked@example.com"}']
        status, _, raw = server.request("POST", "/api/app-user/create-user/", iter(chunks), json_headers,
                                        encode_chunked=True)
        assert status == 201, raw[:300]
        assert json.loads(raw)["state"]["name"] == "Chunked"
        assert Event.objects.filter(evt_key="user-created").count() == 1
    finally:
        server.stop()
