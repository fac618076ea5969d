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


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: the bench polls for the file and reads it at once."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(text)
    os.replace(partial, path)


@event_handler("note-created", namespace="test-notes", name="bench.latency")
def latency(event):
    started = time.time()
    _write(Path(os.environ["FLUVIUS_BENCH_LATENCY_DIR"]) / str(event.position), repr(started))


@shared_task(name="fluvius.bench_ping", ignore_result=True)
def ping(path: str) -> None:
    """The latency baseline: an empty task that writes when it started."""
    _write(Path(path), repr(time.time()))
