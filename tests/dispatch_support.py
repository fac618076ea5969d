"""Helpers of the dispatch tests: settings overrides, waiting, real Celery worker processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("FLUVIUS_TEST_BROKER", "redis://127.0.0.1:6379/5")
# A queue of this test run's own: several runs (other checkouts, CI jobs) may share the broker.
QUEUE = f"fluvius-tests-{uuid.uuid4().hex[:10]}"


def fluvius(**overrides: Any) -> dict[str, Any]:
    """FLUVIUS of the test settings with some keys changed (for override_settings)."""
    return {**settings.FLUVIUS, **overrides}


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"Timed out after {timeout}s waiting for {message}.")
        time.sleep(interval)


def broker_reachable(url: str = BROKER_URL, default_port: int = 6379) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def flush_broker(url: str = BROKER_URL, queue: str = QUEUE) -> None:
    """Drop the messages left in this run's queue (never other runs' messages)."""
    import redis

    redis.Redis.from_url(url).delete(queue)


class Worker:
    """A real ``celery -A example_project worker`` process on the test database."""

    def __init__(self, db_name: str, scratch: Path, log_dir: Path, *, concurrency: int = 2,
                 broker: str = BROKER_URL):
        self.broker = broker
        self.db_name = db_name
        self.scratch = scratch
        self.log_path = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Worker:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.worker_settings",
            "FLUVIUS_WORKER_DB_NAME": self.db_name,
            "FLUVIUS_TEST_SCRATCH": str(self.scratch),
            "FLUVIUS_TEST_BROKER": self.broker,
            "FLUVIUS_TEST_QUEUE": QUEUE,
            "PYTHONPATH": str(ROOT),
        }
        self.log = open(self.log_path, "w")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "example_project", "worker", "--pool", "prefork",
             "-c", str(self.concurrency), "-l", "info", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-Q", QUEUE, "-n", f"h5-{uuid.uuid4().hex[:8]}@%h"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(lambda: " ready." in self.output() or self.process.poll() is not None, timeout,
                 message="the Celery worker to start")
        if self.process.poll() is not None:
            raise RuntimeError(f"The Celery worker exited at start:\n{self.output()}")
        return self

    def output(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes (its own process group)."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if getattr(self, "log", None):
            self.log.close()
