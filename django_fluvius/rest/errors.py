"""One exception handler for the whole REST face: every error becomes the same JSON.

The body is always ``{"code": ..., "message": ..., "errors": {...}}`` (``errors``
only where fields or parameters are at fault; ``details`` where the error
carries more). ``FluviusError`` already knows its status, code and body
(``as_dict()``); DRF's own exceptions (parse errors, wrong content type,
authentication, throttling ...) and a few of Django's are reshaped here, found
through the lookup table ``ERROR_MAPPERS`` by walking the exception's MRO.

The viewsets of ``django_fluvius.rest`` use this handler on their own (through
``get_exception_handler``). To give the project's other DRF views the same error
shape, set it globally::

    REST_FRAMEWORK = {"EXCEPTION_HANDLER": "django_fluvius.rest.errors.exception_handler"}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core import exceptions as django_exceptions
from django.db import DataError, OperationalError
from django.http import Http404
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from django_fluvius.exceptions import FluviusError, RequestTooLarge
from django_fluvius.text import safe_text
from django_fluvius.write.payload import _flatten

# -- mapping -----------------------------------------------------------------

ErrorBody = tuple[int, dict[str, Any], dict[str, str]]  # status, body, headers


def _from_fluvius(exc: FluviusError) -> ErrorBody:
    retry_after = exc.details.get("retry_after")  # PositionNotReached: when to ask again
    return exc.status_code, exc.as_dict(), {"Retry-After": str(int(retry_after))} if retry_after else {}


def _drf_code(exc: drf_exceptions.APIException) -> str:
    codes = exc.get_codes()
    return codes if isinstance(codes, str) else exc.default_code


def _from_drf(exc: drf_exceptions.APIException) -> ErrorBody:
    headers: dict[str, str] = {}
    # Set on DRF's NotAuthenticated (by the view) and Throttled.
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        headers["WWW-Authenticate"] = auth_header
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(int(wait))
    detail = exc.detail
    if isinstance(detail, dict | list):
        body = {"code": exc.default_code, "message": "The request is invalid.", "errors": _flatten(detail)}
    else:
        body = {"code": _drf_code(exc), "message": str(detail)}
    return exc.status_code, body, headers


def _from_validation(exc: drf_exceptions.ValidationError) -> ErrorBody:
    errors = _flatten(exc.detail if isinstance(exc.detail, dict | list) else [exc.detail])
    fields = ", ".join(sorted(errors))
    return 400, {"code": "invalid", "message": f"The request is invalid: {fields}.", "errors": errors}, {}


def _from_http404(exc: Http404) -> ErrorBody:
    return 404, {"code": "not_found", "message": str(exc) or "Not found."}, {}


def _from_permission(exc: django_exceptions.PermissionDenied) -> ErrorBody:
    message = str(exc) or drf_exceptions.PermissionDenied.default_detail
    return 403, {"code": "permission_denied", "message": str(message)}, {}


def _from_too_big(exc: Exception) -> ErrorBody:
    return _from_fluvius(RequestTooLarge(str(exc) or None))


def _from_suspicious(exc: django_exceptions.SuspiciousOperation) -> ErrorBody:
    return 400, {"code": "bad_request", "message": str(exc) or "The request was refused."}, {}


def _from_django_validation(exc: django_exceptions.ValidationError) -> ErrorBody:
    errors = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    return 400, {"code": "invalid", "message": "The request is invalid.", "errors": errors}, {}


def _from_data_error(exc: DataError | OperationalError) -> ErrorBody:
    # The database refused a value (too long, out of range): the transaction was
    # rolled back, nothing is stored; the client sent data the model cannot hold.
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    message = "A value does not fit the database" + (f": {first_line}" if first_line else ".")
    return 400, {"code": "invalid_data", "message": message}, {}


# MariaDB / MySQL report some refused values as OperationalError, by these error codes:
# 1292 a value of the wrong form (a UUID MariaDB's uuid type refuses, a bad date),
# 1366 an incorrect value for the column's type.
MYSQL_VALUE_ERRORS = frozenset({1292, 1366})


def _from_operational_error(exc: OperationalError) -> ErrorBody | None:
    code = exc.args[0] if exc.args else None
    if code in MYSQL_VALUE_ERRORS:
        return _from_data_error(exc)
    return None  # a real operational failure (connection lost, lock timeout): a 500


ERROR_MAPPERS: dict[type[BaseException], Callable[[Any], ErrorBody | None]] = {
    FluviusError: _from_fluvius,
    drf_exceptions.ValidationError: _from_validation,
    drf_exceptions.APIException: _from_drf,
    Http404: _from_http404,
    django_exceptions.PermissionDenied: _from_permission,
    django_exceptions.RequestDataTooBig: _from_too_big,
    django_exceptions.SuspiciousOperation: _from_suspicious,
    django_exceptions.ValidationError: _from_django_validation,
    DataError: _from_data_error,
    OperationalError: _from_operational_error,
}


def error_body(exc: BaseException) -> ErrorBody | None:
    """Status, JSON body and headers for an exception; None when it is not a client error."""
    for klass in type(exc).__mro__:
        mapper = ERROR_MAPPERS.get(klass)
        if mapper is not None:
            return mapper(exc)
    return None


def exception_handler(exc: BaseException, context: dict[str, Any] | None = None) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: the JSON error response, or None to let Django answer (500)."""
    found = error_body(exc)
    if found is None:
        return None
    status_code, body, headers = found
    # A lone surrogate the client sent (a field name, a value echoed in a message) cannot be
    # encoded as UTF-8: rendering the 400 failed with a 500. Escape it.
    body = _encodable(body)
    # Like DRF: an error response rolls back an ATOMIC_REQUESTS transaction.
    set_rollback()
    return Response(body, status=status_code, headers=headers)


def _encodable(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value
