"""Replaying ``@event_handler`` functions over a range of stored events (``fluvius_replay``).

Invariant: a replay goes through the same ``deliver`` as a live delivery — one
transaction per (handler, event) pair with its receipt — so a pair replayed
with ``missing_only`` never takes effect twice, and a failure becomes a dead
letter rather than stopping the run half-way through a batch.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db import models

from django_fluvius.delivery.dispatch import DONE, DUPLICATE, WAIT, dead_letter, deliver
from django_fluvius.delivery.handlers import handlers
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.exceptions import EventDecodeError, RebuildError
from django_fluvius.models import DeadLetter


@dataclass
class ReplayReport:
    events: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    waiting: int = 0
    failures: list[str] = field(default_factory=list)
    pairs: list[tuple[str, int]] = field(default_factory=list)


def replay_events(*, from_position: int = 1, to_position: int | None = None, evt_keys: Sequence[str] = (),
                  namespace: str | None = None, aggregate_id: uuid.UUID | None = None,
                  using: str | None = None) -> models.QuerySet:
    """The stored events a replay reads (renamed keys included under their old names)."""

    events = EventStore(using).events.filter(position__gte=max(1, from_position))
    if to_position is not None:
        events = events.filter(position__lte=to_position)
    if namespace:
        events = events.filter(namespace=namespace)
    if aggregate_id is not None:
        events = events.filter(aggregate_id=aggregate_id)
    if evt_keys:
        events = events.filter(evt_key__in=upcasters.stored_keys(evt_keys, namespace))
    return events


def replay(*, from_position: int = 1, to_position: int | None = None, handler_names: Sequence[str] = (),
           evt_keys: Sequence[str] = (), namespace: str | None = None, aggregate_id: uuid.UUID | None = None,
           missing_only: bool = False, dry_run: bool = False, batch_size: int = 1000, using: str | None = None,
           on_event: Callable[[int], None] | None = None) -> ReplayReport:
    """Run ``@event_handler`` functions again for the stored events in a position range.

    Each (handler, event) pair goes through ``dispatch.deliver`` in its own
    transaction with its receipt, as a live delivery does. By default the pair
    runs even if it ran before (``force``: a replay is asked for on purpose, e.g.
    after fixing a handler); ``missing_only`` runs only the pairs that never
    succeeded (a new handler over old events), in order for ordered handlers.
    A failure is recorded as a dead letter (``fluvius_deadletters`` re-drives it)
    and the replay goes on. Async projections are not replayed here: rebuild them.
    """

    unknown = [name for name in handler_names if name not in handlers]
    if unknown:
        known = ", ".join(sorted(spec.name for spec in handlers)) or "none"
        raise RebuildError(f"No event handler named {', '.join(map(repr, unknown))} (known: {known}).")
    chosen = set(handler_names)
    store = EventStore(using)
    report = ReplayReport()
    events = replay_events(from_position=from_position, to_position=to_position, evt_keys=evt_keys,
                           namespace=namespace, aggregate_id=aggregate_id, using=using)
    position = max(1, from_position) - 1
    while True:
        batch = list(events.filter(position__gt=position).order_by("position")[:batch_size])
        if not batch:
            return report
        for stored in batch:
            position = stored.position
            report.events += 1
            try:
                event = store.decode(stored)
            except EventDecodeError as exc:
                report.failed += 1
                report.failures.append(str(exc))
                continue
            for spec in handlers.for_event(event):
                if chosen and spec.name not in chosen:
                    continue
                report.pairs.append((spec.name, event.position))
                if dry_run:
                    continue
                result = deliver(spec, event, force=not missing_only)
                if result.outcome == DONE:
                    report.done += 1
                elif result.outcome == DUPLICATE:
                    report.skipped += 1
                elif result.outcome == WAIT:
                    report.waiting += 1
                else:
                    report.failed += 1
                    report.failures.append(f"{spec.name} on {event.evt_key!r} at position {event.position} "
                                           f"(aggregate {event.aggregate_id} v{event.version}): {result.error!r}")
                    dead_letter(DeadLetter.Kind.HANDLER, spec.name, event, attempts=1, error=result.error,
                                tb=result.traceback)
            if on_event is not None:
                on_event(1)
