"""Event handlers and an async projection for the dispatch tests, run in-process and by
real Celery workers (tests/worker_settings.py lists this module).

They are defined in a registry of their own and put into the global one only by
``install()`` (the tests' fixtures, or a worker whose environment says so), so
other tests never run them.

What a handler does is steered by the note's title, so a worker process behaves
as the test wants:

* ``poison``: ``record`` always raises.
* ``flaky``: ``record`` raises while the file ``<scratch>/broken`` exists.
* ``flaky-down``: ``record`` fails its first try once the test has taken the broker away.
* ``slow``: ``record`` writes its effect, then on its first try writes
  ``<scratch>/slow.pid`` and sleeps (the test kills that process mid-task).

Every try of ``record`` appends a line to ``<scratch>/tries-<position>``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.delivery.projections import AsyncProjection, async_projections, on
from tests.testapp.models import Effect, NoteActivity

registry = HandlerRegistry()

NAMESPACE = "test-notes"


def scratch() -> Path:
    path = Path(os.environ.get("FLUVIUS_TEST_SCRATCH") or Path(tempfile.gettempdir()) / "fluvius-h5-scratch")
    path.mkdir(parents=True, exist_ok=True)
    return path


def tries(position: int) -> int:
    path = scratch() / f"tries-{position}"
    return len(path.read_text().splitlines()) if path.exists() else 0


def try_times(position: int) -> list[float]:
    path = scratch() / f"tries-{position}"
    return [float(line.split()[1]) for line in path.read_text().splitlines()] if path.exists() else []


def _effect(handler: str, event, detail: str = "") -> Effect:
    return Effect.objects.create(handler=handler, position=event.position, aggregate_id=event.aggregate_id,
                                 version=event.version, detail=detail)


@event_handler(["note-created", "note-edited"], namespace=NAMESPACE, name="tests.record", registry=registry,
               max_retries=3)
def record(event):
    with open(scratch() / f"tries-{event.position}", "a") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
    title = event.payload.get("title", "")
    if title == "poison":
        raise RuntimeError(f"poison event {event.position}")
    if title == "flaky" and (scratch() / "broken").exists():
        raise RuntimeError("broken for now")
    if title == "flaky-down" and tries(event.position) == 1:
        # Fails while the test takes the broker away: the retry cannot be scheduled.
        (scratch() / "failing").write_text(str(event.position))
        end = time.time() + 20
        while not (scratch() / "broker-down").exists() and time.time() < end:
            time.sleep(0.05)
        raise RuntimeError("the handler's own error, with the broker down")
    _effect("record", event)
    if title == "slow" and tries(event.position) == 1:
        (scratch() / "slow.pid").write_text(str(os.getpid()))
        time.sleep(60)


@event_handler("note-created", namespace=NAMESPACE, name="tests.other", registry=registry)
def other(event):
    _effect("other", event)


@event_handler(["note-created", "note-edited"], namespace=NAMESPACE, name="tests.ordered", ordered=True,
               registry=registry)
def ordered(event):
    if event.payload.get("body") == "slow":
        time.sleep(0.5)
    _effect("ordered", event, detail=str(event.version))


@event_handler("note-archived", namespace=NAMESPACE, name="tests.async_record", registry=registry)
async def async_record(event):
    await Effect.objects.acreate(handler="async", position=event.position, aggregate_id=event.aggregate_id,
                                 version=event.version)


def not_a_handler(event):  # for the FLUVIUS['HANDLERS'] check: a function without @event_handler
    return None


class NoteActivityProjection(AsyncProjection, register=False):
    """Counts events per note; the title from note-created."""

    name = "tests.note-activity"
    namespace = NAMESPACE
    models = [NoteActivity]

    @on("note-created")
    def created(self, event):
        NoteActivity.objects.using(self.using).update_or_create(
            pk=event.aggregate_id, defaults={"title": event.payload.get("title", "")})
        self._count(event)

    @on("note-edited", "note-archived")
    def changed(self, event):
        if event.payload.get("body") == "poison":
            raise ValueError(f"cannot project event {event.position}")
        self._count(event)

    def _count(self, event):
        row, _ = NoteActivity.objects.using(self.using).get_or_create(pk=event.aggregate_id)
        row.events += 1
        row.last_version = event.version
        row.last_position = event.position
        row.save(using=self.using)


def install() -> None:
    for spec in registry:
        handlers.register(spec)
    async_projections.register(NoteActivityProjection)


def uninstall() -> None:
    for spec in registry:
        handlers.unregister(spec.name)
    async_projections.unregister(NoteActivityProjection.name)


if os.environ.get("FLUVIUS_TEST_INSTALL_HANDLERS") == "1":
    install()
