"""The ``DomainContext`` of one HTTP request: who, from where, in which flow.

``context_from_request(request, namespace)`` is the one place the REST layer
builds a context, so a Django middleware can later take the job over (it only
needs to set ``request.correlation_id`` before the view runs).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from ..domain import DomainContext

CORRELATION_HEADER = "X-Correlation-ID"
_CORRELATION_META = "HTTP_X_CORRELATION_ID"
# What we accept from a client as a correlation id: short, printable, no spaces
# (it is echoed in a header and stored in an indexed column of 100 characters).
_VALID_CORRELATION_ID = re.compile(r"^[A-Za-z0-9._:@+=/-]{1,100}$")


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
    """The peer address as the server saw it.

    ``X-Forwarded-For`` is not trusted here: only a proxy the project controls may
    set it, so a project behind one should rewrite ``REMOTE_ADDR`` in a middleware.
    """
    return _django_request(request).META.get("REMOTE_ADDR") or None


def context_from_request(request: Any, namespace: str | None) -> DomainContext:
    """The ``DomainContext`` of a request: user, client address and correlation id."""
    return DomainContext.create(
        namespace=namespace,
        user=getattr(request, "user", None),
        correlation_id=correlation_id(request),
        client_address=client_address(request),
        source="http",
    )
