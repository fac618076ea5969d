"""Read-your-writes: wait until a resource's read models have caught up with an event position.

A command answers with the position of its last event (``Fluvius-Position``).
A read that names a minimum position (``Fluvius-Min-Position``,
``?min_position=``, ``statemgr.fetch(..., min_position=n)``,
``QueryBuilder.min_position(n)``) is answered only once every read model of its
resource has processed that position:

* rows kept by **inline projections** commit with the events: they are current
  as soon as the command's response is sent, so a client never waits for a
  position it was given (a position beyond the head, which no response gave, is
  refused at once with ``InvalidPosition``, a 400);
* rows kept by **async projections** (``delivery/projections.py``, which
  register here as *feeders* of the models in their ``models``) are current for
  position *n* once the projection's checkpoint has passed every event it reads
  up to the event at *n* in feed order (``events/feed.py``);
* with a **read replica** (``FLUVIUS['READ_DATABASE']``) the checks run on the
  replica: its copy of the event at *n* (and of the checkpoints, replicated with
  the rows they cover) says it has replayed that far.

Past ``FLUVIUS['MIN_POSITION_TIMEOUT']`` seconds the read raises
``PositionNotReached`` (a 503 with ``Retry-After`` over HTTP): never data older
than the client asked for without saying so.

A position once reached stays reached (checkpoints only move forward; resetting
a projection calls ``forget()``), so each process remembers the highest position
it has seen reached per model and answers a read at or below it with no query.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async

from django_fluvius.conf import fluvius_settings
from django_fluvius.events.feed import Feed, FeedKey
from django_fluvius.exceptions import InvalidPosition, PositionNotReached
from django_fluvius.models import Checkpoint, Event
from django_fluvius.read.replicas import read_alias, write_alias

# A position as clients send it: digits only (no sign, no spaces, at most 18 digits).
_POSITION = re.compile(r"^[0-9]{1,18}$")  # ASCII digits only: int() would take "١٢" too
# How often a waiting read looks again (seconds): short at first, then at most this.
_FIRST_PAUSE = 0.005
_MAX_PAUSE = 0.1


def parse_position(value: Any, name: str = "min_position") -> int:
    """A position (an integer >= 0) from a header or parameter; ``InvalidPosition`` (400) otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidPosition(f"{name} must be an integer >= 0, not {value}.", errors={name: ["negative"]})
        return value
    text = str(value).strip()
    if not _POSITION.match(text):
        raise InvalidPosition(f"{name} must be an event position (an integer >= 0), not {text[:40]!r}.",
                              errors={name: [f"{text[:40]!r} is not a position."]})
    return ClientPosition(text, name)


class ClientPosition(int):
    """A position as a client sent it, with the name it came under (header or parameter), so an
    error found later (a position beyond the newest event) names what the client sent."""

    source: str

    def __new__(cls, text: str, source: str) -> ClientPosition:
        position = super().__new__(cls, text)
        position.source = source
        return position


@dataclass(frozen=True)
class Feeder:
    """An async projection as the read side sees it: its checkpoint's name and what it reads."""

    name: str
    models: tuple[Any, ...]  # classes or "app_label.Model"
    evt_keys: tuple[str, ...] | None  # None: every key
    namespace: str | None


class Feeders:
    """The async projections keeping each model (they register themselves: delivery sits above)."""

    def __init__(self) -> None:
        self._items: dict[str, Feeder] = {}

    def add(self, feeder: Feeder) -> None:
        self._items[feeder.name] = feeder
        forget()

    def remove(self, name: str) -> None:
        self._items.pop(name, None)
        forget()

    def of(self, model: type) -> list[Feeder]:
        return [f for f in self._items.values() if any(_is(m, model) for m in f.models)]


def _is(declared: Any, model: Any) -> bool:
    """Is a projection's ``models`` entry (a class or "app_label.Model") this model?"""
    if isinstance(declared, str):
        return declared.lower() == model._meta.label_lower
    return declared is model


feeders = Feeders()

# (read alias, model) -> the highest position seen reached in this process.
_reached: dict[tuple[str, type], int] = {}
_lock = threading.Lock()


def forget(model: type | None = None) -> None:
    """Drop what this process remembers of reached positions (a projection was reset)."""
    with _lock:
        if model is None:
            _reached.clear()
        else:
            for key in [k for k in _reached if k[1] is model]:
                del _reached[key]


