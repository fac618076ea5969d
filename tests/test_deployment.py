"""The example project's process set, run for real on loopback (docs/deployment.md).

The processes are the ``web``, ``relay``, ``worker`` and ``beat`` lines of
``example_project/deploy/Procfile``, each run through a shell as a Procfile runner
does, configured by the environment only (as in production): gunicorn with two
workers on a free port, ``fluvius_relay --loop``, a Celery worker and beat on Redis
database 12 (emptied first: its own, no other test uses it), all on this test's
database. A short scenario goes over HTTP — commands, queries, a handler's effect
(the welcome email; the orders process manager cancelling a deactivated customer's
order, seen in the order's read model) — the health and readiness endpoints are
asked, then every process gets SIGTERM right after a burst of commands: each must
exit 0, and no event may be lost (every user got an email, exactly once) or stuck
(no delivery left pending, no message left in the broker, no dead letter). The Procfile's
commented ASGI web line (uvicorn, two workers) is run the same way, handlers inline.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.db import connection

from django_fluvius.models import DeadLetter, Event, HandlerReceipt

from .dispatch_support import broker_reachable, wait_for
from .test_rebuild import database_url

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "example_project" / "deploy" / "Procfile"
BROKER = os.environ.get("FLUVIUS_DEPLOY_TEST_BROKER", "redis://127.0.0.1:6379/12")
WELCOME = "example_project.users.handlers.send_welcome_email"
# The example project's commands need a signed-in user: HTTP Basic, as a script would.
CREDENTIALS = ("deployer", "deploy-secret")
AUTH = {"Authorization": "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()}

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


def procfile() -> dict[str, str]:
    lines = (line.split(":", 1) for line in PROCFILE.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {name.strip(): command.strip() for name, command in lines}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class ProcessSet:
    """The Procfile's processes, started through ``sh -c 'exec ...'`` in their own sessions."""

    def __init__(self, env: dict[str, str], logs: Path):
        self.env = env
        self.logs = logs
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, command: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(["/bin/sh", "-c", f"exec {command}"], cwd=ROOT, env=self.env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[name] = process
        return process

    def output(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def alive(self, name: str) -> bool:
        return self.processes[name].poll() is None

    def children(self, name: str) -> list[int]:
        pid = self.processes[name].pid
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def stop(self, name: str, timeout: float = 60.0) -> int:
        """SIGTERM, as a supervisor stops a process; its exit status."""
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        return process.wait(timeout)

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def report(self) -> str:
        return "\n".join(f"--- {name} (exit {p.poll()}):\n{self.output(name)[-3000:]}"
                         for name, p in self.processes.items())


@pytest.fixture
def broker():
    if not broker_reachable(BROKER):
        message = f"needs the Redis broker at {BROKER} (unreachable)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the deployment test")
        pytest.skip(message)
    import redis

    client = redis.Redis.from_url(BROKER)
    client.flushdb()  # database 12 is this test's: nothing of an earlier run may be delivered
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def deployer(transactional_db, django_user_model):
    """The user the HTTP calls sign in as (committed: the processes read it).

    Hashed with a hasher the example project knows (the tests' own is MD5), at few
    iterations so that Basic auth on every request stays cheap.
    """
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user = django_user_model(username=CREDENTIALS[0])
    user.password = PBKDF2PasswordHasher().encode(CREDENTIALS[1], "deploysalt", iterations=1000)
    user.save()
    return user


@pytest.fixture
def deployment(broker, deployer, tmp_path):
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("gunicorn is not installed (the dev extra has it)")
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": uuid.uuid4().hex,
        "DATABASE_URL": database_url(),
        "DATABASE_CONN_MAX_AGE": "60",
        "CELERY_BROKER_URL": BROKER,
        "FLUVIUS_DISPATCH": "celery",
        "FLUVIUS_DATA_DIR": str(tmp_path / "data"),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(tmp_path / "mail"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "WORKER_CONCURRENCY": "2",
    }
    for name in ("FLUVIUS_TEST_DB_NAME", "CELERY_VISIBILITY_TIMEOUT"):
        env.pop(name, None)
    processes = ProcessSet(env, tmp_path)
    commands = procfile()
    try:
        for name in ("web", "relay", "worker", "beat"):
            processes.start(name, commands[name])
        base = f"http://127.0.0.1:{port}"

        def web_up():
            try:
                return http("GET", f"{base}/health/")[0] == 200
            except OSError:
                return False

        wait_for(lambda: web_up() or not processes.alive("web"), 60, 0.2, "gunicorn to answer")
        wait_for(lambda: " ready." in processes.output("worker") or not processes.alive("worker"), 60, 0.2,
                 "the Celery worker to be ready")
        for name in ("web", "relay", "worker", "beat"):
            assert processes.alive(name), processes.report()
        yield processes, base, tmp_path / "mail"
    except BaseException:
        print(processes.report())
        raise
    finally:
        processes.kill_all()


def emails(mail_dir: Path) -> list[str]:
    """The recipients of the welcome emails written so far."""
    found = []
    for path in mail_dir.glob("*.log") if mail_dir.exists() else []:
        found += re.findall(r"^To: (\S+)$", path.read_text(), re.M)
    return found


def test_the_process_set_serves_delivers_and_stops_cleanly(deployment, broker):
    processes, base, mail_dir = deployment
    assert len(processes.children("web")) == 2, "gunicorn runs two workers"
    api = f"{base}/api"

    # Commands and queries over HTTP.
    status, ann = http("POST", f"{api}/app-user/create-user/", {"name": "Ann", "email": "ann@example.com"})
    assert status == 201, ann
    status, order = http("POST", f"{api}/app-order/place-order/",
                         {"customer_id": ann["aggregate_id"], "items": [{"sku": "TEA-1", "quantity": 2,
                                                                         "price": "4.50"}]})
    assert status == 201, order
    status, item = http("GET", f"{api}/app-user/user/{ann['aggregate_id']}/")
    assert (status, item["name"], item["active"]) == (200, "Ann", True)
    status, refused = http("POST", f"{api}/app-user/create-user/", {"name": "X", "email": "nope"})
    assert status == 422 and refused["code"]

    # A handler's effects: the welcome email (a worker sent it) ...
    wait_for(lambda: emails(mail_dir) == ["ann@example.com"], 30, 0.2, "the welcome email")
    # ... and the orders process manager: deactivating the customer cancels the open order,
    # through a worker issuing a command, seen in the order's read model over HTTP.
    status, _ = http("POST", f"{api}/app-user/deactivate-user/{ann['aggregate_id']}/", {})
    assert status == 200
    order_url = f"{api}/app-order/order/{order['aggregate_id']}/"
    wait_for(lambda: http("GET", order_url)[1]["status"] == "cancelled", 30, 0.2, "the order to be cancelled")

    # Health and readiness, with everything delivered.
    assert http("GET", f"{base}/health/") == (200, {"status": "ok"})
    status, ready = wait_for(lambda: (r := http("GET", f"{base}/health/ready/"))[0] == 200 and r, 30, 0.5,
                             "readiness")
    assert ready["checks"]["database"]["status"] == "ok"
    assert ready["checks"]["delivery"]["status"] == "ok"

    # A burst of commands from several clients, then SIGTERM to everything, web first:
    # gunicorn finishes the requests in flight; the events are on the feed whatever stops when.
    def create(i):
        return http("POST", f"{api}/app-user/create-user/", {"name": f"U{i}", "email": f"u{i}@example.com"})

    with ThreadPoolExecutor(6) as pool:
        statuses = [status for status, _ in pool.map(create, range(12))]
    assert statuses == [201] * 12
    assert processes.stop("web") == 0, processes.output("web")
    assert processes.stop("relay") == 0, processes.output("relay")
    assert "Relay stopped." in processes.output("relay")
    # Beat too: nothing depends on it (the worker's own relay hands over).
    assert processes.stop("beat") == 0, processes.output("beat")

    # Nothing was left behind by the web tier: the worker delivers every email, once.
    expected = sorted(["ann@example.com", *(f"u{i}@example.com" for i in range(12))])
    wait_for(lambda: sorted(emails(mail_dir)) == expected, 30, 0.2, "every welcome email")
    assert processes.stop("worker") == 0, processes.output("worker")
    assert "Warm shutdown" in processes.output("worker") or "warm shutdown" in processes.output("worker").lower()

    # No lost event, no stuck delivery.
    created = Event.objects.filter(evt_key="user-created").count()
    assert created == 13
    assert HandlerReceipt.objects.filter(handler=WELCOME).count() == created
    assert not HandlerReceipt.objects.filter(status="pending").exists(), "every delivery settled"
    assert not DeadLetter.objects.exists(), list(DeadLetter.objects.values("handler", "error_message"))
    assert broker.llen("celery") == 0 and broker.hlen("unacked") == 0
    assert sorted(emails(mail_dir)) == expected  # nothing sent twice after the stop either
    connection.close()


def asgi_web_command() -> str:
    """The Procfile's commented ASGI alternative of its web line."""
    [line] = [line for line in PROCFILE.read_text().splitlines() if line.startswith("# web: uvicorn ")]
    return line.removeprefix("# web: ")


def test_the_asgi_web_process_serves_and_stops_cleanly(deployer, tmp_path):
    """The web line's ASGI alternative (uvicorn, two workers), with handlers inline: no broker."""
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DJANGO_DEBUG": "0",
        "DATABASE_URL": database_url(),
        "FLUVIUS_DISPATCH": "inline",
        "FLUVIUS_DATA_DIR": str(tmp_path / "data"),
        "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
        "EMAIL_FILE_PATH": str(tmp_path / "mail"),
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
    }
    env.pop("FLUVIUS_TEST_DB_NAME", None)
    processes = ProcessSet(env, tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        processes.start("web", asgi_web_command())

        def up():
            try:
                return http("GET", f"{base}/health/")[0] == 200
            except OSError:
                return not processes.alive("web")

        wait_for(up, 60, 0.2, "uvicorn to answer")
        assert processes.alive("web"), processes.report()
        status, ann = http("POST", f"{base}/api/app-user/create-user/", {"name": "Ann", "email": "ann@example.com"})
        assert status == 201, ann
        status, item = http("GET", f"{base}/api/app-user/user/{ann['aggregate_id']}/")
        assert (status, item["name"]) == (200, "Ann")
        assert emails(tmp_path / "mail") == ["ann@example.com"]  # the handler ran inline, after commit
        status, ready = http("GET", f"{base}/health/ready/")
        assert status == 200 and ready["checks"]["database"]["status"] == "ok", ready
        assert processes.stop("web") == 0, processes.report()
    except BaseException:
        print(processes.report())
        raise
    finally:
        processes.kill_all()
        connection.close()
