"""``DomainContext``: who runs a command, for which tenant, in which flow, and the context of the work running now.

Every command carries a ``DomainContext``; it lands in each event's metadata and
in the command log. ``DomainContext.system()`` marks trusted code no user started
(Celery tasks, management commands, a domain built without a context outside a
request).

The *current* context is a ``ContextVar``: the Django request middleware
(``django_fluvius.middleware.DomainContextMiddleware``) sets it for each request,
so a ``Domain()`` built without a context inside a view acts for the request's
user and tenant, never as trusted system code by accident. Outside a request
nothing is set and a domain built without a context gets a system context. Event
handlers run with it cleared, inline or in a worker alike. A ``ContextVar`` follows
asyncio tasks and asgiref's thread hops, so a context never leaks between
concurrent requests. Its value is a ``DomainContext`` or a zero-argument callable
that builds one when asked (a request's user is known only once authentication
ran, which for DRF is inside the view).

Invariant: this module sits at the ground of the layering and imports nothing of
the package, so every layer (the bus, the domain, the handlers) can name it.
"""


from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DomainContext:
    """Who runs a command, for which tenant, as part of which flow.

    ``DomainContext.create(namespace=..., user=request.user)`` fills in a fresh
    correlation id. Everything here lands in each event's metadata and in the
    command log.

    ``is_system`` marks trusted code no user started (``DomainContext.system``):
    Celery tasks, management commands, a domain built without a context outside
    a request. The authorization middleware lets it run every command, and without
    a tenant it sees every tenant. A request's context comes from
    ``django_fluvius.middleware.context_from_request`` (the REST layer, the admin and
    ``DomainContextMiddleware`` use it) and is never a system one.
    """

    namespace: str | None = None
    user: Any = None
    tenant: str | None = None
    correlation_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    causation_id: str | None = None
    client_address: str | None = None
    source: str = "python"
    is_system: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, namespace: str | None = None, user: Any = None, **kwargs: Any) -> DomainContext:
        known = set(cls.__dataclass_fields__)
        extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in known}
        context = cls(namespace=namespace, user=user, **kwargs)
        context.extra.update(extra)
        return context

    @classmethod
    def system(cls, namespace: str | None = None, **kwargs: Any) -> DomainContext:
        """The context of work no user started: Celery tasks, management commands."""
        kwargs.setdefault("source", "system")
        kwargs.setdefault("is_system", True)
        return cls.create(namespace=namespace, **kwargs)

    def for_namespace(self, namespace: str | None) -> DomainContext:
        """This context for another domain (a copy; the same one when the namespace matches)."""
        if namespace == self.namespace:
            return self
        return dataclasses.replace(self, namespace=namespace, extra=dict(self.extra))

    @property
    def user_id(self) -> str:
        user = self.user
        if user is None or not getattr(user, "is_authenticated", True):
            return ""
        pk = getattr(user, "pk", None)
        return str(pk if pk is not None else user)

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "user": self.user_id,
            "correlation_id": self.correlation_id,
            "source": self.source,
        }
        username = getattr(self.user, "get_username", None)
        if callable(username) and self.user_id:
            data["username"] = username()
        if self.tenant:
            data["tenant"] = self.tenant
        if self.causation_id:
            data["causation_id"] = self.causation_id
        if self.client_address:
            data["client_address"] = self.client_address
        data.update(self.extra)
        return data


def system_context(namespace: str | None = None, **kwargs: Any) -> DomainContext:
    """The context of Celery tasks, management commands and scripts (``DomainContext.system``)."""
    return DomainContext.system(namespace=namespace, **kwargs)


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
