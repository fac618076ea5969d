"""How committed events reach ``@event_handler`` functions and async projections.

The transactional outbox
    The bus sends ``events_appending`` inside the command's transaction, and
    ``dispatch_committed(events, using, batch)`` (connected to it below) runs. For each event some handler or async projection wants,
    an ``Outbox`` row joins the command's writes, so the row exists exactly when
    the event does: a crash can lose neither. Nothing is handed over before the
    transaction commits.

The relay
    After commit the dispatcher hands the rows over and deletes them. In
    ``"celery"`` mode the on-commit relay runs in a background thread
    (``FLUVIUS['RELAY'] = "thread"``): the request only puts the rows on a queue
    and never waits for the broker; the thread waits ``RELAY_LINGER`` seconds for
    more commits and sends one Celery message per batch of deliveries. If the
    broker is down the rows stay; ``relay_pending()`` (the ``fluvius_relay``
    command, or the ``fluvius.relay`` task under Celery beat) hands over every
    row older than ``RELAY_GRACE`` seconds, so events wait and none is lost.

Delivery: at least once, effect exactly once
    A delivery is one (handler, event) pair. ``deliver()`` runs the handler in a
    transaction on the handler's database that first inserts its
    ``HandlerReceipt``; a second delivery of the same pair finds the receipt and
    does nothing, a failed one rolls the receipt back with the effect. A failure
    is retried with exponential backoff (Celery) and, after the last try, stored
    as a ``DeadLetter`` that ``fluvius_deadletters`` lists, re-drives or discards.

Ordering
    ``@event_handler(..., ordered=True)`` never handles version N+1 of an
    aggregate before N: a delivery whose previous matching event of the same
    aggregate is still on its way (an outbox row, a pending receipt written by
    the relay before publishing, or a dead letter) waits and is tried again.

Dispatch modes (``FLUVIUS['DISPATCH']``, the ``DISPATCHERS`` lookup table)
    ``"inline"`` (the embedded default: no broker) delivers in this process right
    after commit, one try each (a failure is dead-lettered at once), and catches
    async projections up; ``"celery"`` hands over to Celery workers (tasks.py);
    ``None``/``"off"`` writes no outbox rows at all.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import random
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.handlers import ALL_EVENTS, HandlerSpec, handlers
from django_fluvius.events import sql
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.models import DeadLetter, Event, HandlerReceipt, Outbox
from django_fluvius.write.bus import events_appending

logger = logging.getLogger("django_fluvius.dispatch")

DELIVER_TASK = "fluvius.deliver"
PROJECT_TASK = "fluvius.project"
RELAY_TASK = "fluvius.relay"


# -- subscribers besides handlers (async projections register here) ---------------------------


class Subscribers:
    """Things woken after commit besides handlers: async projections (delivery/projections.py).

    They sit above this module, so they register themselves here instead of being
    imported. A subscriber has ``name``, ``wants(event)``, ``run_inline(using)``
    and ``redrive(event, using)``.
    """

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}

    def add(self, subscriber: Any) -> None:
        self._items[subscriber.name] = subscriber

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def get(self, name: str) -> Any:
        return self._items.get(name)

    def __iter__(self):
        return iter(list(self._items.values()))

    def wanting(self, event: Any) -> list[Any]:
        return [s for s in self._items.values() if s.wants(event)]


subscribers = Subscribers()


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
    table, q = _receipt_table(connection)
    sql_text = (
        f"INSERT INTO {table} ({q('handler')}, {q('position')}, {q('status')}, {q('created')}) "
        f"VALUES (%s, %s, %s, %s) ON CONFLICT ({q('handler')}, {q('position')}) "
        f"DO UPDATE SET {q('status')} = EXCLUDED.{q('status')} WHERE {table}.{q('status')} = %s "
        f"RETURNING {q('id')}"
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql_text, [handler, position, HandlerReceipt.Status.DONE, now, PENDING])
        return cursor.fetchone() is not None


PENDING = "pending"


def mark_pending(pairs: Iterable[tuple[HandlerSpec, int]]) -> None:
    """Pending receipts for ordered handlers, written before their deliveries are published."""
    by_db: dict[str, list[HandlerReceipt]] = defaultdict(list)
    for spec, position in pairs:
        by_db[handler_database(spec)].append(HandlerReceipt(handler=spec.name, position=position, status=PENDING))
    for using, rows in by_db.items():
        HandlerReceipt.objects.using(using).bulk_create(rows, ignore_conflicts=True)


def pending_predecessor(spec: HandlerSpec, event: Any) -> int | None:
    """For an ordered handler: the position of the aggregate's previous matching event if it is
    still on its way to this handler, else None.

    An event with no receipt, no outbox row and no dead letter never was (and never
    will be) delivered to this handler: it predates the handler, which does not wait for it.
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
    if status is not None:
        return position if status == PENDING else None
    in_outbox = Outbox.objects.using(store_database()).filter(aggregate_id=event.aggregate_id,
                                                              version=version).exists()
    dead = DeadLetter.objects.using(store_database()).filter(
        kind=DeadLetter.Kind.HANDLER, handler=spec.name, position=position).exists()
    return position if (in_outbox or dead) else None


