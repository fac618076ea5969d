"""``GET /<namespace>/_stream/``: the committed events of a namespace as Server-Sent Events.

Each event is one SSE message::

    id: 42
    event: user-renamed
    data: {"position": 42, "evt_key": "user-renamed", ...}   (as .../<id>/events/ renders it)

A client resumes with ``Last-Event-ID`` (browsers send it when they reconnect)
or ``?after=<position>``: the stream goes on after that event with nothing
skipped and nothing repeated. Without either it starts now. ``?resource=``,
``?aggregate_id=`` and ``?evt_key=`` (repeatable or comma-separated) narrow it.

What a client is sent
    The view is a DRF view of the REST face: its authentication and permission
    classes run first (401/403 before any stream), then tenancy (a tenant-scoped
    domain streams the request's tenant's events only) and, when the domain
    overrides ``scope_queryset``, that row scoping: an event is sent when the
    aggregate's row is visible to the client (its row in the resource's scoped
    QuerySet). Metadata is filtered as on the events endpoints.

Order and gaps
    Events come in the order of the gap-safe feed (``events/feed.py``): a stream
    only passes events below the feed's bound, so an event whose transaction
    committed late is sent when it commits, never skipped. On PostgreSQL feed
    order is commit order, which can differ from position order: ids are
    positions, and resuming after one continues at that event's place in the feed.

How it is served
    Under ASGI (uvicorn, daphne) the response is an async iterator: a connected
    client costs a coroutine and a queue, no thread. One ``FeedTail`` per
    process reads new events once per wake-up and hands them to every stream;
    it wakes on this process's commits, on PostgreSQL ``NOTIFY`` (the channel the
    relay announces commits on, ``delivery/dispatch.py``, through a psycopg async
    connection) and every ``STREAM_POLL`` seconds. Under WSGI (gunicorn sync
    workers) a stream holds its worker thread for as long as the client stays
    connected and polls the database every ``STREAM_POLL`` seconds: size the
    worker/thread count for the clients (docs/stream.md).
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
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections, transaction
from django.http import StreamingHttpResponse
from rest_framework.exceptions import NotAcceptable
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.dispatch import CHANNEL
from django_fluvius.domain import Domain
from django_fluvius.events.feed import ORIGIN, Feed, FeedKey
from django_fluvius.exceptions import InvalidPosition, InvalidRequest
from django_fluvius.models import Event
from django_fluvius.read.consistency import parse_position
from django_fluvius.rest.views import FluviusAPIMixin, metadata_filter
from django_fluvius.security import tenancy
from django_fluvius.write.bus import event_as_dict, events_appending

logger = logging.getLogger("django_fluvius.stream")

# How many of the newest events each process keeps in memory for its streams; a stream
# further behind reads the database until it catches up.
TAIL_SIZE = 5000


class EventStreamRenderer(BaseRenderer):
    """Lets content negotiation accept ``text/event-stream``; the stream itself is not rendered by it."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return json.dumps(data, cls=JSONEncoder).encode()


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
        await self.ready.wait()
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
        try:
            self.start = self.key = await sync_to_async(self._bound, thread_sensitive=False)()
            self.events.clear()
            self.frames.clear()
            self.ready.set()
            listener = await _listen(self.using)
            poll = float(fluvius_settings.STREAM_POLL)
            while True:
                await self._wait(listener, poll)
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
            if listener is not None:
                await listener.close()

    async def _wait(self, listener: Any, poll: float) -> None:
        if self.wake.is_set():
            return
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.wake.wait())]
        if listener is not None:
            waits.append(asyncio.ensure_future(_next_notify(listener)))
        try:
            await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

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


async def _next_notify(listener: Any) -> None:
    async for _ in listener.notifies(stop_after=1):
        return


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


# -- the view ---------------------------------------------------------------------------------------


def resume_key(position: int, using: str) -> FeedKey:
    """The feed key of the event at ``position`` (a stream resumes right after it)."""
    if position == 0:
        return ORIGIN
    row = Event.objects.using(using).filter(position=position).values_list("txid", flat=True).first()
    if row is None and not Event.objects.using(using).filter(position=position).exists():
        raise InvalidPosition(f"No event has the position {position}: resume after one the stream sent.",
                              errors={"Last-Event-ID": [f"{position} is not an event's position."]})
    return (row or 0, position)


