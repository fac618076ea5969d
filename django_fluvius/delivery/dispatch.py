"""How committed events reach ``@event_handler`` functions and async projections.

The event log is the outbox
    A command's transaction writes its events and nothing for delivery. Every
    handler and async projection is a *subscription* with a checkpoint on the
    gap-safe feed (``subscriptions.py``); a *relay* reads the feed after each
    checkpoint and delivers. Which process wrote an event does not matter: a
    handler deployed only to the workers gets the events the old web processes
    write.

Waking the relay
    On commit the bus's ``events_appending`` receiver below schedules a wake-up:
    ``"inline"`` mode delivers at once in the committing process (``deliver_committed``:
    the lease and the feed's bound in one statement, the checkpoint moved in the last
    delivery's transaction); ``"celery"``
    mode wakes this process's relay thread (the request never waits on the
    broker). Other processes hear of the commit through PostgreSQL
    ``NOTIFY fluvius_events``, sent *after* commit by the relay thread, at once for
    a lone commit and at most once per ``RELAY_NOTIFY_INTERVAL`` however many
    commits it covers (a ``NOTIFY`` inside the transaction would take a global lock
    at commit and serialize writers). Long-running
    relays (``fluvius_relay --loop``, the one every Celery worker starts)
    ``LISTEN`` and also poll every ``RELAY_POLL`` seconds: the safety net, and
    the only mechanism on SQLite.

Delivery: at least once, effect exactly once
    A delivery is one (handler, event) pair. ``deliver()`` runs the handler in a
    transaction on the handler's database that turns its ``HandlerReceipt`` to
    ``done``; a second delivery of the same pair finds it and does nothing, a
    failed one rolls the receipt back with the effect. In ``"celery"`` mode the
    relay writes a ``pending`` receipt before it publishes; the subscription's
    checkpoint never passes a pending receipt, and a pending one not settled by
    its ``due`` time (``REDELIVER_AFTER``) is published again — a broker that
    lost its messages costs a delay, never an event. A failure is retried with
    exponential backoff; if the broker is down when a retry is scheduled, the
    delivery waits (pending, with the handler's error) for the relay to hand it
    over again. After the last try it is a ``DeadLetter`` (settled) that
    ``fluvius_deadletters`` lists, re-drives or discards.

Ordering
    ``@event_handler(..., ordered=True)`` never handles version N+1 of an
    aggregate before N: a delivery whose previous matching event of the same
    aggregate is pending or dead-lettered for this handler waits and is tried again.

Dispatch modes (``FLUVIUS['DISPATCH']``, the ``DISPATCHERS`` lookup table)
    ``"inline"`` (the embedded default: no broker) delivers in this process right
    after commit, one try each (a failure is dead-lettered at once), and catches
    async projections up; ``"celery"`` hands over to Celery workers (tasks.py);
    ``None``/``"off"`` delivers nothing (checkpoints stay where they are).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import IntegrityError, OperationalError, connections, transaction
from django.db.models.signals import post_migrate
from django.utils import timezone
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import locked, subscriptions
from django_fluvius.delivery.handlers import ALL_EVENTS, HandlerSpec, handlers
from django_fluvius.events import sql
from django_fluvius.events.feed import Feed, FeedKey
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt
from django_fluvius.privacy.copies import seal_texts
from django_fluvius.write.bus import events_appending

logger = logging.getLogger("django_fluvius.dispatch")

DELIVER_TASK = "fluvius.deliver"
PROJECT_TASK = "fluvius.project"
RELAY_TASK = "fluvius.relay"
# The PostgreSQL notification channel a commit wakes other processes' relays on.
CHANNEL = "fluvius_events"


# -- subscribers besides handlers (async projections register here) ---------------------------


class Subscribers:
    """Async projections (delivery/projections.py), as the relay sees them.

    They sit above this module, so they register themselves here instead of being
    imported. A subscriber has ``name``, ``start``, ``namespace``, ``read_keys()``,
    ``wants(event)``, ``behind(using)``, ``run_inline(using)`` and ``redrive(event, using)``.
    """

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self.version = 0  # changes with every add or remove (the commit path compares it)

    def add(self, subscriber: Any) -> None:
        self._items[subscriber.name] = subscriber
        self.version += 1

    def remove(self, name: str) -> None:
        self._items.pop(name, None)
        self.version += 1

    def get(self, name: str) -> Any:
        return self._items.get(name)

    def __iter__(self):
        return iter(list(self._items.values()))

    def wanting(self, event: Any) -> list[Any]:
        return [s for s in self._items.values() if s.wants(event)]


subscribers = Subscribers()


def declared() -> list[subscriptions.Subscription]:
    """Every subscription this process knows: its handlers and its async projections."""
    return subscriptions.declared(subscribers)


def is_wanted(event: Any) -> bool:
    return bool(handlers.for_event(event) or subscribers.wanting(event))


# -- settings helpers ------------------------------------------------------------------------


def store_database() -> str:
    return fluvius_settings.DATABASE


def handler_database(spec: HandlerSpec) -> str:
    return spec.using or fluvius_settings.DATABASE


def max_tries(spec: HandlerSpec) -> int:
    retries = spec.max_retries if spec.max_retries is not None else fluvius_settings.HANDLER_MAX_RETRIES
    return 1 + max(0, int(retries))


def retry_delay(attempt: int) -> float:
    """Seconds before try ``attempt + 1``: exponential from RETRY_BACKOFF, capped, jittered."""
    base = float(fluvius_settings.RETRY_BACKOFF)
    delay = min(float(fluvius_settings.RETRY_BACKOFF_MAX), base * (2 ** max(0, attempt - 1)))
    if fluvius_settings.RETRY_JITTER:
        # "Equal jitter": never less than half the delay, so the backoff still grows.
        delay = delay / 2 + random.uniform(0, delay / 2)  # noqa: S311 - not cryptographic
    return delay


def celery_app() -> Any:
    app = fluvius_settings.CELERY_APP
    if isinstance(app, str):
        app = import_string(app)
    if app is None:
        from celery import current_app

        app = current_app
    return app


# -- delivering one (handler, event) pair ----------------------------------------------------


DONE = "done"
DUPLICATE = "duplicate"
WAIT = "wait"
FAILED = "failed"


@dataclass
class Delivery:
    outcome: str
    error: BaseException | None = None
    traceback: str = ""
    blocked_by: int | None = None


def load_event(position: int, using: str | None = None) -> Event:
    """The stored event at ``position``, decoded (upcasters, renames)."""
    store = EventStore(using)
    return store.decode(store.events.get(position=position))


def _receipt_table(connection: Any) -> tuple[str, Callable[[str], str]]:
    quote = connection.ops.quote_name
    return quote(HandlerReceipt._meta.db_table), quote


def claim_receipt(handler: str, position: int, using: str) -> bool:
    """Insert the (handler, event) receipt; False if a delivery already did the work.

    One statement: a pending receipt (written by the relay for an ordered handler)
    becomes done; a done or discarded one stays and nothing is returned. A
    concurrent delivery of the same pair waits on the unique index until ours
    commits or rolls back.
    """
    connection = connections[using]
    if connection.vendor == "mysql":
        return _claim_receipt_mysql(handler, position, connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_claim),
                       [handler, position, HandlerReceipt.Status.DONE, now, PENDING])
        return cursor.fetchone() is not None


def _build_claim(q: Callable[[str], str]) -> str:
    table = q(HandlerReceipt._meta.db_table)
    return (
        f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}, "
        f"{q('attempts')}, {q('last_error')}) "
        f"VALUES (%s, %s, %s, %s, 1, '') ON CONFLICT ({q('handler')}, {q('position')}) "
        f"DO UPDATE SET {q('status')} = EXCLUDED.{q('status')}, {q('due')} = NULL "
        f"WHERE {table}.{q('status')} = %s RETURNING {q('id')}"
    )


def _claim_receipt_mysql(handler: str, position: int, connection: Any) -> bool:
    """``claim_receipt`` on MariaDB / MySQL, which have neither ``ON CONFLICT (cols)`` nor a
    way to tell an inserted row from an untouched one in ``ON DUPLICATE KEY UPDATE`` (Django
    connects with FOUND_ROWS). A pending receipt is settled by an UPDATE of pending rows only;
    otherwise an INSERT, where a duplicate means a delivery already did the work. A failed
    statement rolls back only itself there, so the caller's transaction goes on.
    """
    table, q = _receipt_table(connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {q('status')} = %s, {q('due')} = NULL "
                       f"WHERE {q('handler')} = %s AND {q('position')} = %s AND {q('status')} = %s",
                       [HandlerReceipt.Status.DONE, handler, position, PENDING])
        if cursor.rowcount:
            return True
        try:
            cursor.execute(f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}, "
                           f"{q('attempts')}, {q('last_error')}) VALUES (%s, %s, %s, %s, 1, '')",
                           [handler, position, HandlerReceipt.Status.DONE, now])
        except IntegrityError:
            return False
    return True


PENDING = HandlerReceipt.Status.PENDING
# Receipt statuses that settle a delivery: the checkpoint may pass them.
SETTLED = (HandlerReceipt.Status.DONE, HandlerReceipt.Status.FAILED, HandlerReceipt.Status.DISCARDED)


def redeliver_after() -> timedelta:
    return timedelta(seconds=float(fluvius_settings.REDELIVER_AFTER))


def mark_pending(pairs: Iterable[tuple[HandlerSpec, int]], *, due: Any = None) -> None:
    """Pending receipts, written by the relay before it publishes the deliveries.

    An existing receipt (done, dead-lettered, discarded, or pending already) is
    left as it is: a delivery handed over again never undoes a settled one.
    """
    due = due or timezone.now() + redeliver_after()
    by_db: dict[str, list[HandlerReceipt]] = defaultdict(list)
    for spec, position in pairs:
        by_db[handler_database(spec)].append(HandlerReceipt(handler=spec.name, position=position, status=PENDING,
                                                            due=due))
    for using, rows in by_db.items():
        HandlerReceipt.objects.using(using).bulk_create(rows, ignore_conflicts=True)


def insert_pending(spec: HandlerSpec, positions: Sequence[int]) -> set[int]:
    """Pending receipts for these deliveries, in one statement; the positions to publish.

    These positions lie after the subscription's handed-over mark: a pending
    receipt among them was written by a hand-over that failed (broker down) or
    died, so it is published again; a settled one (done, dead-lettered,
    discarded) is left out.
    """
    if not positions:
        return set()
    using = handler_database(spec)
    connection = connections[using]
    table, q = _receipt_table(connection)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    due = connection.ops.adapt_datetimefield_value(timezone.now() + redeliver_after())
    fresh: set[int] = set()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The positions as one array: five parameters, not six per row for the driver to adapt.
            cursor.execute(
                f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}, "
                f"{q('attempts')}, {q('due')}, {q('last_error')}) "
                f"SELECT %s, p, %s, %s, 1, %s, '' FROM unnest(%s::bigint[]) AS p "
                f"ON CONFLICT ({q('handler')}, {q('position')}) DO NOTHING RETURNING {q('position')}",
                [spec.name, PENDING, now, due, list(positions)])
            fresh.update(row[0] for row in cursor.fetchall())
            positions_left: Sequence[Any] = ()
        else:
            positions_left = positions
        for chunk in _in_chunks(positions_left):
            if connection.vendor == "mysql":
                # No RETURNING of inserted rows only: insert what is missing (the no-op update
                # keeps existing receipts as they are); the pending ones are found below.
                rows = ", ".join(["(%s, %s, %s, %s, 1, %s, '')"] * len(chunk))
                cursor.execute(
                    f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}, "
                    f"{q('attempts')}, {q('due')}, {q('last_error')}) VALUES {rows} "
                    f"ON DUPLICATE KEY UPDATE {q('handler')} = {q('handler')}",
                    [value for position in chunk for value in (spec.name, position, PENDING, now, due)])
                continue
            rows = ", ".join(["(%s, %s, %s, %s, 1, %s, '')"] * len(chunk))
            params: list[Any] = []
            for position in chunk:
                params += [spec.name, position, PENDING, now, due]
            cursor.execute(
                f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}, "
                f"{q('attempts')}, {q('due')}, {q('last_error')}) VALUES {rows} "
                f"ON CONFLICT ({q('handler')}, {q('position')}) DO NOTHING RETURNING {q('position')}", params)
            fresh.update(row[0] for row in cursor.fetchall())
    if len(fresh) < len(positions):  # rare: receipts already there
        rest = [p for p in positions if p not in fresh]
        receipts = HandlerReceipt.objects.using(using).filter(handler=spec.name, status=PENDING)
        for chunk in _in_chunks(rest):
            fresh.update(receipts.filter(position__in=chunk).values_list("position", flat=True))
    return fresh


def hold(spec: HandlerSpec, position: int, *, attempts: int, due_in: float, error: BaseException | None = None,
         tb: str = "", event: Any = None) -> None:
    """Keep a delivery pending: its next try, when it is due, and the handler's last error.

    A retry whose message could not be published (broker down) is not lost nor
    dead-lettered: the relay hands it over again once ``due`` has passed.
    Only a pending (or missing) receipt changes: a try that already finished —
    done, dead-lettered — is never made pending again (that would run it twice).
    """
    values: dict[str, Any] = {"attempts": attempts, "due": timezone.now() + timedelta(seconds=due_in)}
    if error is not None:
        # Sealed like the event's personal data: an error may quote it (privacy/copies.py).
        values["last_error"] = seal_texts(event, store_database(),
                                          (f"{type(error).__name__}: {error}\n{tb}")[:10_000])[0]
    receipts = HandlerReceipt.objects.using(handler_database(spec))
    if not receipts.filter(handler=spec.name, position=position, status=PENDING).update(**values):
        receipts.bulk_create([HandlerReceipt(handler=spec.name, position=position, status=PENDING, **values)],
                             ignore_conflicts=True)


def pending_predecessor(spec: HandlerSpec, event: Any) -> int | None:
    """For an ordered handler: the position of the aggregate's previous matching event if it is
    still on its way to this handler (pending) or dead-lettered, else None.

    The relay writes pending receipts in feed order before publishing, so an event
    with no receipt predates the handler's subscription: it does not wait for it.
    """

    previous = Event.objects.using(store_database()).filter(aggregate_id=event.aggregate_id,
                                                            version__lt=event.version)
    if spec.namespace is not None:
        previous = previous.filter(namespace=spec.namespace)
    if ALL_EVENTS not in spec.evt_keys:
        previous = previous.filter(evt_key__in=upcasters.stored_keys(spec.evt_keys, spec.namespace))
    row = previous.order_by("-version").values_list("position", "version").first()
    if row is None:
        return None
    position, version = row
    status = (HandlerReceipt.objects.using(handler_database(spec))
              .filter(handler=spec.name, position=position).values_list("status", flat=True).first())
    if status in (PENDING, HandlerReceipt.Status.FAILED):
        return position
    return None


class BookkeepingFailed(Exception):
    """``deliver(then=...)``'s bookkeeping failed: the delivery rolled back, and it is no handler's fault."""


def deliver(spec: HandlerSpec, event: Any, *, force: bool = False,
            then: Callable[[], Any] | None = None) -> Delivery:
    """Run one handler for one event in its own transaction, with its receipt.

    ``force=True`` (replays) runs it even if a receipt exists and ignores ordering.
    ``then``: the relay's bookkeeping, run last in the same transaction (done or
    duplicate alike), so it commits with the effect; if it raises, the delivery
    rolls back and ``BookkeepingFailed`` is raised (a database error, not the
    handler's: nothing is dead-lettered for it).
    Never raises for the handler's own errors: they come back as ``FAILED``.
    """
    using = handler_database(spec)
    if spec.ordered and not force:
        blocker = pending_predecessor(spec, event)
        if blocker is not None:
            return Delivery(WAIT, blocked_by=blocker)
    try:
        with transaction.atomic(using=using):
            claimed = claim_receipt(spec.name, event.position, using) or force
            if claimed:
                spec(event)
            if then is not None:
                try:
                    then()
                except Exception as exc:
                    raise BookkeepingFailed(f"{type(exc).__name__}: {exc}") from exc
            if not claimed:
                return Delivery(DUPLICATE)
    except BookkeepingFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - a handler's failure is data: retried, then dead-lettered
        return Delivery(FAILED, error=exc, traceback=traceback.format_exc())
    return Delivery(DONE)


# -- dead letters ----------------------------------------------------------------------------


def dead_letter(kind: str, name: str, event: Any, *, attempts: int, error: BaseException | None = None,
                message: str = "", tb: str = "", position: int | None = None) -> DeadLetter:
    """Record (or refresh) the dead letter of a (handler or projection, event) pair."""
    position = event.position if event is not None else position
    if position is None:
        raise ValueError("A dead letter needs the event or its position.")
    error_type = f"{type(error).__module__}.{type(error).__qualname__}" if error is not None else ""
    values = {
        "namespace": getattr(event, "namespace", "") or "",
        "evt_key": getattr(event, "evt_key", "") or "",
        "aggregate_id": getattr(event, "aggregate_id", None),
        "version": getattr(event, "version", None),
        "attempts": attempts,
        "error_type": error_type[:255],
        "error_message": (message or (str(error) if error is not None else ""))[:10_000],
        "traceback": tb[:50_000],
        "created": timezone.now(),
    }
    # A handler's error and traceback may quote the event's personal data: sealed under its
    # subject's key, so forgetting the subject erases them too (privacy/copies.py).
    values["error_message"], values["traceback"] = seal_texts(event, store_database(), str(values["error_message"]),
                                                              str(values["traceback"]))
    letter, _ = DeadLetter.objects.using(store_database()).update_or_create(
        kind=kind, handler=name, position=position, defaults=values)
    if kind == DeadLetter.Kind.HANDLER:
        # Settled: the handler's checkpoint may pass it (an ordered handler still waits on it).
        using = handler_database(handlers.get(name)) if name in handlers else store_database()
        HandlerReceipt.objects.using(using).update_or_create(
            handler=name, position=position,
            defaults={"status": HandlerReceipt.Status.FAILED, "due": None,
                      "last_error": str(values["error_message"])})  # cut above (sealed: not cut again)
    logger.error("Dead letter: %s %s gave up on %s (position %s) after %s tries: %s",
                 kind, name, values["evt_key"] or "event", position, attempts, values["error_message"])
    return letter


def redrive(letters: Iterable[DeadLetter]) -> int:
    """Deliver dead letters again (from the first try), oldest event first; how many went."""
    count = 0
    for letter in sorted(letters, key=lambda item: (item.position, item.id)):
        with transaction.atomic(using=store_database()):
            DeadLetter.objects.using(store_database()).filter(pk=letter.pk).delete()
            if letter.kind == DeadLetter.Kind.PROJECTION:
                subscriber = subscribers.get(letter.handler)
                if subscriber is None:
                    raise LookupError(f"No async projection named {letter.handler!r} is registered.")
                subscriber.redrive(load_event(letter.position, store_database()), store_database())
            else:
                if letter.handler not in handlers:
                    raise LookupError(f"No event handler named {letter.handler!r} is registered.")
                spec = handlers.get(letter.handler)
                # Pending again, from the first try: claimable, and the relay's to hand over if lost.
                HandlerReceipt.objects.using(handler_database(spec)).update_or_create(
                    handler=spec.name, position=letter.position,
                    defaults={"status": PENDING, "attempts": 1, "due": timezone.now() + redeliver_after()})
                get_dispatcher().redeliver(spec, letter.position)
        count += 1
    return count


def discard(letters: Iterable[DeadLetter]) -> int:
    """Give up on dead letters for good: an ordered handler then moves past them."""
    count = 0
    for letter in letters:
        with transaction.atomic(using=store_database()):
            if letter.kind == DeadLetter.Kind.HANDLER:
                spec = handlers.get(letter.handler) if letter.handler in handlers else None
                using = handler_database(spec) if spec is not None else store_database()
                HandlerReceipt.objects.using(using).update_or_create(
                    handler=letter.handler, position=letter.position,
                    defaults={"status": HandlerReceipt.Status.DISCARDED, "due": None})
            DeadLetter.objects.using(store_database()).filter(pk=letter.pk).delete()
        count += 1
    return count


# -- one delivery attempt with its follow-up (shared by every runner) -----------------------


@dataclass
class Attempt:
    """One try of one delivery, as carried in a Celery message."""

    handler: str
    position: int
    attempt: int = 1
    waits: int = 0

    def as_message(self) -> list[Any]:
        return [self.handler, self.position, self.attempt, self.waits]

    @classmethod
    def from_message(cls, item: Sequence[Any]) -> Attempt:
        return cls(*item)


def run_attempt(item: Attempt, *, schedule: Callable[[Attempt, float], None] | None,
                event: Any = None, then: Callable[[], Any] | None = None) -> str:
    """Try one delivery; schedule the next try (``schedule(attempt, countdown)``) or dead-letter it.

    ``schedule=None`` means there is no later try (inline mode): a failure is
    dead-lettered at once and a wait is left to the relay. ``then``: as for
    ``deliver`` (it ran and committed when the outcome is done or duplicate).
    Returns the outcome.
    """
    spec = handlers.get(item.handler) if item.handler in handlers else None
    if spec is None:
        logger.error("No event handler named %r is registered; dead-lettering event %s.", item.handler,
                     item.position)
        dead_letter(DeadLetter.Kind.HANDLER, item.handler, event, position=item.position, attempts=item.attempt,
                    message=f"No event handler named {item.handler!r} is registered in this process.")
        return FAILED
    if event is None:
        try:
            event = load_event(item.position)
        except Exception as exc:  # noqa: BLE001 - a missing or undecodable event is a poison message
            result = Delivery(FAILED, error=exc, traceback=traceback.format_exc())
        else:
            result = deliver(spec, event, then=then)
    else:
        result = deliver(spec, event, then=then)

    if result.outcome == WAIT:
        if schedule is not None and item.waits < fluvius_settings.ORDERED_MAX_WAITS:
            wait = float(fluvius_settings.ORDERED_WAIT)
            # Due again before the message goes: it may run (and settle) before we would write.
            hold(spec, item.position, attempts=item.attempt, due_in=wait + redeliver_after().total_seconds())
            try:
                schedule(Attempt(item.handler, item.position, item.attempt, item.waits + 1), wait)
            except Exception:  # noqa: BLE001 - broker down: the delivery stays pending for the relay
                logger.warning("Could not schedule the wait of %s on %s; the relay hands it over again.",
                               spec.name, item.position, exc_info=True)
                hold(spec, item.position, attempts=item.attempt, due_in=wait)
        elif schedule is not None:
            dead_letter(DeadLetter.Kind.HANDLER, spec.name, event, position=item.position, attempts=item.attempt,
                        message=f"Gave up waiting for the previous event (position {result.blocked_by}) "
                                f"of this aggregate: handler {spec.name!r} is ordered.")
        return WAIT
    if result.outcome == FAILED:
        tries = max_tries(spec) if schedule is not None else 1
        if schedule is not None and item.attempt < tries:
            delay = retry_delay(item.attempt)
            logger.warning("Event handler %s failed on position %s (try %s of %s), retrying in %.2fs: %r",
                           spec.name, item.position, item.attempt, tries, delay, result.error)
            # Due again before the message goes: the retry may run (and settle) before we would write.
            hold(spec, item.position, attempts=item.attempt + 1, due_in=delay + redeliver_after().total_seconds(),
                 error=result.error, tb=result.traceback, event=event)
            try:
                schedule(Attempt(item.handler, item.position, item.attempt + 1, item.waits), delay)
            except Exception:  # noqa: BLE001 - broker down: the delivery waits, keeping the handler's error
                logger.warning("Could not schedule try %s of %s on %s (broker down?); it stays pending and "
                               "the relay hands it over again.", item.attempt + 1, spec.name, item.position,
                               exc_info=True)
                hold(spec, item.position, attempts=item.attempt + 1, due_in=delay)
            return FAILED
        dead_letter(DeadLetter.Kind.HANDLER, spec.name, event, position=item.position, attempts=item.attempt,
                    error=result.error, tb=result.traceback)
    return result.outcome


# -- dispatchers: how a relay moves one subscription forward -------------------------------------


@dataclass
class RelayResult:
    handed_over: int = 0   # deliveries run (inline) or published (Celery)
    redelivered: int = 0   # pending deliveries published again (their due time passed)
    failed: int = 0        # subscriptions that could not move (broker or database down)
    busy: int = 0          # subscriptions another relay leads right now
    errors: list[str] = field(default_factory=list)

    def add(self, other: RelayResult) -> None:
        self.handed_over += other.handed_over
        self.redelivered += other.redelivered
        self.failed += other.failed
        self.busy += other.busy
        self.errors += other.errors


def _batch_size() -> int:
    return max(1, int(fluvius_settings.RELAY_BATCH_SIZE))


def _read(feed: Feed, sub: subscriptions.Subscription, after: FeedKey, upto: FeedKey, limit: int) -> list[Event]:
    return feed.read(after, upto, evt_keys=sub.read_keys, namespace=sub.namespace, limit=limit, decode=False)


class Dispatcher:
    """Moves a handler subscription forward while its relay leads it."""

    delivers = True

    def advance(self, sub: subscriptions.Subscription, cp: Checkpoint, owner: str, using: str,
                result: RelayResult, *, limit: int | None = None, upto: FeedKey | None = None) -> bool:
        """Move the subscription forward (up to ``upto``, the round's feed bound); True if the last
        write gave the lease up already."""
        raise NotImplementedError

    def project(self, sub: subscriptions.Subscription, using: str, result: RelayResult, *,
                behind: bool | None = None) -> None:
        """Catch an async projection up (``behind``: whether the round saw events for it; None: unknown)."""
        raise NotImplementedError

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        raise NotImplementedError


class InlineDispatcher(Dispatcher):
    """Run handlers in the relay's process, in feed order, one try each (no broker)."""

    def advance(self, sub: subscriptions.Subscription, cp: Checkpoint, owner: str, using: str,
                result: RelayResult, *, limit: int | None = None, upto: FeedKey | None = None) -> bool:
        spec: HandlerSpec = sub.subscriber
        feed = Feed(using)
        key = cp.key
        size = _batch_size()
        done = 0
        upto = upto or feed.bound()
        # The checkpoint lives with the receipts (the usual case): its move rides in the
        # transaction of the batch's last delivery, which commits effect, receipt and
        # checkpoint together (one durable commit where there were two). Every event
        # before it in the batch is settled by then (done, duplicate or dead-lettered).
        fold = handler_database(spec) == using
        while limit is None or done < limit:
            events = _read(feed, sub, key, upto, size)
            new = subscriptions.feed_max(feed.key(events[-1]) if len(events) >= size else upto, key)
            last = len(events) < size or (limit is not None and done + len(events) >= limit)
            saved: list[bool] = []  # the folded move's outcome, once it has run

            def settle(new: FeedKey = new, last: bool = last, count: int = len(events),
                       saved: list[bool] = saved) -> None:
                saved.append(subscriptions.save_checkpoint(spec.name, owner, using, key=new, sent=new,
                                                           applied=count, release=last))

            for index, raw in enumerate(events):
                then = settle if fold and index == len(events) - 1 else None
                try:
                    event = feed.store.decode(raw)
                except Exception as exc:  # noqa: BLE001 - a poison event: dead-lettered, settled
                    dead_letter(DeadLetter.Kind.HANDLER, spec.name, None, position=raw.position, attempts=1,
                                error=exc, tb=traceback.format_exc())
                    continue
                outcome = run_attempt(Attempt(spec.name, event.position), schedule=None, event=event, then=then)
                if outcome == WAIT:
                    # Feed order is commit order: only a dead-lettered predecessor makes it wait.
                    dead_letter(DeadLetter.Kind.HANDLER, spec.name, event, attempts=1,
                                message="Still waiting for the previous event of its aggregate (ordered "
                                        "handler): re-drive or discard that one first.")
                if outcome not in (DONE, DUPLICATE):
                    saved.clear()  # rolled back with the delivery (or never ran): moved below
            done += len(events)
            result.handed_over += len(events)
            if saved:
                if not saved[0]:
                    return True  # another relay took over (our lease ran out)
            elif new != key and not subscriptions.save_checkpoint(spec.name, owner, using, key=new, sent=new,
                                                                  applied=len(events), release=last):
                return True  # another relay took over (our lease ran out)
            if last:
                return new != key
            key = new
        return False

    def project(self, sub: subscriptions.Subscription, using: str, result: RelayResult, *,
                behind: bool | None = None) -> None:
        # Run even when nothing is new: an idle batch moves the checkpoint past other keys' events.
        caught = sub.subscriber.run_inline(using)
        result.handed_over += getattr(caught, "applied", 0)

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        if run_attempt(Attempt(spec.name, position), schedule=None) == WAIT:
            # No later try in this mode: keep it visible rather than drop it.
            dead_letter(DeadLetter.Kind.HANDLER, spec.name, None, position=position, attempts=1,
                        message="Still waiting for the previous event of its aggregate (ordered handler); "
                                "re-drive that one first.")


# settle(first=_LOOK_UP): the first pending delivery is not known; ask the database.
_LOOK_UP = object()


def _in_chunks(values: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


class CeleryDispatcher(Dispatcher):
    """Hand deliveries to Celery workers (tasks.py), with pending receipts the checkpoint waits on."""

    def advance(self, sub: subscriptions.Subscription, cp: Checkpoint, owner: str, using: str,
                result: RelayResult, *, limit: int | None = None, upto: FeedKey | None = None) -> bool:
        spec: HandlerSpec = sub.subscriber
        receipts = HandlerReceipt.objects.using(handler_database(spec)).filter(handler=spec.name)
        feed = Feed(using)
        size = _batch_size()
        window = max(1, int(fluvius_settings.SUBSCRIPTION_WINDOW))
        # 1. Deliveries handed over before and not settled by their due time: the broker lost
        #    them, or could not take a retry. Publish them again, from the try they were at.
        now = timezone.now()
        overdue = (list(receipts.filter(status=PENDING, due__lt=now).order_by("position")
                        .values_list("position", "attempts")[:window]) if getattr(cp, "overdue", True) else [])
        if overdue:
            receipts.filter(status=PENDING, position__in=[p for p, _ in overdue]).update(
                due=now + redeliver_after())
            self.publish(spec, [Attempt(spec.name, p, max(1, a)) for p, a in overdue], using)
            result.redelivered += len(overdue)
        # 2. New events after the handed-over mark: pending receipts first, then the messages.
        sent = cp.sent_key
        # Deliveries handed over earlier and not settled yet (then they count against the
        # window, and the checkpoint must look for the first of them).
        earlier = sent > cp.key or bool(overdue)
        in_flight = receipts.filter(status=PENDING).count() if earlier else 0
        first: FeedKey | None = None  # the first delivery this advance left pending, in feed order
        handed = 0
        upto = upto or feed.bound()
        while in_flight < window and (limit is None or handed < limit):
            take = min(size * 10, window - in_flight)
            keys = feed.keys(sent, upto, evt_keys=sub.read_keys, namespace=sub.namespace, limit=take)
            if keys:
                fresh = insert_pending(spec, [position for _, position in keys])
                self.publish(spec, [Attempt(spec.name, p) for _, p in keys if p in fresh], using)
                handed += len(fresh)
                in_flight += len(fresh)
                if first is None:
                    first = next((key for key in keys if key[1] in fresh), None)
            new = subscriptions.feed_max(keys[-1] if len(keys) >= take else upto, sent)
            if len(keys) < take:
                sent = new  # the last batch: settle() writes the mark with the checkpoint
                break
            # More to read: record the mark now (and renew the lease).
            if new != sent and not subscriptions.save_checkpoint(spec.name, owner, using, sent=new):
                return True
            sent = new
        result.handed_over += handed
        # 3. The checkpoint: up to the first delivery still pending, in feed order. With nothing
        #    handed over before, that is the first one this advance handed over: no query.
        return self.settle(sub, cp, sent, owner, using, first=_LOOK_UP if earlier else first)

    @staticmethod
    def first_pending(spec: HandlerSpec, using: str) -> FeedKey | None:
        """The feed key of this handler's first pending delivery (feed order), if any."""
        receipts_db = handler_database(spec)
        if receipts_db == using:  # the usual case: one query, the join done by the database
            connection = connections[using]
            q = connection.ops.quote_name
            events, receipts = q(Event._meta.db_table), q(HandlerReceipt._meta.db_table)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT e.{q('txid')}, e.{q('position')} FROM {receipts} r JOIN {events} e "
                    f"ON e.{q('position')} = r.{q('position')} WHERE r.{q('handler')} = %s "
                    f"AND r.{q('status')} = %s ORDER BY e.{q('txid')}, e.{q('position')} LIMIT 1",
                    [spec.name, PENDING])
                row = cursor.fetchone()
            return (row[0] or 0, row[1]) if row else None
        pending = list(HandlerReceipt.objects.using(receipts_db).filter(handler=spec.name, status=PENDING)
                       .values_list("position", flat=True))
        first: FeedKey | None = None
        for chunk in _in_chunks(pending):
            for txid, position in Event.objects.using(using).filter(position__in=chunk).values_list("txid",
                                                                                                    "position"):
                candidate = (txid or 0, position)
                first = candidate if first is None or candidate < first else first
        return first

    @classmethod
    def settle(cls, sub: subscriptions.Subscription, cp: Checkpoint, sent: FeedKey, owner: str,
               using: str, *, first: Any = _LOOK_UP) -> bool:
        """Move the checkpoint and the handed-over mark, giving the lease up in the same write;
        True if it was written. ``first``: the first pending delivery if known, else ``_LOOK_UP``."""
        if first is _LOOK_UP:
            first = cls.first_pending(sub.subscriber, using)
        key = sent if first is None else min(sent, (first[0], first[1] - 1))
        moved = key > cp.key
        if moved or sent != cp.sent_key:
            subscriptions.save_checkpoint(sub.name, owner, using, key=key if moved else None, sent=sent,
                                          release=True)
            return True
        return False

    def project(self, sub: subscriptions.Subscription, using: str, result: RelayResult, *,
                behind: bool | None = None) -> None:
        if behind is None:
            behind = sub.subscriber.behind(using)
        if behind:
            send(celery_app(), PROJECT_TASK, (sub.name, using), queue=fluvius_settings.CELERY_QUEUE)
            result.handed_over += 1

    def publish(self, spec: HandlerSpec, attempts: Sequence[Attempt], using: str) -> None:
        if not attempts:
            return
        app = celery_app()
        size = _batch_size()
        queue_name = spec.queue or fluvius_settings.CELERY_QUEUE
        with app.producer_or_acquire() as producer:
            for start in range(0, len(attempts), size):
                send(app, DELIVER_TASK, ([a.as_message() for a in attempts[start:start + size]], using),
                     queue=queue_name, producer=producer)

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        self.publish(spec, [Attempt(spec.name, position)], store_database())


def send(app: Any, task: str, args: Sequence[Any], *, queue: str | None = None, countdown: float | None = None,
         producer: Any = None) -> None:
    """Publish one task message; fail fast (the pending receipt keeps what could not be sent)."""
    options: dict[str, Any] = {
        "retry": True,
        "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    }
    if queue:
        options["queue"] = queue
    if countdown:
        options["countdown"] = countdown
    if producer is not None:
        options["producer"] = producer
    app.send_task(task, args=list(args), **options)


class NullDispatcher(Dispatcher):
    """Dispatch off: nothing runs; checkpoints stay where they are."""

    delivers = False

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        raise RuntimeError("FLUVIUS['DISPATCH'] is off: there is nothing to deliver with.")


DISPATCHERS: dict[Any, Callable[[], Any]] = {
    "inline": InlineDispatcher,
    "celery": CeleryDispatcher,
    None: NullDispatcher,
    "off": NullDispatcher,
}


def get_dispatcher() -> Any:
    mode = fluvius_settings.DISPATCH
    try:
        return DISPATCHERS[mode]()
    except KeyError:
        raise ValueError(
            f"FLUVIUS['DISPATCH'] is {mode!r}; expected one of {sorted(map(str, DISPATCHERS))}."
        ) from None


# -- the relay: every subscription this process knows, each led by one relay ---------------------


_identity = threading.local()


def relay_owner() -> str:
    """This thread's relay identity (the owner of the leases it takes)."""
    owner = getattr(_identity, "owner", None)
    if owner is None or getattr(_identity, "pid", None) != os.getpid():
        _identity.owner, _identity.pid = subscriptions.relay_identity(), os.getpid()
        owner = _identity.owner
    return owner


def deliver_pending(*, using: str | None = None, names: Iterable[str] | None = None, hint: int | None = None,
                    dispatcher: Any = None, limit: int | None = None) -> RelayResult:
    """Move every subscription this process knows (or those ``names``) up to the feed's end.

    Each handler subscription is led by one relay at a time (its lease); a relay
    that finds it led elsewhere leaves it (``busy``). ``hint``: the position just
    before the events whose commit woke us (where a new ``start="now"``
    subscription begins). A subscription that cannot move (broker down) is
    counted in ``failed`` and stays where it is: its events wait.
    """
    using = using or store_database()
    dispatcher = dispatcher or get_dispatcher()
    result = RelayResult()
    if not dispatcher.delivers:
        return result
    wanted = set(names) if names is not None else None
    owner = relay_owner()
    subs = []
    for sub in declared():
        if wanted is not None and sub.name not in wanted:
            continue
        problem = subscriptions.start_problem(sub.start)
        if problem is not None:  # fluvius.E055 says so at start-up; never guess a start
            logger.error("Subscription %s is not delivered: %s.", sub.name, problem)
            continue
        subs.append(sub)
    if not subs:
        return result
    # Once per round, not per subscription (a round is a handful of statements, whatever
    # the number of subscriptions): the feed's gap-safe bound, the checkpoints with which
    # handlers have deliveries past their due time, and which subscriptions have events
    # of their keys after their checkpoint. A subscription settled up to there with
    # nothing overdue has nothing to do: no lease, no statement of its own.
    feed = Feed(using)
    upto = feed.bound()
    checkpoints, overdue = _round_state(subs, using)
    quiet = [(sub, checkpoints[sub.name]) for sub in subs if sub.name in checkpoints
             and sub.name not in overdue and checkpoints[sub.name].sent_key <= checkpoints[sub.name].key]
    busy = feed.nonempty([(cp.key, upto, sub.read_keys, sub.namespace) for sub, cp in quiet])
    idle = {sub.name for index, (sub, _) in enumerate(quiet) if index not in busy}
    for sub in subs:
        try:
            if sub.kind == subscriptions.PROJECTION:
                dispatcher.project(sub, using, result,
                                   behind=None if sub.name not in checkpoints else sub.name not in idle)
                continue
            if sub.name in idle:
                continue
            if sub.name not in checkpoints:
                subscriptions.ensure(sub, using, hint=hint)
            cp = subscriptions.lead(sub.name, owner, using)
            if cp is None:
                result.busy += 1
                continue
            cp.overdue = sub.name in overdue  # type: ignore[attr-defined]  # known this round
            _advance_led(dispatcher, sub, cp, owner, using, result, upto=upto, limit=limit)
        except Exception as exc:  # noqa: BLE001 - one subscription must not stop the others
            _could_not_move(sub, exc, result)
    return result


def _advance_led(dispatcher: Any, sub: subscriptions.Subscription, cp: Checkpoint, owner: str, using: str,
                 result: RelayResult, *, upto: FeedKey, limit: int | None = None) -> None:
    """Move a subscription this relay leads; give the lease back unless the last write did."""
    released = False
    try:
        released = dispatcher.advance(sub, cp, owner, using, result, limit=limit,
                                      upto=subscriptions.feed_max(upto, cp.key))
    finally:
        if not released:
            subscriptions.release_lease(sub.name, owner, using)


def _could_not_move(sub: subscriptions.Subscription, exc: Exception, result: RelayResult) -> None:
    result.failed += 1
    result.errors.append(f"{sub.name}: {type(exc).__name__}: {exc}")
    logger.warning("Subscription %s could not move (%s: %s); its events wait for the next round.",
                   sub.name, type(exc).__name__, exc)


def deliver_committed(using: str, names: Iterable[str], *, hint: int | None = None,
                      wait: bool = False) -> RelayResult:
    """Inline mode, right after a command's commit: move the subscriptions of its events.

    Every subscription named has an event of its keys just committed, so the round's
    questions (``deliver_pending``: the bound, the checkpoints, which subscriptions
    have work) are not asked: each handler subscription is led, and the feed's bound
    read, in one statement (``subscriptions.lead_to_bound``), then read and delivered
    (``InlineDispatcher.advance``, which moves the checkpoint in the last delivery's
    transaction). Nothing is taken for granted beyond the names: the events may have
    been delivered by another relay already (the read finds nothing new then), and an
    event of a transaction still running below ours waits for the next round, as in
    ``deliver_pending``. Other dispatchers and async projections take the general round.

    A subscription another delivery holds is skipped (``busy``) and handed to this
    process's ``busy_retry`` thread, which calls this again with ``wait=True``: it
    waits for the row, then delivers what the other one's bound left behind.
    """
    dispatcher = get_dispatcher()
    wanted = set(names)
    if not isinstance(dispatcher, InlineDispatcher):
        return deliver_pending(using=using, names=wanted, hint=hint, dispatcher=dispatcher)
    result = RelayResult()
    owner = relay_owner()
    others: list[str] = []
    for sub in declared():
        if sub.name not in wanted:
            continue
        if sub.kind != subscriptions.HANDLER:
            others.append(sub.name)
            continue
        problem = subscriptions.start_problem(sub.start)
        if problem is not None:  # fluvius.E055 says so at start-up; never guess a start
            logger.error("Subscription %s is not delivered: %s.", sub.name, problem)
            continue
        try:
            if _in_one_transaction(sub, owner, using, result, wait=wait):
                continue
            cp, upto = subscriptions.lead_to_bound(sub.name, owner, using)
            if cp is None and not Checkpoint.objects.using(using).filter(name=sub.name).exists():
                # Gone since this process ensured it (a rolled-back transaction, a flush).
                subscriptions.ensure(sub, using, hint=hint)
                cp, upto = subscriptions.lead_to_bound(sub.name, owner, using)
            if cp is None:
                result.busy += 1
                continue
            _advance_led(dispatcher, sub, cp, owner, using, result, upto=upto)
        except Exception as exc:  # noqa: BLE001 - one subscription must not stop the others
            _could_not_move(sub, exc, result)
    if others:
        result.add(deliver_pending(using=using, names=others, hint=hint, dispatcher=dispatcher))
    if result.busy and not wait:
        # Another delivery holds a subscription (its row locked, or leased): it may have read
        # up to a bound below our events. The busy_retry thread waits for the row (not this
        # request) and delivers them, so they are not left for the next commit of their
        # keys, which a quiet system may never make.
        busy_retry.submit(using, wanted, hint)
    return result


class _TakeTheUsualWay(Exception):
    """``_in_one_transaction`` leaves this subscription to the leased way (its transaction rolls back)."""


class _HandlerFailed(Exception):
    def __init__(self, event: Any, error: BaseException, tb: str):
        super().__init__(str(error))
        self.event, self.error, self.tb = event, error, tb


def _in_one_transaction(sub: subscriptions.Subscription, owner: str, using: str, result: RelayResult, *,
                        wait: bool = False) -> bool:
    """Deliver a handler subscription's new events one transaction each (``delivery/locked.py``).

    The usual case after a command's commit on PostgreSQL and MariaDB / MySQL: the
    checkpoint row locked, the event read, its receipt claimed and the checkpoint
    moved (one statement on PostgreSQL, two round trips on MariaDB), then the
    handler's effect, and one durable commit; again while events follow. A busy row
    is skipped (counted in ``result.busy``). False when the leased way must do it:
    the row is missing, events are held back by another database's transaction, an
    ordered handler, an effect in another database, an event that does not decode. A
    handler's failure is dead-lettered (one try), as the leased way does inline.
    """
    spec: HandlerSpec = sub.subscriber
    if _vendor(using) not in locked.VENDORS or spec.ordered or handler_database(spec) != using:
        return False
    keys = upcasters.stored_keys(sub.read_keys, sub.namespace) if sub.read_keys else []
    more = True
    while more:
        taken = _deliver_first(sub, spec, keys, owner, using, result, wait=wait)
        wait = False
        if taken is None:
            return False
        more = taken.more
    return True


def _deliver_first(sub: subscriptions.Subscription, spec: HandlerSpec, keys: list[str], owner: str, using: str,
                   result: RelayResult, *, wait: bool = False) -> locked.Taken | None:
    """One transaction of ``_in_one_transaction``: the first new event, if any. None: take the leased way.

    ``wait``: first wait for the row's lock (another delivery's commit); the taking
    statement then runs with a snapshot from after it.
    """
    feed = Feed(using)
    # Every way out but a failure commits, even when nothing was delivered: a rollback on
    # psycopg 3 deallocates every prepared statement of the connection (the bus's too),
    # which are then planned again. The statement's checkpoint move is right on its own (to
    # the bound, past none of the subscription's events), and nothing else was written.
    try:
        with sql.command_transaction(using):  # MariaDB: begun with the first round trip
            if wait:
                locked.wait_for(sub.name, using)
            try:
                taken = locked.lock_and_take(sub.name, owner, using, evt_keys=keys, namespace=sub.namespace)
            except locked.CheckpointMissing:  # a rolled-back transaction took it away:
                return None  # the leased way makes it again
            if taken is None:  # another delivery has the row locked, or another relay leads it
                result.busy += 1
                return locked.Taken.nothing()
            if not taken.events:
                # Delivered already; or held back by the server-wide xmin: the leased way's horizon is ours.
                return None if taken.held else taken
            try:
                event = feed.store.decode(taken.events[0])
            except Exception as exc:  # a poison event: the leased way dead-letters it (the claim rolls back)
                raise _TakeTheUsualWay from exc
            if locked.settle(taken, spec.name, using):  # else a delivery did the work already
                try:
                    spec(event)
                except Exception as exc:  # noqa: BLE001 - the handler's: dead-lettered below
                    raise _HandlerFailed(event, exc, traceback.format_exc()) from exc
    except _TakeTheUsualWay:
        return None
    except _HandlerFailed as failed:
        if not _dead_letter_led(sub, failed, owner, using):
            taken = locked.Taken.nothing()  # another relay leads now: the rest is theirs
    result.handed_over += 1
    return taken


def _dead_letter_led(sub: subscriptions.Subscription, failed: _HandlerFailed, owner: str, using: str) -> bool:
    """A handler failed in ``_deliver_first`` (all rolled back): dead-letter it and pass it, leading.

    As the leased way settles a failure in inline mode (one try). If another relay
    leads by now, or has passed the event, it is theirs to deliver. Whether this
    relay moved past it.
    """
    event = failed.event
    cp, _upto = subscriptions.lead_to_bound(sub.name, owner, using)
    if cp is None:
        return False
    key = Feed.key(event)
    released = False
    try:
        if cp.key < key:
            dead_letter(DeadLetter.Kind.HANDLER, sub.name, event, attempts=1, error=failed.error, tb=failed.tb)
            released = subscriptions.save_checkpoint(sub.name, owner, using, key=key, sent=key, applied=1,
                                                     release=True)
    finally:
        if not released:
            subscriptions.release_lease(sub.name, owner, using)
    return released


def _round_state(subs: Sequence[subscriptions.Subscription], using: str) -> tuple[dict[str, Checkpoint], set[str]]:
    """The subscriptions' checkpoints, and the handlers with a delivery past its due time.

    One statement where the handlers' receipts live with the checkpoints (the usual
    case); one more per other database.
    """
    connection = connections[using]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    local = {sub.name for sub in subs if sub.kind == subscriptions.HANDLER
             and handler_database(sub.subscriber) == using}
    checkpoints: dict[str, Checkpoint] = {}
    overdue: set[str] = set()
    names = [sub.name for sub in subs]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_round_state, len(names)), [PENDING, now, *names])
        rows = cursor.fetchall()
    fields = list(_ROUND_FIELDS)
    for row in rows:
        cp = Checkpoint.from_db(using, fields, row[:-1])
        checkpoints[cp.name] = cp
        if row[-1] and cp.name in local:
            overdue.add(cp.name)
    overdue |= _overdue_handlers([sub for sub in subs if sub.kind == subscriptions.HANDLER
                                  and sub.name not in local])
    return checkpoints, overdue


_ROUND_FIELDS = ("id", "name", "kind", "txid", "position", "sent_txid", "sent_position")


def _build_round_state(q: Callable[[str], str], names: int) -> str:
    columns = ", ".join(f"c.{q(f)}" for f in _ROUND_FIELDS)
    return (f"SELECT {columns}, EXISTS (SELECT 1 FROM {q(HandlerReceipt._meta.db_table)} AS r "
            f"WHERE r.{q('handler')} = c.{q('name')} AND r.{q('status')} = %s AND r.{q('due')} < %s) "
            f"FROM {q(Checkpoint._meta.db_table)} AS c WHERE c.{q('name')} IN ({', '.join(['%s'] * names)})")


def _overdue_handlers(subs: Sequence[subscriptions.Subscription]) -> set[str]:
    """The handlers with a delivery past its due time (lost, or a retry to send): one query per database."""
    by_db: dict[str, list[str]] = defaultdict(list)
    for sub in subs:
        if sub.kind == subscriptions.HANDLER:
            by_db[handler_database(sub.subscriber)].append(sub.name)
    found: set[str] = set()
    now = timezone.now()
    for using, names in by_db.items():
        found.update(HandlerReceipt.objects.using(using).filter(
            handler__in=names, status=PENDING, due__lt=now).values_list("handler", flat=True).distinct())
    return found


def notify_now(using: str) -> None:
    """The relay thread's ``NOTIFY``: its own connection, no WAL flush, straight to the driver.

    A ``NOTIFY`` is a transaction of its own (with an id): ``synchronous_commit=off``
    spares it a WAL flush (a lost notification costs a poll interval, never an
    event), and sending it on the driver's connection spares Django's cursor
    machinery, at most once per ``RELAY_NOTIFY_INTERVAL``.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    relax_durability(using)
    try:
        # libpq's own call (PQexec, blocking, the GIL released): a third of psycopg's
        # execute() in instructions, and this runs beside every busy web process's commands.
        result = connection.connection.pgconn.exec_(_NOTIFY_SQL)
        if result.status != _COMMAND_OK:
            raise OperationalError(f"NOTIFY failed: {result.error_message.decode(errors='replace')}")
    except Exception:
        connection.close()  # broken: opened again at the next one
        raise


_NOTIFY_SQL = f"NOTIFY {CHANNEL}".encode()
_COMMAND_OK = 1  # psycopg.pq.ExecStatus.COMMAND_OK, without importing psycopg where it is not installed


def notify(using: str) -> None:
    """Wake other processes' relays (PostgreSQL ``NOTIFY``; nothing elsewhere). Call after commit."""
    connection = connections[using]
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, '')", [CHANNEL])


