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
    client costs a coroutine, no thread. One ``FeedTail`` (``rest/sse.py``) per
    process reads new events once per wake-up and hands them to every stream;
    it wakes on this process's commits, on PostgreSQL ``NOTIFY`` (the channel the
    relay announces commits on, ``delivery/dispatch.py``, through a psycopg async
    connection) and every ``STREAM_POLL`` seconds. Under WSGI (gunicorn sync
    workers) a stream holds its worker thread for as long as the client stays
    connected and polls the database every ``STREAM_POLL`` seconds: size the
    worker/thread count for the clients (docs/stream.md).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework.exceptions import NotAcceptable
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from django_fluvius.conf import fluvius_settings
from django_fluvius.domain import Domain
from django_fluvius.events.feed import ORIGIN, Feed, FeedKey
from django_fluvius.exceptions import InvalidPosition, InvalidRequest
from django_fluvius.models import Event
from django_fluvius.read.consistency import parse_position
from django_fluvius.rest.sse import StreamFilter, opening, stream_async, stream_sync
from django_fluvius.rest.views import FluviusAPIMixin, metadata_filter
from django_fluvius.security import tenancy

STREAM_TYPE = "text/event-stream; charset=utf-8"


class EventStreamRenderer(BaseRenderer):
    """Lets content negotiation accept ``text/event-stream``; the stream itself is not rendered by it."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return json.dumps(data, cls=JSONEncoder).encode()


# -- the view ---------------------------------------------------------------------------------------


def resume_key(position: int, using: str, name: str = "Last-Event-ID") -> FeedKey:
    """The feed key of the event at ``position`` (a stream resumes right after it); ``name``: what
    the client sent it as, for the error."""
    if position == 0:
        return ORIGIN
    row = Event.objects.using(using).filter(position=position).values_list("txid", flat=True).first()
    if row is None and not Event.objects.using(using).filter(position=position).exists():
        raise InvalidPosition(f"No event has the position {position}: resume after one the stream sent.",
                              errors={name: [f"{position} is not an event's position."]})
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
    opening_slot: ExitStack | None = None  # ASGI: this request's place in the opening gate

    def get_authenticators(self) -> list[Any]:
        if self.read_views:
            return [auth() for auth in self.read_views[0].authentication_classes]
        return list(super().get_authenticators())

    def get_permissions(self) -> list[Any]:
        if self.read_views:
            classes = dict.fromkeys(p for view in self.read_views for p in view.permission_classes)
            return [permission() for permission in classes]
        return list(super().get_permissions())

    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(request, ASGIRequest):
            return super().dispatch(request, *args, **kwargs)  # WSGI: the worker count bounds it
        # ASGI: each request opens in a thread of its own; the gate bounds how many at once
        # (rest/sse.py). initial() takes the slot, so a full gate's 503 is DRF's error response;
        # the connection goes back before the slot does.
        self.opening_slot = ExitStack()
        with self.opening_slot:
            try:
                return super().dispatch(request, *args, **kwargs)
            finally:
                connections.close_all()

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        if self.opening_slot is not None:
            self.opening_slot.enter_context(opening.slot())
        super().initial(request, *args, **kwargs)

    def get_view_name(self) -> str:
        return f"{self.namespace}: event stream"

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response):
            # Errors are the usual JSON body, whatever the client accepted.
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def get(self, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request.accepted_renderer, EventStreamRenderer):
            raise NotAcceptable("This endpoint sends text/event-stream only.")
        stream = self.stream_filter(request)
        using = fluvius_settings.DATABASE
        after = self.start_key(request, using)
        if request.method == "HEAD":  # the headers a GET would have; no endless body to throw away
            return self.stream_headers(HttpResponse(content_type=STREAM_TYPE))
        if isinstance(request._request, ASGIRequest):
            content: Any = stream_async(stream, after, using)
        else:
            content = stream_sync(stream, after, using)
        return self.stream_headers(StreamingHttpResponse(content, content_type=STREAM_TYPE))

    @staticmethod
    def stream_headers(response: Any) -> Any:
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
        return resume_key(parse_position(raw, name), using, name)

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
