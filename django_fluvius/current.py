"""The ``DomainContext`` of the work running now, when something set one.

``DomainContextMiddleware`` (context.py) sets it for each request, so a
``Domain()`` built without a context inside a view acts for the request's user
and tenant, never as trusted system code by accident. Outside a request (Celery
tasks, management commands, scripts) nothing is set and a domain built without
a context gets a system context. Event handlers run with it cleared (handlers.py),
inline or in a worker alike.

A ``ContextVar``, so it follows asyncio tasks and asgiref's thread hops and never
leaks between concurrent requests. The value is a ``DomainContext`` or a
zero-argument callable that builds one when asked (a request's user is only known
once authentication ran, which for DRF is inside the view).

It sits at the ground of the layering (nothing imported) so ``handlers`` and
``domain`` can both use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_current: ContextVar[Any] = ContextVar("fluvius_domain_context", default=None)


def current_context() -> Any:
    """The context set for the running work, or None."""
    value = _current.get()
    if value is not None and callable(value):
        return value()
    return value


@contextmanager
def use_context(context: Any) -> Iterator[Any]:
    """Within the block, domains built without a context use ``context`` (None clears it)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
