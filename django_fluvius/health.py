"""Health and readiness endpoints, for load balancers, orchestrators and monitoring.

Include them in the project's URLs::

    path("health/", include("django_fluvius.health")),

``GET health/`` (liveness)
    200 ``{"status": "ok"}`` while the process answers. It touches nothing else on
    purpose: an orchestrator restarts a process whose liveness fails, and restarting
    every web process because the database is down fixes nothing and adds load.

``GET health/ready/`` (readiness)
    200 when every check passes, 503 otherwise, with one entry per check:

    ``database``
        ``SELECT 1`` on each database alias the framework uses (the default, the
        event store's ``FLUVIUS['DATABASE']``, the ``READ_DATABASE``). A failed one
        is closed, so the next probe reconnects instead of reusing a dead socket.
    ``delivery``
        How far event delivery lags, in seconds: for each subscription (event
        handler or async projection) the oldest event of its keys it has not
        settled yet — the relay, the broker or the workers are down or failing.
        Fails above ``FLUVIUS['HEALTH_MAX_DELIVERY_LAG']`` (``None``: never). Dead
        letters are counted, not failed on: they wait for a person, not a restart.

    ``?check=database`` (repeatable) runs only the named checks: a load balancer
    asks whether this process can serve (``database``), monitoring asks for all.

The bodies hold statuses and figures only, never an error's text (it can name
hosts and users): the probes are unauthenticated, as load balancers need.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import subscriptions
from django_fluvius.delivery.dispatch import declared
from django_fluvius.events.feed import Feed
from django_fluvius.exceptions import FluviusError, ProbeMethodNotAllowed, UnknownHealthCheck
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt

OK = "ok"
FAILING = "failing"
UNAVAILABLE = "unavailable"


def _aliases() -> list[str]:
    aliases = ["default", fluvius_settings.DATABASE, fluvius_settings.READ_DATABASE]
    return list(dict.fromkeys(a for a in aliases if a))


def check_database() -> dict[str, Any]:
    results = {}
    for alias in _aliases():
        connection = connections[alias]
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
            results[alias] = OK
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", named by its type
            results[alias] = f"{FAILING}: {type(exc).__name__}"
            connection.close_if_unusable_or_obsolete()
            connection.close()
    return {"status": OK if all(v == OK for v in results.values()) else FAILING, "databases": results}


def _age(created: Any) -> float:
    return round(max(0.0, (timezone.now() - created).total_seconds()), 3) if created else 0.0


def delivery_lag(using: str | None = None) -> dict[str, Any]:
    """Figures of how far delivery lags; ``lag_seconds`` is the largest age among them."""
    using = using or fluvius_settings.DATABASE
    feed = Feed(using)
    head = feed.head()
    subs = declared()
    checkpoints = {c.name: c for c in Checkpoint.objects.using(using).filter(name__in=[s.name for s in subs])}
    figures: dict[str, Any] = {"subscriptions": {}, "dead_letters": DeadLetter.objects.using(using).count()}
    lags = [0.0]
    for sub in subs:
        checkpoint = checkpoints.get(sub.name)
        if checkpoint is None and sub.start != subscriptions.BEGINNING:
            unread: list = []  # not started yet: it begins "now" (or at its position) when first relayed
        else:
            key = checkpoint.key if checkpoint is not None else (0, 0)  # a projection never run: from the start
            unread = feed.keys(key, head, evt_keys=sub.read_keys, namespace=sub.namespace, limit=1)
        created = (Event.objects.using(using).filter(position=unread[0][1]).values_list("created", flat=True)
                   .first() if unread else None)
        age = _age(created)
        entry: dict[str, Any] = {"kind": sub.kind, "behind": bool(unread), "oldest_seconds": age}
        if sub.kind == subscriptions.HANDLER:
            entry["pending"] = HandlerReceipt.objects.using(subscriptions.receipt_database(sub)).filter(
                handler=sub.name, status=HandlerReceipt.Status.PENDING).count()
        figures["subscriptions"][sub.name] = entry
        lags.append(age)
    figures["lag_seconds"] = max(lags)
    return figures


def check_delivery() -> dict[str, Any]:
    limit = fluvius_settings.HEALTH_MAX_DELIVERY_LAG
    try:
        figures = delivery_lag()
    except Exception as exc:  # noqa: BLE001 - the database check says why; this one cannot tell
        return {"status": UNAVAILABLE, "error": type(exc).__name__}
    late = limit is not None and figures["lag_seconds"] > float(limit)
    return {"status": FAILING if late else OK, "max_lag_seconds": limit, **figures}


# The readiness checks by name (``?check=<name>``), in the order they run.
CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "delivery": check_delivery,
}


def _response(body: dict[str, Any], status: int) -> JsonResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"  # a cached "ok" would hide an outage
    return response


def _error(error: FluviusError) -> JsonResponse:
    return _response(error.as_dict(), error.status_code)


def probe(view: Callable[[HttpRequest], JsonResponse]) -> Callable[[HttpRequest], JsonResponse]:
    """GET and HEAD only, answered in JSON; exempt from CSRF, so any other method is a
    clear 405 rather than the CSRF middleware's HTML 403."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest) -> JsonResponse:
        if request.method not in ("GET", "HEAD"):
            response = _error(ProbeMethodNotAllowed(f"Method {request.method} is not allowed: use GET."))
            response["Allow"] = "GET, HEAD"
            return response
        return view(request)

    return wrapper


@probe
def live(request: HttpRequest) -> JsonResponse:
    return _response({"status": OK}, 200)


@probe
def ready(request: HttpRequest) -> JsonResponse:
    asked = request.GET.getlist("check") or list(CHECKS)
    unknown = sorted(set(asked) - set(CHECKS))
    if unknown:
        return _error(UnknownHealthCheck(unknown, list(CHECKS)))
    started = time.monotonic()
    results = {name: CHECKS[name]() for name in CHECKS if name in asked}
    healthy = all(r["status"] == OK for r in results.values())
    body = {"status": OK if healthy else UNAVAILABLE, "checks": results,
            "duration_ms": round((time.monotonic() - started) * 1000, 1)}
    return _response(body, 200 if healthy else 503)


app_name = "fluvius-health"
urlpatterns = [
    path("", live, name="live"),
    path("ready/", ready, name="ready"),
]