def deliver(spec: HandlerSpec, event: Any, *, force: bool = False,
            also: Callable[[], None] | None = None) -> Delivery:
    """Run one handler for one event in its own transaction, with its receipt.

    ``force=True`` (replays) runs it even if a receipt exists and ignores ordering.
    ``also`` runs in the same transaction after the handler (the inline dispatcher
    deletes the outbox row there: one commit instead of two). Never raises for the
    handler's own errors: they come back as ``FAILED``.
    """
    using = handler_database(spec)
    if spec.ordered and not force:
        blocker = pending_predecessor(spec, event)
        if blocker is not None:
            return Delivery(WAIT, blocked_by=blocker)
    try:
        with transaction.atomic(using=using):
            if not claim_receipt(spec.name, event.position, using) and not force:
                return Delivery(DUPLICATE)
            spec(event)
            if also is not None:
                also()
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
    letter, _ = DeadLetter.objects.using(store_database()).update_or_create(
        kind=kind, handler=name, position=position, defaults=values)
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
                get_dispatcher().redeliver(handlers.get(letter.handler), letter.position)
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
                    defaults={"status": HandlerReceipt.Status.DISCARDED})
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
                event: Any = None, also: Callable[[], None] | None = None) -> str:
    """Try one delivery; schedule the next try (``schedule(attempt, countdown)``) or dead-letter it.

    ``schedule=None`` means there is no later try (inline mode): a failure is
    dead-lettered at once and a wait is left to the relay. Returns the outcome.
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
            result = deliver(spec, event, also=also)
    else:
        result = deliver(spec, event, also=also)

    if result.outcome == WAIT:
        if schedule is not None and item.waits < fluvius_settings.ORDERED_MAX_WAITS:
            schedule(Attempt(item.handler, item.position, item.attempt, item.waits + 1),
                     float(fluvius_settings.ORDERED_WAIT))
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
            try:
                schedule(Attempt(item.handler, item.position, item.attempt + 1, item.waits), delay)
                return FAILED
            except Exception as exc:  # noqa: BLE001 - broker down: keep it as a dead letter, not lost
                logger.exception("Could not schedule the next try of %s on %s.", spec.name, item.position)
                result = Delivery(FAILED, error=exc, traceback=traceback.format_exc())
        dead_letter(DeadLetter.Kind.HANDLER, spec.name, event, position=item.position, attempts=item.attempt,
                    error=result.error, tb=result.traceback)
    return result.outcome


# -- items the relay hands over ----------------------------------------------------------------


@dataclass(frozen=True)
class RelayItem:
    """An outbox row with its event's position: enough to find handlers and publish."""

    outbox_id: int | None
    position: int
    aggregate_id: Any
    version: int
    namespace: str
    evt_key: str