def _target(position: int) -> FeedKey:
    """The feed key up to which the read models must be: the event at ``position`` (on the primary).

    ``InvalidPosition`` (400) when no event has that position or a later one: every
    position a client holds came from a committed event (a response's
    ``Fluvius-Position``, the stream), which the primary shows, so a position beyond its
    head is a mistake to say at once, not a reason to wait out the timeout. A hole (a
    rolled-back transaction's position) stands for the last event below it.
    """
    events = Event.objects.using(write_alias())
    row = events.filter(position=position).values_list("txid", "position").first()
    if row is None:
        head = events.order_by("-position").values_list("position", flat=True).first()
        if head is None or head < position:
            raise InvalidPosition(
                f"No event has position {position}: the newest is {head or 0}. Send a position this API "
                f"returned (Fluvius-Position).",
                errors={getattr(position, "source", "min_position"): ["beyond the newest event"]})
        row = events.filter(position__lt=position).order_by("-position").values_list("txid", "position").first()
        if row is None:
            return (0, 0)
    return (row[0] or 0, row[1])


def _feeder_reached(feeder: Feeder, key: FeedKey, alias: str) -> bool:
    row = Checkpoint.objects.using(alias).filter(name=feeder.name).values_list("txid", "position").first()
    if row is None:
        return False
    checkpoint = (row[0] or 0, row[1])
    if checkpoint >= key:
        return True
    # Events it does not read may lie between: caught up if none it reads does.
    keys = list(feeder.evt_keys) if feeder.evt_keys is not None else None
    return Feed(alias).count(checkpoint, key, evt_keys=keys, namespace=feeder.namespace) == 0


def reached(model: type, position: int) -> bool:
    """Has every read model of ``model`` processed ``position``? (One look, no waiting.)

    Answered from memory for a position at or below one already seen reached.
    """
    alias = read_alias() or write_alias()
    if position <= _reached.get((alias, model), 0):
        return True
    key = _target(position)
    if alias != write_alias() and key[1] and not Event.objects.using(alias).filter(position=key[1]).exists():
        return False  # the replica has not replayed it
    # Inline projections commit with the events: current once the event exists.
    if not all(_feeder_reached(feeder, key, alias) for feeder in feeders.of(model)):
        return False
    with _lock:
        if position > _reached.get((alias, model), 0):
            _reached[(alias, model)] = position
    return True


def _timeout(timeout: float | None) -> float:
    return float(fluvius_settings.MIN_POSITION_TIMEOUT if timeout is None else timeout)


def _not_reached(model: Any, position: int, waited: float) -> PositionNotReached:
    return PositionNotReached(
        f"The read models of {model._meta.label} have not processed position {position} "
        f"after {waited:.1f} s; try again shortly.",
        position=position, retry_after=1,
    )


def wait_for(model: type, position: int | None, *, timeout: float | None = None) -> None:
    """Return once ``model``'s read models have processed ``position``; ``PositionNotReached`` past
    the timeout (``FLUVIUS['MIN_POSITION_TIMEOUT']``). None or 0 returns at once."""
    if not position:
        return
    limit = _timeout(timeout)
    start = time.monotonic()
    pause = _FIRST_PAUSE
    while not reached(model, position):
        waited = time.monotonic() - start
        if waited >= limit:
            raise _not_reached(model, position, waited)
        time.sleep(min(pause, max(0.0, limit - waited)))
        pause = min(pause * 2, _MAX_PAUSE)


async def await_for(model: type, position: int | None, *, timeout: float | None = None) -> None:
    """``wait_for`` for async code: sleeps on the event loop between looks, holding no thread."""
    if not position:
        return
    limit = _timeout(timeout)
    start = time.monotonic()
    pause = _FIRST_PAUSE
    check = sync_to_async(reached)
    while not await check(model, position):
        waited = time.monotonic() - start
        if waited >= limit:
            raise _not_reached(model, position, waited)
        await asyncio.sleep(min(pause, max(0.0, limit - waited)))
        pause = min(pause * 2, _MAX_PAUSE)


def register_feeder(name: str, models: Sequence[Any], evt_keys: Sequence[str] | None,
                    namespace: str | None) -> None:
    feeders.add(Feeder(name, tuple(models), tuple(evt_keys) if evt_keys is not None else None, namespace))
