"""System checks of event handlers, async projections, subscriptions and dispatch settings (E040-E049, E055, W056).

| id            | problem                                                              |
|---------------|----------------------------------------------------------------------|
| fluvius.E040  | a ``FLUVIUS['HANDLERS']``/``['PROJECTIONS']`` entry is the wrong kind |
| fluvius.E041  | an ``@event_handler`` listens to an event key no domain produces      |
| fluvius.E042  | an ``@event_handler`` names a namespace no domain declares            |
| fluvius.E043  | an async projection reads an event key no domain produces             |
| fluvius.E044  | an async projection names a namespace no domain declares              |
| fluvius.E045  | ``FLUVIUS['DISPATCH']`` is not a known dispatch mode                  |
| fluvius.E046  | ``FLUVIUS['CELERY_APP']`` cannot be imported or is not a Celery app   |
| fluvius.E047  | a ``FLUVIUS['PROJECTIONS']`` entry cannot be imported (loading.py)     |
| fluvius.E048  | ``FLUVIUS['RELAY']`` is not a known relay mode                        |
| fluvius.E049  | a retry, backoff or batch setting is not a usable number              |
| fluvius.E055  | a subscription's ``start`` is not "now", "beginning" or a position    |
| fluvius.W056  | a subscription in the database that no code declares (database check: |
|               | ``manage.py check --database default``, and ``migrate``)             |

(``fluvius.E006``, from loading.py, reports a ``FLUVIUS['HANDLERS']`` entry that does not import.)
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import subscriptions
from django_fluvius.delivery.dispatch import DISPATCHERS, RELAY_MODES, declared
from django_fluvius.delivery.handlers import ALL_EVENTS, handlers
from django_fluvius.delivery.projections import async_projections
from django_fluvius.events.upcasting import known_keys
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.registry import domains


def _key_problems(kind: str, label: str, namespace: str | None, evt_keys: Any, obj: Any,
                  key_id: str, namespace_id: str) -> list[checks.CheckMessage]:
    by_namespace = {d.__namespace__: known_keys(d) for d in domains}
    if namespace is not None and namespace not in by_namespace:
        return [checks.Error(
            f"{kind} {label!r} names namespace {namespace!r}, which no domain declares.",
            hint=f"Known namespaces: {', '.join(sorted(by_namespace)) or 'none'}.",
            obj=obj, id=namespace_id,
        )]
    if not by_namespace:  # no domains loaded: nothing to compare with
        return []
    known = by_namespace[namespace] if namespace is not None else frozenset().union(*by_namespace.values())
    messages: list[checks.CheckMessage] = []
    for key in evt_keys:
        if key == ALL_EVENTS or key in known or upcasters.resolve(namespace, key) in known:
            continue
        where = f"domain {namespace!r}" if namespace is not None else "any domain"
        messages.append(checks.Error(
            f"{kind} {label!r} listens to event key {key!r}, which no action of {where} produces.",
            hint="Check the spelling against the evt_key of the @action (or its @apply).",
            obj=obj, id=key_id,
        ))
    return messages


def check_handlers(app_configs=None, **kwargs):
    messages: list[checks.CheckMessage] = []
    for spec in handlers:
        messages += _key_problems("Event handler", spec.name, spec.namespace, spec.evt_keys, spec.func,
                                  "fluvius.E041", "fluvius.E042")
    for cls in async_projections:
        messages += _key_problems("Async projection", cls.name, cls.namespace, cls.keys(), cls,
                                  "fluvius.E043", "fluvius.E044")
    return messages


def check_starts(app_configs=None, **kwargs):
    """A start that is not usable is an error, never a guess: the subscription is not delivered."""
    messages: list[checks.CheckMessage] = []
    for sub in declared():
        problem = subscriptions.start_problem(sub.start)
        if problem is not None:
            what = "Event handler" if sub.kind == subscriptions.HANDLER else "Async projection"
            messages.append(checks.Error(
                f"{what} {sub.name!r}: {problem}.",
                hint='Use start="now", start="beginning" or an event position such as start=1200.',
                obj=getattr(sub.subscriber, "func", None) or getattr(sub.subscriber, "cls", None),
                id="fluvius.E055"))
    return messages


def check_undeclared_subscriptions(app_configs=None, databases=None, **kwargs):
    """Subscriptions in the database that no code declares: their events go to nobody."""
    if not databases or fluvius_settings.DATABASE not in databases:
        return []
    from django.db import DatabaseError

    from django_fluvius.events.feed import Feed
    from django_fluvius.models import Checkpoint

    using = fluvius_settings.DATABASE
    names = {sub.name for sub in declared()}
    messages: list[checks.CheckMessage] = []
    try:
        rows = list(Checkpoint.objects.using(using).exclude(name__in=names))
        head = Feed(using).head() if rows else None
    except DatabaseError:  # not migrated yet: nothing to compare with
        return []
    for cp in rows:
        behind = head is not None and head > cp.key
        messages.append(checks.Warning(
            f"Subscription {cp.name!r} ({cp.kind}) is in the database but no code declares it"
            + (" and events wait after its checkpoint" if behind else "") + "; nothing is delivered to it.",
            hint="Deploy its handler or projection again, or delete its checkpoint "
                 "(admin, or Checkpoint.objects.filter(name=...).delete()) if it is gone for good.",
            id="fluvius.W056"))
    return messages


_NUMBERS = {
    "HANDLER_MAX_RETRIES": (int, 0),
    "RETRY_BACKOFF": (float, 0),
    "RETRY_BACKOFF_MAX": (float, 0),
    "RELAY_LINGER": (float, 0),
    "RELAY_NOTIFY_INTERVAL": (float, 0),
    "RELAY_BATCH_SIZE": (int, 1),
    "RELAY_POLL": (float, 0.01),
    "REDELIVER_AFTER": (float, 0),
    "SUBSCRIPTION_LEASE": (float, 1),
    "SUBSCRIPTION_WINDOW": (int, 1),
    "ORDERED_WAIT": (float, 0),
    "ORDERED_MAX_WAITS": (int, 0),
    "PROJECTION_BATCH_SIZE": (int, 1),
    "PROJECTION_MAX_RETRIES": (int, 0),
}


def check_dispatch_settings(app_configs=None, **kwargs):
    messages: list[checks.CheckMessage] = []
    mode = fluvius_settings.DISPATCH
    if mode not in DISPATCHERS:
        messages.append(checks.Error(
            f"FLUVIUS['DISPATCH'] is {mode!r}.",
            hint=f"Use one of {', '.join(repr(m) for m in DISPATCHERS)}.", id="fluvius.E045",
        ))
    relay = fluvius_settings.RELAY
    if relay not in RELAY_MODES:
        messages.append(checks.Error(
            f"FLUVIUS['RELAY'] is {relay!r}.",
            hint=f"Use one of {', '.join(repr(m) for m in RELAY_MODES)}.", id="fluvius.E048",
        ))
    app = fluvius_settings.CELERY_APP
    if mode == "celery" and app is not None:
        try:
            app = import_string(app) if isinstance(app, str) else app
        except ImportError as exc:
            messages.append(checks.Error(f"FLUVIUS['CELERY_APP'] {app!r} cannot be imported: {exc}",
                                         hint="Point it at your Celery() instance.", id="fluvius.E046"))
        else:
            if not hasattr(app, "send_task"):
                messages.append(checks.Error(f"FLUVIUS['CELERY_APP'] is {app!r}, not a Celery app.",
                                             hint="Point it at your Celery() instance.", id="fluvius.E046"))
    for name, (kind, minimum) in _NUMBERS.items():
        value = getattr(fluvius_settings, name)
        try:
            ok = not isinstance(value, bool) and kind(value) >= minimum and kind(value) == value
        except (TypeError, ValueError):
            ok = False
        if not ok:
            messages.append(checks.Error(
                f"FLUVIUS[{name!r}] is {value!r}.",
                hint=f"Use {'an integer' if kind is int else 'a number'} >= {minimum}.", id="fluvius.E049",
            ))
    return messages


def register() -> None:
    checks.register(check_handlers, "fluvius")
    checks.register(check_starts, "fluvius")
    checks.register(check_dispatch_settings, "fluvius")
    # Tagged "database" only, like the stored-keys check (checks.py): Django 6 hands every
    # alias to the checks a tag selects, so a "fluvius" tag would make `check --tag fluvius`
    # (and run_checks(tags=["fluvius"]) in tests) query the database.
    checks.register(check_undeclared_subscriptions, checks.Tags.database)