def items_from_rows(rows: Sequence[Outbox], using: str) -> list[RelayItem]:
    """Resolve outbox rows (named by aggregate and version) to event positions."""
    if not rows:
        return []
    wanted = {(row.aggregate_id, row.version) for row in rows}
    found: dict[tuple[Any, int], int] = {}
    events = Event.objects.using(using).filter(aggregate_id__in={a for a, _ in wanted},
                                               version__in={v for _, v in wanted})
    for aggregate_id, version, position in events.values_list("aggregate_id", "version", "position"):
        if (aggregate_id, version) in wanted:
            found[(aggregate_id, version)] = position
    items = []
    for row in rows:
        event_position = found.get((row.aggregate_id, row.version))
        if event_position is None:  # cannot happen with the row written in the event's transaction
            logger.error("Outbox row %s names no stored event (%s v%s); dropping it.", row.pk,
                         row.aggregate_id, row.version)
            Outbox.objects.using(using).filter(pk=row.pk).delete()
            continue
        items.append(RelayItem(row.pk, event_position, row.aggregate_id, row.version, row.namespace,
                               row.evt_key))
    return items


def delete_rows(ids: Iterable[int | None], using: str) -> None:
    """Delete handed-over outbox rows (one plain DELETE: no collector, no signals)."""
    ids = [i for i in ids if i is not None]
    if not ids:
        return
    connection = connections[using]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(Outbox._meta.db_table)} WHERE {quote('id')} IN "
                       f"({', '.join(['%s'] * len(ids))})", ids)


def relax_durability(using: str) -> None:
    """Let this connection's commits return before the WAL is flushed (PostgreSQL).

    For the relay thread's own connection only: losing its last commits in a
    server crash brings outbox rows back (delivered again: receipts dedupe), and
    since WAL is replayed in order, pending receipts are never lost without the
    DELETE that followed them. It spares the commands' commits a flush per round.
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


# -- dispatchers -----------------------------------------------------------------------------


class Dispatcher:
    """Writes outbox rows in the command's transaction and hands them over after commit."""

    writes_outbox = True

    def dispatch(self, events: Sequence[Any], using: str, batch: sql.WriteBatch | None = None) -> None:
        wanted = [event for event in events if is_wanted(event)]
        if not wanted:
            return
        rows = [Outbox(aggregate_id=e.aggregate_id, version=e.version, namespace=e.namespace,
                       evt_key=e.evt_key, created=e.created or timezone.now()) for e in wanted]
        if batch is not None:
            for row in rows:
                batch.insert(row)
        else:
            Outbox.objects.using(using).bulk_create(rows)
        transaction.on_commit(lambda: self.committed(rows, wanted, using), using=using)

    def committed(self, rows: Sequence[Outbox], events: Sequence[Any], using: str) -> None:
        raise NotImplementedError

    def hand_over(self, items: Sequence[RelayItem], using: str) -> None:
        """Deliver or publish these items, then delete their outbox rows."""
        raise NotImplementedError

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        raise NotImplementedError


