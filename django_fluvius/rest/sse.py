"""Serving Server-Sent Events of the feed: what one client may see, the framing, and the loops.

``stream_async`` (ASGI) serves a client from ``FeedTail``, one reader of the feed per
process and event loop that all streams share; ``stream_sync`` (WSGI) polls the feed
in the worker thread it holds. The view (``rest/stream.py``) parses the request and
picks one. See that module for the behaviour and docs/stream.md for the costs.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from rest_framework.utils.encoders import JSONEncoder

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.dispatch import CHANNEL
from django_fluvius.events.feed import ORIGIN, Feed, FeedKey
from django_fluvius.exceptions import StreamsBusy
from django_fluvius.models import Event
from django_fluvius.write.bus import event_as_dict, events_appending

logger = logging.getLogger("django_fluvius.stream")

# How many of the newest events each process keeps in memory for its streams; a stream
# further behind reads the database until it catches up.
TAIL_SIZE = 5000


# -- what one client may see ---------------------------------------------------------------------


@dataclass
class StreamFilter:
    """The events one stream sends: its namespace and filters, the client's tenant and metadata."""

    namespace: str
    resources: frozenset[str] | None
    aggregate_ids: frozenset[uuid.UUID] | None
    evt_keys: frozenset[str] | None
    tenant: str | None  # None: every tenant
    full_metadata: bool
    visible_metadata: Callable[[Any], Any]
    # (resource, aggregate ids) -> the ids the client may see; None: no row scoping beyond tenancy.
    row_scope: Callable[[str, set[Any]], set[Any]] | None = None

    def wants(self, event: Event) -> bool:
        return (event.namespace == self.namespace
                and (self.resources is None or event.resource in self.resources)
                and (self.aggregate_ids is None or event.aggregate_id in self.aggregate_ids)
                and (self.evt_keys is None or event.evt_key in self.evt_keys)
                and (self.tenant is None or (event.tenant or "") == self.tenant))

    def scoped(self, events: list[Event]) -> list[Event]:
        """The events whose aggregates the client may see (one query per resource; sync code)."""
        if self.row_scope is None or not events:
            return events
        by_resource: dict[str, set[Any]] = {}
        for event in events:
            by_resource.setdefault(event.resource, set()).add(event.aggregate_id)
        visible = {(resource, pk) for resource, ids in by_resource.items() for pk in self.row_scope(resource, ids)}
        return [e for e in events if (e.resource, e.aggregate_id) in visible]


def frame(event: Event, stream: StreamFilter, cache: dict[tuple[int, bool], bytes] | None = None) -> bytes:
    """One SSE message (the rendered JSON cached per event and metadata view, shared by streams)."""
    key = (event.position, stream.full_metadata)
    if cache is not None and key in cache:
        return cache[key]
    data = event_as_dict(event)
    data["metadata"] = stream.visible_metadata(data.get("metadata"))
    body = json.dumps(data, cls=JSONEncoder, separators=(",", ":"))
    message = f"id: {event.position}\nevent: {event.evt_key}\ndata: {body}\n\n".encode()
    if cache is not None:
        cache[key] = message
    return message


HEARTBEAT = b": heartbeat\n\n"


# -- one reader of the feed per process (ASGI) ------------------------------------------------------


