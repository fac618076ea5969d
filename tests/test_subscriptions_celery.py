"""Subscriptions with real parts (issue 14): OS processes, a Celery worker on Redis, a flushed broker.

* Rolling deploy: the worker runs the new handler set; two writer processes, one
  with the old handler set and one with the new, write events at the same time.
  The new handler gets every event written after its subscription started, each
  with its effect once.
* A broker that loses its data (``FLUSHDB`` of a Redis database of this test's own)
  while deliveries wait in it: nothing is lost, nothing has its effect twice.

Each test starts its own worker(s) on the test database. Without Redis the tests
are skipped, except in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from celery import Celery
from django.db import connection
from django.test import override_settings

from django_fluvius.delivery.dispatch import relay
from django_fluvius.models import Checkpoint, Event, HandlerReceipt
from tests import dispatch_handlers
from tests.testapp.models import Effect

from .dispatch_support import BROKER_URL, QUEUE, ROOT, Worker, broker_reachable, fluvius, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]

# The flush test empties a whole Redis database: one of its own, never the shared one.
FLUSH_BROKER = os.environ.get("FLUVIUS_TEST_FLUSH_BROKER", "redis://127.0.0.1:6379/14")


def need(url):
    if not broker_reachable(url):
        message = f"needs Redis at {url} (unreachable)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUVIUS_TEST_SCRATCH", str(tmp_path))
    return tmp_path


@pytest.fixture
def workers(scratch, tmp_path):
    started: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(connection.settings_dict["NAME"], scratch, tmp_path, **kwargs).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def writer(count: int, prefix: str, *, new_code: bool, scratch, broker: str = BROKER_URL) -> subprocess.Popen:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
        "FLUVIUS_WORKER_DB_NAME": connection.settings_dict["NAME"],
        "FLUVIUS_TEST_SCRATCH": str(scratch),
        "FLUVIUS_TEST_BROKER": broker,
        "FLUVIUS_TEST_QUEUE": QUEUE,
        "FLUVIUS_TEST_INSTALL_HANDLERS": "1" if new_code else "0",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen([sys.executable, "-m", "tests.subscription_writer", str(count), prefix], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> list[int]:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and out.strip().endswith("done"), f"writer failed:\n{out}\n{err}"
    return [int(line) for line in out.split() if line.isdigit()]


def effects_by_position(handler: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for position in Effect.objects.filter(handler=handler).values_list("position", flat=True):
        counts[position] = counts.get(position, 0) + 1
    return counts


def test_rolling_deploy_the_new_handler_gets_every_event_whatever_code_wrote_it(workers, scratch):
    need(BROKER_URL)
    worker = workers()  # the new handler set; its relay creates the subscriptions ("now")
    wait_for(lambda: Checkpoint.objects.filter(name="tests.record").exists(), message=worker.output())
    started = Checkpoint.objects.get(name="tests.record").position
    old, new = writer(25, "old code", new_code=False, scratch=scratch), writer(25, "new code", new_code=True,
                                                                                   scratch=scratch)
    written = finish(old) + finish(new)
    assert len(written) == 50 and min(written) > started
    wait_for(lambda: len(effects_by_position("record")) == 50 and len(effects_by_position("other")) == 50,
             timeout=60, message=f"every event's effect\n{worker.output()}")
    time.sleep(1.0)  # anything that would run twice has had its chance
    for handler in ("record", "other"):
        counts = effects_by_position(handler)
        assert sorted(counts) == sorted(written), handler
        assert set(counts.values()) == {1}, f"{handler}: none twice in effect"
    wait_for(lambda: Checkpoint.objects.get(name="tests.record").position >= max(written),
             message="the checkpoint to settle")
    assert not HandlerReceipt.objects.filter(status="pending").exists()


def test_a_broker_that_loses_its_data_loses_no_event(workers, scratch, monkeypatch):
    need(FLUSH_BROKER)
    # The workers hand over again what is not settled 2 s after its hand-over.
    monkeypatch.setenv("FLUVIUS_TEST_REDELIVER_AFTER", "2.0")
    import redis

    broker = Celery("fluvius-flush", broker=FLUSH_BROKER, set_as_current=False)
    broker.conf.broker_connection_retry_on_startup = True
    flush = redis.Redis.from_url(FLUSH_BROKER).flushdb
    dispatch_handlers.install()
    try:
        with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="sync", CELERY_APP=broker,
                                               CELERY_QUEUE=QUEUE, REDELIVER_AFTER=2.0)):
            first = writer(1, "first", new_code=True, scratch=scratch, broker=FLUSH_BROKER)
            finish(first)  # the subscriptions exist from here
            # No worker yet: the deliveries wait in the broker... which then loses them.
            waiting = finish(writer(10, "lost", new_code=True, scratch=scratch, broker=FLUSH_BROKER))
            assert HandlerReceipt.objects.filter(handler="tests.record", status="pending").count() >= 10
            flush()
            worker = workers(broker=FLUSH_BROKER)
            during = writer(20, "during", new_code=True, scratch=scratch, broker=FLUSH_BROKER)
            time.sleep(0.3)
            flush()  # and once more mid-run, while the worker works
            written = waiting + finish(during)
            wait_for(lambda: set(written) <= set(effects_by_position("record"))
                     and set(written) <= set(effects_by_position("other")),
                     timeout=60, message=f"the lost deliveries to be handed over again\n{worker.output()}")
            time.sleep(1.0)
            for handler in ("record", "other"):
                counts = effects_by_position(handler)
                assert set(counts.values()) == {1}, f"{handler}: nothing twice in effect"
            last = Event.objects.order_by("-position").first().position
            wait_for(lambda: Checkpoint.objects.get(name="tests.record").position >= last,
                     message="the checkpoint to settle")
            assert relay.flush(10)
    finally:
        dispatch_handlers.uninstall()
        broker.close()
        redis.Redis.from_url(FLUSH_BROKER).flushdb()


class BrokerProxy:
    """A TCP proxy in front of Redis that the test can take down and bring back (same port)."""

    def __init__(self, target=("127.0.0.1", 6379)):
        import socket
        import threading

        self.target = target
        self.socket_module = socket
        self.threading = threading
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.conns: list = []
        self.server = None
        self.up()

    def up(self):
        socket = self.socket_module
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen(50)
        self.threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server):
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = self.socket_module.create_connection(self.target)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self.threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self):
        self.server.close()
        for conn in self.conns:
            try:
                conn.shutdown(self.socket_module.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self.conns = []

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


def test_a_retry_while_the_broker_is_down_waits_and_is_handed_over_again(workers, scratch):
    need(FLUSH_BROKER)
    from django_fluvius.models import DeadLetter
    from tests.test_celery import create_note

    db = int(FLUSH_BROKER.rsplit("/", 1)[1])
    proxy = BrokerProxy()
    broker = Celery("fluvius-proxy", broker=proxy.url(db), set_as_current=False)
    dispatch_handlers.install()
    # RELAY="thread": on SQLite the failing handler holds the write lock while it waits.
    settings = override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="thread", CELERY_APP=broker,
                                                 CELERY_QUEUE=QUEUE))
    settings.enable()
    try:
        worker = workers(broker=proxy.url(db))
        note = create_note("flaky-down")
        position = note.events[0].position
        wait_for((scratch / "failing").exists, message=f"the first try\n{worker.output()}")
        proxy.down()  # the broker goes away while the handler fails
        (scratch / "broker-down").write_text("")
        wait_for(lambda: HandlerReceipt.objects.filter(handler="tests.record", position=position,
                                                       attempts=2, last_error__contains="own error").exists(),
                 timeout=30, message=f"the delivery to wait with the handler's error\n{worker.output()}")
        time.sleep(1.0)
        receipt = HandlerReceipt.objects.get(handler="tests.record", position=position)
        assert receipt.status == "pending", f"waiting, not dead-lettered\n{worker.output()}"
        assert "the handler's own error, with the broker down" in receipt.last_error
        assert not DeadLetter.objects.exists(), "no dead letter at try 1 of 4, nor under the broker's error"
        assert "Could not schedule try 2" in worker.output()
        proxy.up()  # back: the worker's relay hands the delivery over again, at try 2
        wait_for(lambda: Effect.objects.filter(handler="record", position=position).exists(), timeout=60,
                 message=f"the retry once the broker is back\n{worker.output()}")
        time.sleep(1.0)
        assert Effect.objects.filter(handler="record", position=position).count() == 1
        assert HandlerReceipt.objects.get(handler="tests.record", position=position).status == "done"
        assert dispatch_handlers.tries(position) == 2 and not DeadLetter.objects.exists()
        relay.flush(30)
    finally:
        settings.disable()
        dispatch_handlers.uninstall()
        proxy.down()
        broker.close()