class InlineDispatcher(Dispatcher):
    """Run handlers in this process once the transaction commits (no broker)."""

    def committed(self, rows: Sequence[Outbox], events: Sequence[Any], using: str) -> None:
        try:
            self.run([(row.pk, event) for row, event in zip(rows, events, strict=True)], using)
        except Exception:  # noqa: BLE001 - the command committed; the rows stay for the relay
            logger.exception("Inline dispatch failed after commit; the outbox keeps the events.")

    def hand_over(self, items: Sequence[RelayItem], using: str) -> None:
        pairs = []
        for item in items:
            try:
                pairs.append((item.outbox_id, load_event(item.position, using)))
            except Exception as exc:  # noqa: BLE001 - poison: dead-letter for every handler, drop the row
                for spec in handlers.for_event(item):
                    dead_letter(DeadLetter.Kind.HANDLER, spec.name, None, position=item.position, attempts=1,
                                error=exc, tb=traceback.format_exc())
                delete_rows([item.outbox_id], using)
        self.run(pairs, using)

    def run(self, pairs: Sequence[tuple[int | None, Any]], using: str) -> None:
        done: list[int | None] = []
        woken: dict[str, Any] = {}
        for outbox_id, event in pairs:
            waiting = deleted = False
            specs = handlers.for_event(event)
            for i, spec in enumerate(specs):
                also = None
                if (i == len(specs) - 1 and not waiting and outbox_id is not None
                        and handler_database(spec) == using):
                    # The last handler's transaction takes the row with it (saves a commit).
                    def also(outbox_id=outbox_id):
                        nonlocal deleted
                        delete_rows([outbox_id], using)
                        deleted = True
                outcome = run_attempt(Attempt(spec.name, event.position), schedule=None, event=event, also=also)
                waiting = waiting or outcome == WAIT
            for subscriber in subscribers.wanting(event):
                woken[subscriber.name] = subscriber
            if not waiting and not deleted:  # an ordered handler still waits: the relay tries again later
                done.append(outbox_id)
        for subscriber in woken.values():
            try:
                subscriber.run_inline(using)
            except Exception:  # noqa: BLE001 - one projection must not stop the others
                logger.exception("Async projection %s failed to catch up inline.", subscriber.name)
        delete_rows(done, using)

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        if run_attempt(Attempt(spec.name, position), schedule=None) == WAIT:
            # No later try in this mode: keep it visible rather than drop it.
            dead_letter(DeadLetter.Kind.HANDLER, spec.name, None, position=position, attempts=1,
                        message="Still waiting for the previous event of its aggregate (ordered handler); "
                                "re-drive that one first.")


class CeleryDispatcher(Dispatcher):
    """Hand deliveries to Celery workers (tasks.py); publishing happens off the request path."""

    def committed(self, rows: Sequence[Outbox], events: Sequence[Any], using: str) -> None:
        items = [RelayItem(row.pk, e.position, e.aggregate_id, e.version, e.namespace, e.evt_key)
                 for row, e in zip(rows, events, strict=True)]
        mode = fluvius_settings.RELAY
        runner = RELAY_MODES.get(mode)
        if runner is None:
            logger.error("FLUVIUS['RELAY'] is %r; expected one of %s. The outbox keeps the events.",
                         mode, sorted(RELAY_MODES))
            return
        runner(self, items, using)

    def hand_over(self, items: Sequence[RelayItem], using: str) -> None:
        app = celery_app()
        default_queue = fluvius_settings.CELERY_QUEUE
        size = max(1, int(fluvius_settings.RELAY_BATCH_SIZE))
        by_queue: dict[str | None, list[list[Any]]] = defaultdict(list)
        ordered: list[tuple[HandlerSpec, int]] = []
        projections: dict[str, None] = {}
        for item in items:
            for spec in handlers.for_event(item):
                by_queue[spec.queue or default_queue].append(Attempt(spec.name, item.position).as_message())
                if spec.ordered:
                    ordered.append((spec, item.position))
            for subscriber in subscribers.wanting(item):
                projections[subscriber.name] = None
        if ordered:
            mark_pending(ordered)
        with app.producer_or_acquire() as producer:
            for queue_name, deliveries in by_queue.items():
                for start in range(0, len(deliveries), size):
                    send(app, DELIVER_TASK, (deliveries[start:start + size], using), queue=queue_name,
                         producer=producer)
            for name in projections:
                send(app, PROJECT_TASK, (name, using), queue=default_queue, producer=producer)
        delete_rows((item.outbox_id for item in items), using)

    def redeliver(self, spec: HandlerSpec, position: int) -> None:
        send(celery_app(), DELIVER_TASK, ([Attempt(spec.name, position).as_message()], store_database()),
             queue=spec.queue or fluvius_settings.CELERY_QUEUE)