class FeedTail:
    """The newest events of the feed, read once per wake-up for every stream of this process.

    ``events`` holds ``(key, event)`` in feed order after ``start``; a stream whose
    place is at or after ``start`` reads from memory, one further behind from the
    database. ``changed`` is replaced (and the old one set) at every read that
    found events, so each waiting stream wakes once.
    """

    def __init__(self, using: str):
        self.using = using
        self.start: FeedKey = ORIGIN
        self.key: FeedKey = ORIGIN
        self.events: deque[tuple[FeedKey, Event]] = deque()
        self.frames: dict[tuple[int, bool], bytes] = {}
        self.changed = asyncio.Event()
        self.wake = asyncio.Event()
        self.ready = asyncio.Event()
        self.clients = 0
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # -- streams come and go --

    async def attach(self) -> FeedTail:
        self.clients += 1
        if self.task is None or self.task.done():
            self.loop = asyncio.get_running_loop()
            self.ready = asyncio.Event()
            # A context of its own: not the first client's request (whose thread and database
            # connection go when that client does).
            self.task = self.loop.create_task(self._run(), name=f"fluvius-feed-tail-{self.using}",
                                              context=contextvars.Context())
        task = self.task
        waiter = asyncio.ensure_future(self.ready.wait())
        try:
            await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.ready.is_set():  # the reader could not start (the database is away)
            self.detach()
            task.result()  # raises its error: this stream ends, the client reconnects later
        return self

    def detach(self) -> None:
        self.clients -= 1
        if self.clients <= 0 and self.task is not None:
            self.task.cancel()  # nobody listens: no connection held, no polling
            self.task = None

    def covers(self, key: FeedKey) -> bool:
        return tuple(key) >= tuple(self.start)

    def after(self, key: FeedKey) -> list[tuple[FeedKey, Event]]:
        return [(k, e) for k, e in self.events if k > tuple(key)]

    def poke(self) -> None:
        """Wake the reader (thread-safe: this process's commits call it from request threads)."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake.set)

    # -- the reader --

    def _bound(self) -> FeedKey:
        return Feed(self.using).bound()

    def _read(self, after: FeedKey) -> tuple[list[Event], FeedKey]:
        feed = Feed(self.using)
        upto = feed.bound()
        events = feed.read(after, upto, limit=int(fluvius_settings.STREAM_BATCH_SIZE))
        if events and len(events) >= int(fluvius_settings.STREAM_BATCH_SIZE):
            upto = feed.key(events[-1])
        return events, upto

    async def _run(self) -> None:
        listener = None
        hearing: asyncio.Task | None = None
        try:
            self.start = self.key = await sync_to_async(self._bound, thread_sensitive=False)()
            self.events.clear()
            self.frames.clear()
            self.ready.set()
            listener = await _listen(self.using)
            if listener is not None:
                # Read the notifications all the time (none is lost while the feed is read).
                hearing = asyncio.create_task(self._hear(listener))
            poll = float(fluvius_settings.STREAM_POLL)
            while True:
                try:
                    await asyncio.wait_for(self.wake.wait(), poll)
                except TimeoutError:
                    pass  # the poll: SQLite, other processes without NOTIFY, a lost LISTEN
                self.wake.clear()
                more = True
                while more:
                    try:
                        events, upto = await sync_to_async(self._read, thread_sensitive=False)(self.key)
                    except Exception:  # noqa: BLE001 - the database is away: try at the next wake-up
                        logger.warning("The event stream could not read the feed.", exc_info=True)
                        await asyncio.sleep(poll)
                        break
                    more = len(events) >= int(fluvius_settings.STREAM_BATCH_SIZE)
                    self._extend(events, upto)
        finally:
            if hearing is not None:
                hearing.cancel()
            if listener is not None:
                await listener.close()

    async def _hear(self, listener: Any) -> None:
        """Wake the reader at every ``NOTIFY``; on a lost connection, leave it to the poll."""
        try:
            async for _ in listener.notifies():
                self.wake.set()
        except Exception:  # noqa: BLE001 - the poll stands in
            logger.warning("The event stream lost its LISTEN connection; it polls every %ss.",
                           fluvius_settings.STREAM_POLL, exc_info=True)

    def _extend(self, events: list[Event], upto: FeedKey) -> None:
        feed_key = Feed.key
        for event in events:
            self.events.append((feed_key(event), event))
        while len(self.events) > TAIL_SIZE:
            old_key, old = self.events.popleft()
            self.start = old_key
            self.frames.pop((old.position, True), None)
            self.frames.pop((old.position, False), None)
        if tuple(upto) > tuple(self.key):
            self.key = upto
        if events:
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()


async def _listen(using: str) -> Any:
    """A psycopg async connection that LISTENs on the relay's channel (PostgreSQL), or None."""
    wrapper = connections[using]
    if wrapper.vendor != "postgresql":
        return None
    try:
        import psycopg

        params = wrapper.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
        await conn.execute(f"LISTEN {CHANNEL}")
        return conn
    except Exception:  # noqa: BLE001 - the poll stands in
        logger.warning("The event stream could not LISTEN; it polls every %ss.", fluvius_settings.STREAM_POLL,
                       exc_info=True)
        return None


class Tails:
    """One ``FeedTail`` per database alias and event loop of this process."""

    def __init__(self) -> None:
        self._tails: dict[tuple[str, int], FeedTail] = {}
        self._lock = threading.Lock()

    def get(self, using: str) -> FeedTail:
        key = (using, id(asyncio.get_running_loop()))
        with self._lock:
            tail = self._tails.get(key)
            if tail is None:
                tail = self._tails[key] = FeedTail(using)
            return tail

    def poke(self, using: str) -> None:
        with self._lock:
            found = [tail for (alias, _), tail in self._tails.items() if alias == using]
        for tail in found:
            tail.poke()


tails = Tails()


def _wake_on_commit(events: Any, using: str, **kwargs: Any) -> None:
    """This process's commits wake its streams at once (other processes': NOTIFY, or the poll)."""
    if events:
        transaction.on_commit(lambda: tails.poke(using), using=using)


