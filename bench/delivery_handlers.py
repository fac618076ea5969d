"""The handler bench.delivery's latency run deploys to its Celery worker only (not to the bench process).

It writes the wall-clock time it started at into ``$FLUVIUS_BENCH_LATENCY_DIR/<position>``;
``fluvius.bench_ping`` is the baseline: an empty task doing the same.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task

from django_fluvius.delivery.handlers import event_handler


@event_handler("note-created", namespace="test-notes", name="bench.latency")
def latency(event):
    started = time.time()
    (Path(os.environ["FLUVIUS_BENCH_LATENCY_DIR"]) / str(event.position)).write_text(repr(started))


@shared_task(name="fluvius.bench_ping", ignore_result=True)
def ping(path: str) -> None:
    """The latency baseline: an empty task that writes when it started."""
    Path(path).write_text(repr(time.time()))