def dispatch_committed(events: Sequence[Any], using: str, batch: sql.WriteBatch | None = None,
                       **kwargs: Any) -> None:
    """Inside the command's transaction: nothing is written; a wake-up is scheduled for the commit.

    Connected to the bus's ``events_appending`` signal below (``AppConfig.ready``
    imports this module). Runs for every command: a few attribute reads and one
    ``on_commit`` callback, nothing more.
    """
    mode = fluvius_settings.DISPATCH
    if mode is None or mode == "off" or not events:
        return
    if _ensured_at.get(using) != (handlers.version, subscribers.version):
        _ensure_known(using)
    transaction.on_commit(partial(committed, events, using), using=using)


_ensured: set[tuple[str, str]] = set()
# database -> (handlers.version, subscribers.version) when every subscription was last ensured.
_ensured_at: dict[str, tuple[int, int]] = {}


def _ensure_known(using: str) -> None:
    """Create the checkpoints of this process's new subscriptions before its first events are written.

    A ``start="now"`` subscription created by another process's relay a moment
    later would otherwise begin after the very events whose writer knew it. Done
    once per subscription and process (the registries' versions say when one came);
    the relay round creates any that a rolled-back transaction took away.
    """
    versions = (handlers.version, subscribers.version)
    missing = [sub for sub in declared() if (using, sub.name) not in _ensured]
    for sub in missing:
        if subscriptions.start_problem(sub.start) is None:
            subscriptions.ensure(sub, using)
        _ensured.add((using, sub.name))
    _ensured_at[using] = versions