events_appending.connect(_wake_on_commit, dispatch_uid="django_fluvius.rest.stream")


# -- opening ---------------------------------------------------------------------------------------


class OpeningGate:
    """At most ``STREAM_OPENING_LIMIT`` streams of this process opening at once (ASGI).

    Under ASGI every request runs its synchronous part in a thread of its own, and opening a
    stream (authentication, permissions, the feed's bound) holds a database connection there.
    A crowd of clients connecting together (browsers reconnecting after a deploy) would ask the
    database for that many connections in the same instant: past PostgreSQL's
    ``max_connections`` (100 by default) the late ones got a 500. Through the gate they wait
    for a slot instead; a stream gives its connection back before its slot (streaming holds
    none), so the gate bounds this process's connections for streams by its size.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._size = 0
        self._slots = threading.BoundedSemaphore(1)

    def _current(self) -> threading.BoundedSemaphore:
        size = max(1, int(fluvius_settings.STREAM_OPENING_LIMIT))
        with self._lock:
            if size != self._size:  # the setting changed (tests): slots held go back to the old one
                self._size, self._slots = size, threading.BoundedSemaphore(size)
            return self._slots

    @contextmanager
    def slot(self) -> Iterator[None]:
        slots = self._current()
        timeout = float(fluvius_settings.STREAM_OPENING_TIMEOUT)
        if not slots.acquire(timeout=timeout):
            raise StreamsBusy(f"More than {self._size} event streams were opening at once for {timeout:g} s; "
                              "try again shortly.", retry_after=1)
        try:
            yield
        finally:
            slots.release()


opening = OpeningGate()


# -- streaming -------------------------------------------------------------------------------------


async def stream_async(stream: StreamFilter, after: FeedKey, using: str) -> AsyncIterator[bytes]:
    """The SSE messages of one client under ASGI: from memory when close to the head, else the database."""
    # The request's database connection is not needed while streaming: give it back now
    # (a hundred idle clients must not hold a hundred connections).
    await sync_to_async(connections.close_all)()
    tail = await tails.get(using).attach()
    heartbeat = float(fluvius_settings.STREAM_HEARTBEAT)
    scoped = sync_to_async(closing(stream.scoped)) if stream.row_scope is not None else None
    try:
        yield b"retry: 2000\n\n"
        key = after
        while True:
            if not tail.covers(key):
                events, upto = await sync_to_async(closing(_read_db))(using, key, tail.start)
                wanted = [e for e in events if stream.wants(e)]
                if scoped is not None:
                    wanted = await scoped(wanted)
                for event in wanted:
                    yield frame(event, stream)
                key = upto
                continue
            changed = tail.changed
            pairs = tail.after(key)
            if pairs:
                wanted = [e for _, e in pairs if stream.wants(e)]
                if scoped is not None:
                    wanted = await scoped(wanted)
                for event in wanted:
                    yield frame(event, stream, tail.frames)
                key = pairs[-1][0]
                continue
            if tuple(tail.key) > tuple(key):
                key = tail.key
            try:
                await asyncio.wait_for(changed.wait(), heartbeat)
            except TimeoutError:
                yield HEARTBEAT
    finally:
        tail.detach()


def closing(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func``, then this context's database connections closed (a stream reads now and then)."""

    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:
            connections.close_all()

    return run


def _read_db(using: str, after: FeedKey, upto: FeedKey) -> tuple[list[Event], FeedKey]:
    """Events after ``after`` up to ``upto`` from the database, one batch; the key read up to."""
    limit = int(fluvius_settings.STREAM_BATCH_SIZE)
    events = Feed(using).read(after, upto, limit=limit)
    return events, (Feed.key(events[-1]) if len(events) >= limit else upto)


def stream_sync(stream: StreamFilter, after: FeedKey, using: str) -> Iterator[bytes]:
    """The SSE messages of one client under WSGI: this worker thread polls the feed for it."""
    heartbeat = float(fluvius_settings.STREAM_HEARTBEAT)
    poll = float(fluvius_settings.STREAM_POLL)
    limit = int(fluvius_settings.STREAM_BATCH_SIZE)
    yield b"retry: 2000\n\n"
    key = after
    quiet_since = time.monotonic()
    try:
        while True:
            feed = Feed(using)
            events = feed.read(key, feed.bound(), limit=limit)
            if events:
                key = Feed.key(events[-1])
                for event in stream.scoped([e for e in events if stream.wants(e)]):
                    yield frame(event, stream)
                    quiet_since = time.monotonic()
                if len(events) >= limit:
                    continue
            if time.monotonic() - quiet_since >= heartbeat:
                yield HEARTBEAT
                quiet_since = time.monotonic()
            time.sleep(poll)
    finally:
        connections[using].close()