def send(app: Any, task: str, args: Sequence[Any], *, queue: str | None = None, countdown: float | None = None,
         producer: Any = None) -> None:
    """Publish one task message; fail fast (the outbox keeps what could not be sent)."""
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


class NullDispatcher:
    """Dispatch off: no outbox rows, nothing runs."""

    writes_outbox = False

    def dispatch(self, events: Sequence[Any], using: str, batch: Any = None) -> None:
        return None

    def hand_over(self, items: Sequence[RelayItem], using: str) -> None:
        return None

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


def dispatch_committed(events: Sequence[Any], using: str, batch: sql.WriteBatch | None = None,
                       **kwargs: Any) -> None:
    """Inside the command's transaction (before ``batch`` is flushed): outbox rows, relay on commit.

    Connected to the bus's ``events_appending`` signal below; ``AppConfig.ready``
    imports this module, so every process that runs commands writes outbox rows.
    """
    get_dispatcher().dispatch(events, using, batch)


events_appending.connect(dispatch_committed, dispatch_uid="django_fluvius.delivery.dispatch")


# -- the relay -------------------------------------------------------------------------------


def _hand_over_logged(dispatcher: Any, items: Sequence[RelayItem], using: str) -> bool:
    try:
        dispatcher.hand_over(items, using)
    except Exception as exc:  # noqa: BLE001 - broker down: the rows stay for the periodic relay
        logger.warning("Relay could not hand over %s outbox rows (%s: %s); they wait for the next relay.",
                       len(items), type(exc).__name__, exc)
        ids = [item.outbox_id for item in items if item.outbox_id is not None]
        try:
            Outbox.objects.using(using).filter(id__in=ids).update(attempts=F("attempts") + 1,
                                                                  last_error=f"{type(exc).__name__}: {exc}"[:2000])
        except Exception:  # noqa: BLE001 - the database may be the thing that is down
            logger.exception("Could not record the relay failure on the outbox rows.")
        return False
    return True