def _first_position(events: Sequence[Any]) -> int | None:
    """The position just before the batch (where a new ``start="now"`` subscription begins)."""
    positions = [e.position for e in events if e.position is not None]
    return min(positions) - 1 if positions else None


def committed(events: Sequence[Any], using: str) -> None:
    """After commit: inline mode delivers here and now; every mode wakes the relay thread."""
    try:
        if fluvius_settings.DISPATCH == "inline":
            names = {sub.name for event in events for sub in handlers.for_event(event)}
            names.update(s.name for event in events for s in subscribers.wanting(event))
            if names:
                deliver_committed(using, names, hint=_first_position(events))
            if _vendor(using) == "postgresql":
                relay.submit(using, None, run=False)  # the NOTIFY, off the request path
            return
        mode = fluvius_settings.RELAY
        runner = RELAY_MODES.get(mode)
        if runner is None:
            logger.error("FLUVIUS['RELAY'] is %r; expected one of %s. The events wait for the periodic relay.",
                         mode, sorted(RELAY_MODES))
            return
        runner(using, events)
    except Exception:  # noqa: BLE001 - the command committed; the relay delivers later
        logger.exception("Delivery after commit failed; the subscriptions catch up at the next relay round.")


events_appending.connect(dispatch_committed, dispatch_uid="django_fluvius.delivery.dispatch")


