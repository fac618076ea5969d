"""The error hierarchy: every error django-fluvius raises is a ``FluviusError``.

Each class carries the HTTP status it maps to and a stable machine-readable
``code`` (as DRF's ``APIException`` does), so the REST layer maps them in one
place and Python callers can branch on the class or the code.
"""

from __future__ import annotations

from typing import Any

from django.core import exceptions as django_exceptions


class FluviusError(Exception):
    """Base class of every django-fluvius error."""

    status_code: int = 500
    default_code: str = "fluvius_error"
    default_message: str = "A django-fluvius error occurred."

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: Any):
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.details = details
        super().__init__(self.message)

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of this error, as the REST layer returns it."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        errors = getattr(self, "errors", None)
        if errors:
            body["errors"] = errors
        if self.details:
            body["details"] = self.details
        return body


class CommandValidationError(FluviusError):
    """The command's payload is missing fields, has unknown ones or wrong types.

    ``errors`` maps each offending field to a list of messages.
    """

    status_code = 400
    default_code = "invalid_payload"
    default_message = "The command payload is invalid."

    def __init__(self, errors: dict[str, list[str]] | None = None, message: str | None = None, **kw: Any):
        self.errors = errors or {}
        if message is None and self.errors:
            fields = ", ".join(sorted(self.errors))
            message = f"The command payload is invalid: {fields}."
        super().__init__(message, **kw)


class InvalidQuery(FluviusError):
    """Query parameters name an unknown or hidden field, a forbidden operator, a bad value.

    ``errors`` maps each offending parameter to messages that say what is allowed.
    """

    status_code = 400
    default_code = "invalid_query"
    default_message = "The query is invalid."

    def __init__(self, errors: dict[str, list[str]] | None = None, message: str | None = None, **kw: Any):
        self.errors = errors or {}
        if message is None and self.errors:
            message = f"The query is invalid: {', '.join(sorted(self.errors))}."
        super().__init__(message, **kw)


class PermissionDenied(FluviusError, django_exceptions.PermissionDenied):
    """The user may not run this command or see this resource.

    It is also Django's ``PermissionDenied``, so Django and DRF treat it as a 403.
    """

    status_code = 403
    default_code = "permission_denied"
    default_message = "You do not have permission to perform this action."


class TenantRequired(FluviusError):
    """Tenancy is on, and the context names no tenant where one is needed.

    Raised when a user's request resolves to no tenant (the user belongs to none,
    or to several and said which in no trusted way), and when a create command
    runs in a context without a tenant. See docs/security.md.
    """

    status_code = 400
    default_code = "tenant_required"
    default_message = "This request needs a tenant, and none was resolved for it."


class UnknownCommand(FluviusError):
    """No action of the domain answers to this command key."""

    status_code = 404
    default_code = "unknown_command"
    default_message = "Unknown command."


class UnknownResource(FluviusError):
    """No domain declares a resource of this name."""

    status_code = 404
    default_code = "unknown_resource"
    default_message = "Unknown resource."


class UnknownDomain(FluviusError):
    """No registered domain has this namespace."""

    status_code = 404
    default_code = "unknown_domain"
    default_message = "Unknown domain."


class AggregateNotFound(FluviusError):
    """There is no aggregate (or projection row) with this id."""

    status_code = 404
    default_code = "not_found"
    default_message = "Aggregate not found."


class ConcurrencyConflict(FluviusError):
    """The expected version is stale, or a concurrent writer won the race."""

    status_code = 409
    default_code = "concurrency_conflict"
    default_message = "The aggregate was changed by someone else."

    def __init__(self, message: str | None = None, *, expected_version: int | None = None,
                 actual_version: int | None = None, **kw: Any):
        self.expected_version = expected_version
        self.actual_version = actual_version
        if expected_version is not None:
            kw.setdefault("expected_version", expected_version)
        if actual_version is not None:
            kw.setdefault("actual_version", actual_version)
        super().__init__(message, **kw)


class DomainError(FluviusError):
    """A business rule refused the command. Nothing is stored."""

    status_code = 422
    default_code = "domain_error"
    default_message = "The command was refused by a business rule."


class ConfigurationError(FluviusError):
    """A domain, aggregate or setting is declared wrongly."""

    status_code = 500
    default_code = "configuration_error"
    default_message = "django-fluvius is configured wrongly."


class EventDecodeError(FluviusError):
    """A stored event cannot be decoded into the current shape."""

    status_code = 500
    default_code = "event_decode_error"
    default_message = "A stored event could not be decoded."
