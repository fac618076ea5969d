"""The ``@event_handler`` registry.

``@event_handler('user-created')`` registers a function (sync or ``async def``)
under its dotted name; a second handler with the same name is refused. How the
handlers are run after commit is the dispatcher's business (``dispatch.py``); each
handler is a subscription with a checkpoint on the event feed (``subscriptions.py``).

Invariant: a handler is known by its dotted name, which is what receipts, dead
letters and checkpoints store — so renaming or moving a handler's function makes
it a new handler, and two handlers can never share those rows.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured

from django_fluvius.context import use_context

ALL_EVENTS = "*"


@dataclass(eq=False)
class HandlerSpec:
    name: str
    func: Callable[..., Any]
    evt_keys: tuple[str, ...]
    namespace: str | None = None
    ordered: bool = False
    max_retries: int | None = None
    # Database alias of the handler's effect; its receipt is written there, in the same
    # transaction (None = FLUVIUS['DATABASE']).
    using: str | None = None
    # Celery queue of this handler's deliveries (None = FLUVIUS['CELERY_QUEUE']).
    queue: str | None = None
    # Where the handler's subscription starts: "now" (events committed after it is first
    # run), "beginning" or an event position (checked: fluvius.E055).
    start: Any = "now"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    def matches(self, event: Any) -> bool:
        if self.namespace is not None and event.namespace != self.namespace:
            return False
        return ALL_EVENTS in self.evt_keys or event.evt_key in self.evt_keys

    def __call__(self, event: Any) -> Any:
        # A handler is system work, inline (on the request's commit) as in a Celery worker: the
        # request's context is not its own (a domain built without a context gets a system one).
        with use_context(None):
            if self.is_async:
                return async_to_sync(self.func)(event)
            return self.func(event)


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}
        self.version = 0  # changes with every (un)registration (the commit path compares it)

    def register(self, spec: HandlerSpec) -> HandlerSpec:
        existing = self._handlers.get(spec.name)
        if existing is not None and existing.func is not spec.func:
            # Re-importing the same module (autoreload, tests) is harmless; two
            # different functions under one name would make delivery ambiguous.
            if getattr(existing.func, "__code__", None) is not getattr(spec.func, "__code__", None):
                raise ImproperlyConfigured(f"An event handler named {spec.name!r} is already registered.")
        self._handlers[spec.name] = spec
        self.version += 1
        return spec

    def unregister(self, name: str) -> None:
        self._handlers.pop(name, None)
        self.version += 1

    def get(self, name: str) -> HandlerSpec:
        return self._handlers[name]

    def __contains__(self, name: str) -> bool:
        return name in self._handlers

    def __iter__(self):
        return iter(list(self._handlers.values()))

    def for_event(self, event: Any) -> list[HandlerSpec]:
        return [spec for spec in self._handlers.values() if spec.matches(event)]


handlers = HandlerRegistry()


def event_handler(
    evt_keys: str | Iterable[str],
    namespace: str | None = None,
    *,
    name: str | None = None,
    ordered: bool = False,
    max_retries: int | None = None,
    using: str | None = None,
    queue: str | None = None,
    start: Any = "now",
    registry: HandlerRegistry | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the decorated function for every committed event of these keys.

    ``namespace`` narrows it to one domain; ``ordered=True`` asks for per-aggregate
    order (version N+1 of an aggregate is never handled before N);
    ``max_retries`` overrides ``FLUVIUS['HANDLER_MAX_RETRIES']``; ``using`` is the
    database its effect (and its receipt) go to; ``queue`` the Celery queue;
    ``start`` where its subscription starts: ``"now"`` (the default: only events
    committed once it is deployed), ``"beginning"`` (every event ever stored) or an
    event position (every event after it). ``'*'`` matches all keys.
    """
    keys = (evt_keys,) if isinstance(evt_keys, str) else tuple(evt_keys)
    if not keys:
        raise ImproperlyConfigured("@event_handler needs at least one event key.")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        spec = HandlerSpec(
            name=name or f"{func.__module__}.{func.__qualname__}",
            func=func,
            evt_keys=keys,
            namespace=namespace,
            ordered=ordered,
            max_retries=max_retries,
            using=using,
            queue=queue,
            start=start,
            options=options,
        )
        (registry or handlers).register(spec)
        func.handler_spec = spec  # type: ignore[attr-defined]
        return func

    return decorator
