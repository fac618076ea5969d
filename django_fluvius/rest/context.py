"""The ``DomainContext`` of one HTTP request: who, for which tenant, from where, in which flow.

There is one way to build it, ``django_fluvius.context.context_from_request``
(shared with the admin and ``DomainContextMiddleware``); the REST layer uses it
through these names.
"""

from __future__ import annotations

from ..context import CORRELATION_HEADER, client_address, context_from_request, correlation_id

__all__ = ["CORRELATION_HEADER", "client_address", "context_from_request", "correlation_id"]
