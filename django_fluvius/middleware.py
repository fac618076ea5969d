"""The Django request middleware: each request's ``DomainContext`` and correlation id.

One way to build a request's context, used by the REST layer, the admin and
``DomainContextMiddleware`` alike::

    MIDDLEWARE = [
        ...,
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django_fluvius.middleware.DomainContextMiddleware",
    ]

The middleware gives each request a correlation id (the client's
``X-Correlation-ID`` when it is usable, else a new one, echoed in the response)
and makes the request's context the current one (``context.py``): a domain built
without a context inside the request, ``UserDomain()``, acts for the request's
user and tenant. ``context_from_request(request)`` builds that context from

- the authenticated user (``request.user``; for DRF views, whatever DRF's
  authentication classes decided: the context is built when first asked for,
  after authentication, and again if the user changes);
- the tenant, from ``FLUVIUS['TENANCY']['RESOLVER']`` given the request and the
  user (never from a payload; a header only for a tenant the user belongs to);
- the correlation id and the client address (``REMOTE_ADDR``: a project behind a
  proxy rewrites it in a middleware of its own; ``X-Forwarded-For`` is not trusted).

A plain view under the middleware that lets a ``FluviusError`` of a client
(``TenantRequired``, ``AggregateNotFound``, ``PermissionDenied`` ...) escape gets its
status and JSON body, as the REST layer answers, never a 500.

Outside requests (Celery tasks, management commands, scripts) there is no
current context and a domain built without one gets ``DomainContext.system()``.

This module is a face (it reads requests and resolves tenants through
``security.tenancy``); the ``DomainContext`` it builds lives at the ground, in
``context.py``, so the bus and the domain never import the request layer. (The
command bus's own middleware is ``write/middleware.py``.)
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import JsonResponse

from django_fluvius.context import DomainContext, use_context
from django_fluvius.exceptions import FluviusError
from django_fluvius.security import tenancy

__all__ = [
    "CORRELATION_HEADER",
    "DomainContextMiddleware",
    "client_address",
    "context_from_request",
    "correlation_id",
]

CORRELATION_HEADER = "X-Correlation-ID"
_CORRELATION_META = "HTTP_X_CORRELATION_ID"
# What we accept from a client as a correlation id: short, printable, no spaces
# (it is echoed in a header and stored in an indexed column of 100 characters).
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,100}$")
# Where a request keeps its context: (user it was built for, context).
_CACHE_ATTR = "_fluvius_context"


def _django_request(request: Any) -> Any:
    """The ``HttpRequest`` under a DRF ``Request`` (or the request itself)."""
    return getattr(request, "_request", request)


def correlation_id(request: Any) -> str:
    """The request's correlation id: the client's ``X-Correlation-ID`` if usable, else a new one.

    Kept on the ``HttpRequest`` as ``correlation_id`` so every part of one request
    (the context, error responses, the echoed header) sees the same value.
    """
    http_request = _django_request(request)
    value = getattr(http_request, "correlation_id", None)
    if value:
        return value
    offered = http_request.META.get(_CORRELATION_META, "")
    value = offered if _VALID_CORRELATION_ID.match(offered) else uuid.uuid4().hex
    http_request.correlation_id = value
    return value


def client_address(request: Any) -> str | None:
    """The peer address as the server saw it (``REMOTE_ADDR``; forwarded headers are not trusted)."""
    return _django_request(request).META.get("REMOTE_ADDR") or None


def context_from_request(request: Any, namespace: str | None = None, *, source: str = "http") -> DomainContext:
    """The ``DomainContext`` of a request: user, tenant, correlation id, client address.

    Built once per request and user (the tenant resolver runs once), then copied
    for each namespace or source asked for.
    """
    http_request = _django_request(request)
    # A DRF Request authenticates on first access to .user and hands the user down to
    # the HttpRequest; a plain request has the lazy user of AuthenticationMiddleware.
    user = getattr(request, "user", None)
    cached = http_request.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] is user:
        base = cached[1]
    else:
        base = DomainContext.create(
            user=user,
            tenant=tenancy.request_tenant(http_request, user),
            correlation_id=correlation_id(http_request),
            client_address=client_address(http_request),
            source="http",
        )
        http_request.__dict__[_CACHE_ATTR] = (user, base)
    if source != base.source:
        base = DomainContext.create(namespace=namespace, user=base.user, tenant=base.tenant,
                                    correlation_id=base.correlation_id, client_address=base.client_address,
                                    source=source)
    return base.for_namespace(namespace)


class DomainContextMiddleware:
    """Django middleware: the request's correlation id, and its context as the current one."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any):
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self.__acall__(request)
        correlation_id(request)
        with use_context(lambda: context_from_request(request)):
            response = self.get_response(request)
        return self.finish(request, response)

    async def __acall__(self, request: Any) -> Any:
        correlation_id(request)
        with use_context(lambda: context_from_request(request)):
            response = await self.get_response(request)
        return self.finish(request, response)

    @staticmethod
    def finish(request: Any, response: Any) -> Any:
        if CORRELATION_HEADER not in response:
            response[CORRELATION_HEADER] = request.correlation_id
        return response

    def process_exception(self, request: Any, exception: BaseException) -> Any:
        """A client error of django-fluvius raised by a plain view: its status and JSON body, not a 500.

        (DRF views, the REST layer's among them, answer their own errors first.)
        """
        if isinstance(exception, FluviusError) and 400 <= exception.status_code < 500:
            return JsonResponse(exception.as_dict(), status=exception.status_code)
        return None