def _values(request: Any, name: str) -> list[str]:
    return [v.strip() for raw in request.query_params.getlist(name) for v in raw.split(",") if v.strip()]


class StreamView(FluviusAPIMixin, APIView):
    """``GET /<namespace>/_stream/``: the namespace's committed events as Server-Sent Events.

    See the module docstring: ``Last-Event-ID`` / ``?after=`` resume, ``?resource=``,
    ``?aggregate_id=`` and ``?evt_key=`` narrow; authentication, permissions and tenancy
    are the REST face's.
    """

    renderer_classes = [EventStreamRenderer, JSONRenderer]
    schema = None  # an event stream has no OpenAPI operation to speak of (docs/stream.md)
    # Set by the router: the namespace's resource viewsets. The stream authenticates as the
    # first does and asks for the permissions of every one of them (it shows all their events).
    read_views: list[Any] | None = None

    def get_authenticators(self) -> list[Any]:
        if self.read_views:
            return [auth() for auth in self.read_views[0].authentication_classes]
        return list(super().get_authenticators())

    def get_permissions(self) -> list[Any]:
        if self.read_views:
            classes = dict.fromkeys(p for view in self.read_views for p in view.permission_classes)
            return [permission() for permission in classes]
        return list(super().get_permissions())

    def get_view_name(self) -> str:
        return f"{self.namespace}: event stream"

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(response, StreamingHttpResponse):
            # Errors are the usual JSON body, whatever the client accepted.
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def get(self, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request.accepted_renderer, EventStreamRenderer):
            raise NotAcceptable("This endpoint sends text/event-stream only.")
        stream = self.stream_filter(request)
        using = fluvius_settings.DATABASE
        after = self.start_key(request, using)
        if isinstance(request._request, ASGIRequest):
            content: Any = stream_async(stream, after, using)
        else:
            content = stream_sync(stream, after, using)
        response = StreamingHttpResponse(content, content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # nginx: pass every message on at once
        return response

    def start_key(self, request: Any, using: str) -> FeedKey:
        raw = request.META.get("HTTP_LAST_EVENT_ID")
        name = "Last-Event-ID"
        if raw is None or not raw.strip():
            raw, name = request.query_params.get("after"), "after"
        if raw is None:
            return Feed(using).bound()  # from now on
        return resume_key(parse_position(raw, name), using)

    def stream_filter(self, request: Any) -> StreamFilter:
        domain = self.get_domain()
        resources = _values(request, "resource")
        unknown = sorted(set(resources) - set(domain.__resources__))
        if unknown:
            raise InvalidRequest(f"{self.namespace} has no resource {', '.join(map(repr, unknown))} "
                                 f"(known: {', '.join(sorted(domain.__resources__)) or 'none'}).",
                                 code="invalid_parameter", errors={"resource": unknown})
        ids = []
        for raw in _values(request, "aggregate_id"):
            try:
                ids.append(uuid.UUID(raw))
            except ValueError:
                raise InvalidRequest(f"aggregate_id {raw[:50]!r} is not a UUID.", code="invalid_parameter",
                                     errors={"aggregate_id": [f"{raw[:50]!r} is not a UUID."]}) from None
        evt_keys = _values(request, "evt_key")
        user = getattr(request, "user", None)
        permission = fluvius_settings.EVENT_METADATA_PERMISSION
        full = fluvius_settings.EXPOSED_METADATA is None or bool(
            permission and user is not None and user.has_perm(permission))
        return StreamFilter(
            namespace=self.namespace,
            resources=frozenset(resources) or None,
            aggregate_ids=frozenset(ids) or None,
            evt_keys=frozenset(evt_keys) or None,
            tenant=tenancy.scope_of(domain.context) if tenancy.is_scoped(domain) else None,
            full_metadata=full,
            visible_metadata=metadata_filter(request),
            row_scope=self.row_scope(domain),
        )

    @staticmethod
    def row_scope(domain: Domain) -> Callable[[str, set[Any]], set[Any]] | None:
        """The domain's ``scope_queryset`` as a filter of aggregate ids, if it overrides it."""
        if type(domain).scope_queryset is Domain.scope_queryset:
            return None
        resources = set(domain.__resources__)

        def visible(resource: str, ids: set[Any]) -> set[Any]:
            if resource not in resources:
                return set()
            return set(domain.statemgr.queryset(resource).filter(pk__in=ids).values_list("pk", flat=True))

        return visible