class BackgroundRelay:
    """A daemon thread per process that publishes committed outbox rows.

    The on-commit callback only puts items on a queue. The thread collects what
    arrives within ``RELAY_LINGER`` seconds and hands it over in one go (one
    message per batch of deliveries, one DELETE), so a busy process pays the
    broker round trip once per batch, not once per command.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = None
        self._pid: int | None = None

    def submit(self, dispatcher: Any, items: Sequence[RelayItem], using: str) -> None:
        self._ensure().put((dispatcher, using, list(items)))

    def _ensure(self) -> queue.Queue:
        # A forked child (Celery prefork, gunicorn) inherits no thread: start its own.
        if self._queue is None or self._pid != os.getpid():
            with self._lock:
                if self._queue is None or self._pid != os.getpid():
                    self._queue = queue.Queue()
                    self._pid = os.getpid()
                    thread = threading.Thread(target=self._run, args=(self._queue,), name="fluvius-relay",
                                              daemon=True)
                    thread.start()
        return self._queue

    def _run(self, q: queue.Queue) -> None:
        while True:
            try:
                self._round(q)
            except Exception:  # noqa: BLE001 - the thread must outlive any one round
                logger.exception("The relay thread failed a round; the periodic relay keeps the rows.")

    def _round(self, q: queue.Queue) -> None:
        try:
            first = q.get(timeout=1.0)
        except queue.Empty:
            # Idle: give the connection back (test databases are dropped at the end).
            connections.close_all()
            first = q.get()
        taken = [first]
        linger = float(fluvius_settings.RELAY_LINGER)
        if linger > 0:
            # Sleep rather than wait on the queue: a waiting thread would wake (and
            # take the GIL from the request) at every commit.
            time.sleep(linger)
        while True:
            try:
                taken.append(q.get_nowait())
            except queue.Empty:
                break
        groups: dict[tuple[int, str], tuple[Any, list[RelayItem]]] = {}
        for entry in taken:
            if entry is not None:  # None: close_connections() asks for the connections back
                dispatcher, using, items = entry
                groups.setdefault((id(type(dispatcher)), using), (dispatcher, []))[1].extend(items)
        try:
            for (_, using), (dispatcher, items) in groups.items():
                try:
                    relax_durability(using)
                except Exception:  # noqa: BLE001 - the hand-over reports the database's state
                    logger.debug("Could not relax durability on the relay connection.", exc_info=True)
                _hand_over_logged(dispatcher, items, using)
            if None in taken:
                connections.close_all()
        finally:
            for _ in taken:
                q.task_done()

    def close_connections(self, timeout: float = 10.0) -> bool:
        """Hand over what is queued, then close the thread's database connections."""
        if self._queue is None or self._pid != os.getpid():
            return True
        self._queue.put(None)
        return self.flush(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is handed over (or failed); False on timeout."""
        q = self._queue
        if q is None or self._pid != os.getpid():
            return True
        end = time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = end - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True


relay = BackgroundRelay()
atexit.register(relay.flush, 5.0)


def _relay_in_thread(dispatcher: Any, items: Sequence[RelayItem], using: str) -> None:
    relay.submit(dispatcher, items, using)


def _relay_now(dispatcher: Any, items: Sequence[RelayItem], using: str) -> None:
    _hand_over_logged(dispatcher, items, using)


RELAY_MODES: dict[str, Callable[[Any, Sequence[RelayItem], str], None]] = {
    "thread": _relay_in_thread,
    "sync": _relay_now,
}


def prune_receipts(older_than: timedelta, *, using: str | None = None) -> int:
    """Delete done receipts older than ``older_than``: no redelivery comes that late.

    Receipts are what make a late duplicate harmless, so keep them longer than a
    message can stay in the broker (the Redis visibility timeout, a broker outage).
    """
    cutoff = timezone.now() - older_than
    deleted, _ = (HandlerReceipt.objects.using(using or store_database())
                  .filter(created__lt=cutoff, status=HandlerReceipt.Status.DONE).delete())
    return deleted


@dataclass
class RelayResult:
    handed_over: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def relay_pending(*, using: str | None = None, min_age: float | None = None, limit: int | None = None,
                  dispatcher: Any = None) -> RelayResult:
    """Hand over outbox rows older than ``min_age`` seconds (the periodic relay).

    Under PostgreSQL the rows are locked (``SKIP LOCKED``) while they are
    published, so two relays never send the same row at once. Rows that cannot be
    handed over (broker down) stay, with their attempts counted.
    """
    using = using or store_database()
    dispatcher = dispatcher or get_dispatcher()
    min_age = float(fluvius_settings.RELAY_GRACE if min_age is None else min_age)
    limit = limit or max(1, int(fluvius_settings.RELAY_BATCH_SIZE)) * 10
    result = RelayResult()
    if not dispatcher.writes_outbox:
        return result
    cutoff = timezone.now() - timedelta(seconds=min_age)
    rows_qs = Outbox.objects.using(using).filter(created__lte=cutoff).order_by("id")
    if isinstance(dispatcher, InlineDispatcher):
        # Delivering runs handler transactions: no lock held across them (receipts dedupe).
        items = items_from_rows(list(rows_qs[:limit]), using)
        if items:
            dispatcher.hand_over(items, using)
            result.handed_over = len(items)
        return result
    with transaction.atomic(using=using):
        rows = list(rows_qs.select_for_update(skip_locked=True)[:limit])
        items = items_from_rows(rows, using)
        if items:
            if _hand_over_logged(dispatcher, items, using):
                result.handed_over = len(items)
            else:
                result.failed = len(items)
    return result