def _forget_ensured(**kwargs: Any) -> None:
    _ensured.clear()  # the tables were (re)made or flushed: checkpoints may be gone
    _ensured_at.clear()


post_migrate.connect(_forget_ensured, dispatch_uid="django_fluvius.delivery.dispatch.ensured")


def _wait_for(cond: threading.Condition, done: Callable[[], bool], timeout: float) -> bool:
    """Wait on ``cond`` until ``done()`` (checked under its lock); False on timeout."""
    with cond:
        return cond.wait_for(done, timeout)


class BackgroundRelay:
    """A daemon thread per process, woken by this process's commits.

    A commit only leaves a note (per database: the lowest hint, whether to hand
    over); commits while a note waits just update it, so the thread wakes once per
    batch of commits, not per commit. The thread sends one ``NOTIFY`` for
    everything noted (other processes' relays wake) at once, then at most one every
    ``RELAY_NOTIFY_INTERVAL`` seconds while commits keep coming: a lone commit is
    announced without delay, a busy process pays one ``NOTIFY`` per interval. In
    "thread" mode it also moves this process's subscriptions forward, in rounds at
    least ``RELAY_LINGER`` seconds apart (the broker and the feed queries once per
    batch of commits), announcing the commits that arrive meanwhile on the
    ``NOTIFY`` schedule.
    """

    def __init__(self) -> None:
        self._start_lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child inherits no thread

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._notes: dict[str, list[Any]] = {}  # database -> [lowest hint, hand over?]
        self._active = 0  # rounds in progress (flush waits for them)
        self._close = False  # close_connections() asks for the connections back
        self._started = False
        self._last = 0.0
        self._last_notify = 0.0
        self.notified = 0  # NOTIFY rounds sent (what coalescing saved: commits / this)

    def submit(self, using: str, hint: int | None, *, run: bool = True) -> None:
        if not self._started:
            self._start()
        with self._cond:
            note = self._notes.get(using)
            if note is None:
                self._notes[using] = [hint, run]
                self._cond.notify()
            else:
                if hint is not None and (note[0] is None or hint < note[0]):
                    note[0] = hint
                note[1] = note[1] or run

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                threading.Thread(target=self._run, name="fluvius-relay", daemon=True).start()
                self._started = True

    def _run(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # noqa: BLE001 - the thread must outlive any one round
                logger.exception("The relay thread failed a round; the periodic relay catches up.")

    def _take(self, *, wait: bool, timeout: float | None = None) -> tuple[dict[str, list[Any]], bool]:
        """The notes left so far (waiting for some, up to ``timeout``, if ``wait``), and whether to
        close the connections."""
        with self._cond:
            if wait:
                while not self._notes and not self._close:
                    if not self._cond.wait(timeout) and timeout is not None:
                        break
                if not self._notes and not self._close:
                    return {}, False
                self._active += 1
            notes, self._notes = self._notes, {}
            close, self._close = self._close, False
            return notes, close

    @staticmethod
    def _merge(into: dict[str, list[Any]], notes: dict[str, list[Any]]) -> None:
        for using, (hint, run) in notes.items():
            note = into.setdefault(using, [hint, run])
            if hint is not None and (note[0] is None or hint < note[0]):
                note[0] = hint
            note[1] = note[1] or run

    def _round(self) -> None:
        notes, close = self._take(wait=True, timeout=1.0)
        if not notes and not close:
            # Idle: give the connection back (test databases are dropped at the end).
            connections.close_all()
            notes, close = self._take(wait=True)
        try:
            interval = float(fluvius_settings.RELAY_NOTIFY_INTERVAL)
            # Sleep rather than wait for notes: commits during the pause share the NOTIFY.
            pause = interval - (time.monotonic() - self._last_notify)
            if pause > 0:
                time.sleep(pause)
                more, closing = self._take(wait=False)
                self._merge(notes, more)
                close = close or closing
            self._notify(notes)
            if any(run for _, run in notes.values()):
                # "thread": this process hands over too, in rounds RELAY_LINGER apart; the
                # commits noted meanwhile are announced on the NOTIFY schedule.
                end = self._last + float(fluvius_settings.RELAY_LINGER)
                while (left := end - time.monotonic()) > 0:
                    time.sleep(min(left, max(interval, 0.001)))
                    more, closing = self._take(wait=False)
                    close = close or closing
                    if more:
                        self._notify(more)
                        self._merge(notes, more)
                self._hand_over(notes)
            if close:
                connections.close_all()
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    def _hand_over(self, notes: dict[str, list[Any]]) -> None:
        try:
            for using, (hint, run) in notes.items():
                if not run:
                    continue
                try:
                    relax_durability(using)
                except Exception:  # noqa: BLE001 - the round reports the database's state
                    logger.debug("Could not relax durability on the relay connection.", exc_info=True)
                deliver_pending(using=using, hint=hint)
        finally:
            self._last = time.monotonic()

    def _notify(self, notes: dict[str, list[Any]]) -> None:
        self._last_notify = time.monotonic()
        self.notified += 1
        for using in notes:
            try:
                notify_now(using)
            except Exception:  # noqa: BLE001 - the others' poll catches up
                logger.debug("Could not NOTIFY the other relays.", exc_info=True)

    def close_connections(self, timeout: float = 10.0) -> bool:
        """Finish what is noted, then close the thread's database connections."""
        if not self._started:
            return True
        with self._cond:
            self._close = True
            self._cond.notify()
        return self.flush(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is handed over (or failed); False on timeout."""
        if not self._started:
            return True
        return _wait_for(self._cond, lambda: not (self._notes or self._close or self._active), timeout)


relay = BackgroundRelay()
atexit.register(relay.flush, 5.0)


class BusyRetry:
    """A daemon thread per process: deliveries that found their subscription busy, tried again.

    Inline delivery skips a subscription whose row another delivery holds, and that
    one may have read up to a bound below the skipped events. This thread waits for
    the row (``deliver_committed(wait=True)``), never the request, then delivers what
    is left; a subscription leased by another relay is left to it. It lingers
    ``RELAY_LINGER`` seconds before each pass, so the skips of a busy moment make one
    pass, and usually find their events delivered by then.
    """

    def __init__(self) -> None:
        self._start_lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._pending: dict[str, tuple[set[str], int | None]] = {}  # database -> (names, lowest hint)
        self._active = 0
        self._started = False

    def submit(self, using: str, names: Iterable[str], hint: int | None) -> None:
        if not self._started:
            with self._start_lock:
                if not self._started:
                    threading.Thread(target=self._run, name="fluvius-busy-retry", daemon=True).start()
                    self._started = True
        with self._cond:
            known, low = self._pending.get(using, (set(), hint))
            known.update(names)
            if hint is not None and (low is None or hint < low):
                low = hint
            self._pending[using] = (known, low)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    if not self._cond.wait(1.0) and not self._pending:
                        connections.close_all()  # idle: give the connections back
                        self._cond.wait()
                self._active += 1
            # Linger first: the holder commits meanwhile, the next deliveries (under load there
            # are some) take what it left, and the skips of a busy moment make one pass.
            time.sleep(float(fluvius_settings.RELAY_LINGER))
            with self._cond:
                pending, self._pending = self._pending, {}
            try:
                for using, (names, hint) in pending.items():
                    try:
                        deliver_committed(using, names, hint=hint, wait=True)
                    except Exception:  # noqa: BLE001 - the thread must outlive any one pass
                        logger.exception("A busy subscription's retry failed; the next commit or relay round "
                                         "delivers its events.")
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submission so far has been tried; False on timeout."""
        return _wait_for(self._cond, lambda: not (self._pending or self._active), timeout)


busy_retry = BusyRetry()
atexit.register(busy_retry.flush, 5.0)


def relax_durability(using: str) -> None:
    """Let this connection's commits return before the WAL is flushed (PostgreSQL).

    For the relay thread's own connection only: losing its last commits in a
    server crash takes back pending receipts together with the handed-over mark
    that followed them (WAL is replayed in order), so those events are handed over
    again (receipts dedupe); a lost checkpoint move is redone. It spares the
    commands' commits a WAL flush per relay round.
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    connection.ensure_connection()
    raw = connection.connection
    if getattr(connection, "_fluvius_relaxed", None) is not raw:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        connection._fluvius_relaxed = raw  # type: ignore[attr-defined]  # our mark on Django's wrapper


def _relay_in_thread(using: str, events: Sequence[Any]) -> None:
    relay.submit(using, _first_position(events))


def _relay_now(using: str, events: Sequence[Any]) -> None:
    deliver_pending(using=using, hint=_first_position(events))
    notify(using)


# database alias -> vendor, so the commit path does not look the connection up each time.
_vendors: dict[str, str] = {}


def _vendor(using: str) -> str:
    vendor = _vendors.get(using)
    if vendor is None:
        vendor = _vendors[using] = connections[using].vendor
    return vendor


def _notify_only(using: str, events: Sequence[Any]) -> None:
    # PostgreSQL: announce the commit (from the thread, coalesced) and leave the hand-over to
    # the listening relays (every Celery worker runs one). Elsewhere nobody listens: relay here.
    if _vendor(using) == "postgresql":
        relay.submit(using, None, run=False)
    else:
        relay.submit(using, _first_position(events))


# How a commit wakes delivery in "celery" mode (FLUVIUS['RELAY']): (database, the events).
RELAY_MODES: dict[str, Callable[[str, Sequence[Any]], None]] = {
    "notify": _notify_only,   # web processes announce; workers' relays hand over
    "thread": _relay_in_thread,  # announce, and hand over this process's subscriptions too
    "sync": _relay_now,       # hand over in the on-commit callback (scripts, tests)
}


# -- long-running relays: LISTEN, with a poll as the safety net ----------------------------------


class Listener:
    """A connection of its own that ``LISTEN``s on the channel (PostgreSQL only)."""

    def __init__(self, using: str):
        wrapper = connections[using]
        self.connection = wrapper.get_new_connection(wrapper.get_connection_params())
        self.connection.autocommit = True
        self.connection.execute(f"LISTEN {CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block until a notification arrives (True) or ``timeout`` passes; drain the rest (coalesce)."""
        woke = False
        for _ in self.connection.notifies(timeout=timeout, stop_after=1):
            woke = True
        if woke:
            for _ in self.connection.notifies(timeout=0.001):
                pass
        return woke

    def close(self) -> None:
        try:
            self.connection.close()
        except Exception:  # noqa: BLE001 - closing a broken connection
            logger.debug("Could not close the LISTEN connection.", exc_info=True)


def serve(*, using: str | None = None, listen: bool = True, poll: float | None = None,
          stop: threading.Event | None = None, on_round: Callable[[RelayResult], None] | None = None) -> None:
    """Relay until ``stop`` is set: a round now, then one at every ``NOTIFY`` and every ``poll`` seconds.

    What ``fluvius_relay --loop`` and every Celery worker (``tasks.py``) run. A
    lost connection (database restart) is re-opened at the next round.
    """
    using = using or store_database()
    stop = stop or threading.Event()
    poll = float(fluvius_settings.RELAY_POLL if poll is None else poll)
    listener: Listener | None = None
    try:
        while not stop.is_set():
            try:
                relax_durability(using)
            except Exception:  # noqa: BLE001 - the round reports the database's state
                logger.debug("Could not relax durability on the relay connection.", exc_info=True)
            result = deliver_pending(using=using)
            if on_round is not None:
                on_round(result)
            if listen and listener is None and connections[using].vendor == "postgresql":
                try:
                    listener = Listener(using)
                except Exception:  # noqa: BLE001 - the poll stands in until it can listen
                    logger.warning("Could not LISTEN for commits; polling every %ss.", poll, exc_info=True)
            if listener is not None:
                try:
                    # In slices, so a stop (SIGTERM) is seen within a second while idle.
                    end = time.monotonic() + poll
                    while not stop.is_set() and not listener.wait(min(1.0, max(0.0, end - time.monotonic()))):
                        if time.monotonic() >= end:
                            break
                except Exception:  # noqa: BLE001 - connection lost: listen again next round
                    listener.close()
                    listener = None
                    stop.wait(poll)
            else:
                stop.wait(poll)
            connection = connections[using]
            if connection.errors_occurred and not connection.is_usable():
                connection.close()  # re-opened at the next round (a database restart)
    finally:
        if listener is not None:
            listener.close()
        connections.close_all()


def start_background_relay(*, using: str | None = None, listen: bool = True) -> threading.Event:
    """Run ``serve()`` in a daemon thread (a Celery worker's relay); set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=serve, kwargs={"using": using, "listen": listen, "stop": stop},
                              name="fluvius-relay-listener", daemon=True)
    thread.start()
    return stop


def prune_receipts(older_than: timedelta, *, using: str | None = None) -> int:
    """Delete done receipts older than ``older_than``: no redelivery comes that late.

    Receipts are what make a late duplicate harmless, so keep them longer than a
    message can stay in the broker (the Redis visibility timeout, a broker outage).
    """
    cutoff = timezone.now() - older_than
    deleted, _ = (HandlerReceipt.objects.using(using or store_database())
                  .filter(created__lt=cutoff, status=HandlerReceipt.Status.DONE).delete())
    return deleted
