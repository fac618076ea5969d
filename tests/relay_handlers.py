"""Handlers of the two-relay-processes test (tests/test_relay_processes.py), run inline by
``manage.py fluvius_relay --loop`` processes (settings: tests/relay_settings.py).

Each delivery records, in its ``Effect`` (written in the handler's transaction, with
its receipt), which process ran it, when it started and ended, and which process
held the subscription's lease meanwhile: the test proves from these that every
delivery ran under its own process's lease, and that two relays never ran one
subscription's deliveries at the same time.
"""

from __future__ import annotations

import os
import time

from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.models import Checkpoint
from tests.testapp.models import Effect

NAMES = ("tests.lead.a", "tests.lead.b")
# A registry of their own: only the relay processes (tests/relay_settings.py) install them,
# never the test process (its other tests would run them).
registry = HandlerRegistry()


def _record(name: str, event) -> None:
    started = time.time()
    # Who leads the subscription right now (the lease owner is "host:pid:thread:tag").
    owner = Checkpoint.objects.filter(name=name).values_list("lease_owner", flat=True).first() or "-:0"
    time.sleep(0.002)  # long enough that two leaders at once would overlap
    Effect.objects.create(handler=name, position=event.position, aggregate_id=event.aggregate_id,
                          version=event.version,
                          detail=f"{os.getpid()} {started!r} {time.time()!r} {owner.split(':')[1]}")


@event_handler("note-created", namespace="test-notes", name="tests.lead.a", start="beginning",
               registry=registry)
def lead_a(event):
    _record("tests.lead.a", event)


@event_handler("note-created", namespace="test-notes", name="tests.lead.b", start="beginning",
               registry=registry)
def lead_b(event):
    _record("tests.lead.b", event)


if os.environ.get("FLUVIUS_TEST_RELAY_HANDLERS") == "1":
    for spec in registry:
        handlers.register(spec)
