"""The error hierarchy: every error django-fluvius raises is a ``FluviusError``, defined here.

Each class carries the HTTP status it maps to, a stable machine-readable
``code`` and a translatable default message (as DRF's ``APIException`` does with
``status_code``, ``default_code`` and ``default_detail``), so the REST layer maps
them in one place, the admin shows them alike, and Python callers can branch on
the class or the code.

Invariant: one module, one hierarchy. Every layer raises from here (it sits at
the ground and imports nothing of the package), so an error never needs an import
of the layer that defines it, and ``rest/errors.py`` can map every one of them
without knowing where it was raised. Internal control-flow exceptions that never
leave their module (a stale cache entry, a busy checkpoint) stay private there.
"""

from __future__ import annotations

import re
from typing import Any

from django.core import exceptions as django_exceptions
from django.utils.encoding import force_str
from django.utils.translation import gettext_lazy as _


class FluviusError(Exception):
    """Base class of every django-fluvius error."""

    status_code: int = 500
    default_code: str = "fluvius_error"
    default_message: Any = _("A django-fluvius error occurred.")

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: Any):
        # Rendered now, in the active language: a lazy string must not reach the
        # command log or a JSON body as a proxy object.
        self.message = force_str(message or self.default_message)
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
    default_message = _("The command payload is invalid.")

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
    default_message = _("The query is invalid.")

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
    default_message = _("You do not have permission to perform this action.")


class TenantRequired(FluviusError):
    """Tenancy is on, and the context names no tenant where one is needed.

    Raised when a user's request resolves to no tenant (the user belongs to none,
    or to several and said which in no trusted way), and when a create command
    runs in a context without a tenant. See docs/security.md.
    """

    status_code = 400
    default_code = "tenant_required"
    default_message = _("This request needs a tenant, and none was resolved for it.")


class UnknownCommand(FluviusError):
    """No action of the domain answers to this command key."""

    status_code = 404
    default_code = "unknown_command"
    default_message = _("Unknown command.")


class UnknownResource(FluviusError):
    """No domain declares a resource of this name."""

    status_code = 404
    default_code = "unknown_resource"
    default_message = _("Unknown resource.")


class UnknownDomain(FluviusError):
    """No registered domain has this namespace."""

    status_code = 404
    default_code = "unknown_domain"
    default_message = _("Unknown domain.")


class AggregateNotFound(FluviusError):
    """There is no aggregate (or projection row) with this id."""

    status_code = 404
    default_code = "not_found"
    default_message = _("Aggregate not found.")


class ConcurrencyConflict(FluviusError):
    """The expected version is stale, or a concurrent writer won the race."""

    status_code = 409
    default_code = "concurrency_conflict"
    default_message = _("The aggregate was changed by someone else.")

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
    """A business rule refused the command. Nothing is stored.

    ``code`` names the rule, for clients to branch on: give it
    (``DomainError("Invalid email", code="invalid_email")``). Raised by an action
    without one, it is derived from the command and the message:
    ``create-user.invalid-email`` -- stable only as long as the message is, so give
    ``code=`` whenever the message has changing parts.
    """

    status_code = 422
    default_code = "domain_error"
    default_message = _("The command was refused by a business rule.")

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: Any):
        self.code_given = code is not None
        super().__init__(message, code=code, **details)

    def name_rule(self, command: str) -> None:
        """Derive the rule code from the command and the message, unless one was given."""
        if self.code_given:
            return
        slug = re.sub(r"[^a-z0-9]+", "-", str(self.message).lower()).strip("-")[:60].rstrip("-")
        self.code = f"{command}.{slug or 'refused'}"


class ConfigurationError(FluviusError):
    """A domain, aggregate or setting is declared wrongly."""

    status_code = 500
    default_code = "configuration_error"
    default_message = _("django-fluvius is configured wrongly.")


class EventDecodeError(FluviusError):
    """A stored event cannot be decoded into the current shape."""

    status_code = 500
    default_code = "event_decode_error"
    default_message = _("A stored event could not be decoded.")


# -- the domain and its commands ---------------------------------------------------------------


class WrongResource(FluviusError):
    """The command does not apply to this aggregate's resource type."""

    status_code = 400
    default_code = "wrong_resource"
    default_message = _("This command does not apply to this kind of aggregate.")


# -- delivery and operations -------------------------------------------------------------------


class UnknownProjection(FluviusError):
    """No async projection (or nothing to rebuild, in the admin) has this name."""

    status_code = 404
    default_code = "unknown_projection"
    default_message = _("No async projection has this name.")


class UnknownSubscription(FluviusError):
    """No event handler or async projection is subscribed under this name (in code or in the database)."""

    status_code = 404
    default_code = "unknown_subscription"
    default_message = _("No subscription has this name.")


class RebuildError(FluviusError):
    """A rebuild target is unknown, or the rebuild could not finish."""

    status_code = 400
    default_code = "rebuild_error"
    default_message = _("The rebuild could not run.")


class InvalidVersion(FluviusError):
    """A version in the address is not a whole number."""

    status_code = 400
    default_code = "invalid_version"
    default_message = _("The version must be a whole number.")


# -- the REST face -----------------------------------------------------------------------------


class InvalidRequest(FluviusError):
    """A header or query parameter is malformed (``errors`` names which)."""

    status_code = 400
    default_code = "invalid_request"
    default_message = _("The request is malformed.")

    def __init__(self, message: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 **kw: Any):
        self.errors = errors or {}
        super().__init__(message, **kw)


class InvalidPosition(InvalidRequest):
    """A position sent by a client (``Fluvius-Min-Position``, ``?min_position=``, ``?after=``,
    ``Last-Event-ID``) is not an event position."""

    status_code = 400
    default_code = "invalid_position"
    default_message = _("An event position must be an integer >= 0.")


class PositionNotReached(FluviusError):
    """A read asked for a minimum position its read models had not processed within
    ``FLUVIUS['MIN_POSITION_TIMEOUT']`` (HTTP: 503 with ``Retry-After``)."""

    status_code = 503
    default_code = "position_not_reached"
    default_message = _("The read models have not caught up with the position asked for yet.")


class StreamsBusy(FluviusError):
    """Too many event streams of one process were opening at once for longer than
    ``STREAM_OPENING_TIMEOUT`` (HTTP: 503 with ``Retry-After``)."""

    status_code = 503
    default_code = "streams_busy"
    default_message = _("Too many event streams are opening at once; try again shortly.")


class PreconditionFailed(ConcurrencyConflict):
    """``If-Match`` named a version the aggregate is no longer (or not yet) at."""

    status_code = 412
    default_code = "precondition_failed"
    default_message = _("The aggregate is not at the version If-Match names.")


class IdempotencyKeyReused(FluviusError):
    """An ``Idempotency-Key`` already used for a different request."""

    status_code = 422
    default_code = "idempotency_key_reused"
    default_message = _("This Idempotency-Key was already used for a different request.")


class RouteNotFound(FluviusError):
    """No endpoint answers to this path."""

    status_code = 404
    default_code = "not_found"
    default_message = _("Not found.")


class RequestTooLarge(FluviusError):
    """The body is larger than ``settings.DATA_UPLOAD_MAX_MEMORY_SIZE``."""

    status_code = 413
    default_code = "request_too_large"
    default_message = _("The request body is too large.")


# -- health (health.py) -----------------------------------------------------------------------


class UnknownHealthCheck(FluviusError):
    """``?check=`` names a readiness check that does not exist; ``errors`` says which exist."""

    status_code = 400
    default_code = "unknown_check"
    default_message = _("Unknown readiness check.")

    def __init__(self, unknown: list[str], known: list[str]):
        self.errors = {"check": [f"Use {', '.join(known)}."]}
        super().__init__(f"Unknown checks: {', '.join(unknown)}.")


class ProbeMethodNotAllowed(FluviusError):
    """A health probe was asked with another method than GET or HEAD."""

    status_code = 405
    default_code = "method_not_allowed"
    default_message = _("Health probes answer GET and HEAD only.")


# -- media -------------------------------------------------------------------------------------


class MediaError(FluviusError):
    """Base of the media errors: an upload or a media reference was refused."""

    status_code = 400
    default_code = "invalid_media"
    default_message = _("The file was refused.")

    def __init__(self, message: str | None = None, *, errors: dict[str, list[str]] | None = None,
                 **kw: Any):
        self.errors = errors or {}
        super().__init__(message, **kw)


class EmptyMedia(MediaError):
    """The uploaded file has no bytes."""

    status_code = 400
    default_code = "empty_file"
    default_message = _("The file is empty.")


class MediaTooLarge(MediaError):
    """The file is larger than ``FLUVIUS['MEDIA_MAX_SIZE']``."""

    status_code = 413
    default_code = "file_too_large"
    default_message = _("The file is larger than this server accepts.")


class UnsupportedMediaType(MediaError):
    """The file's type is not allowed here."""

    status_code = 415
    default_code = "unsupported_media_type"
    default_message = _("This type of file is not accepted.")


class MediaTypeMismatch(UnsupportedMediaType):
    """The content is not what the declared type says (judged from its bytes)."""

    default_code = "media_type_mismatch"
    default_message = _("The file's content does not match its declared type.")


class InvalidMediaName(MediaError):
    """A file name or storage key that is empty, or would leave the storage's root."""

    default_code = "invalid_filename"
    default_message = _("The file name is not acceptable.")


class InvalidUpload(MediaError):
    """The upload request is malformed (no file, two files, unknown fields)."""

    default_code = "invalid_upload"
    default_message = _("The upload is malformed.")


class MediaNotFound(MediaError):
    """No media entry with this id (for this aggregate)."""

    status_code = 404
    default_code = "media_not_found"
    default_message = _("No such media.")


# -- personal data (privacy/) ------------------------------------------------------------------


class PrivacyError(FluviusError):
    """Base of the errors about personal data and its keys."""

    default_code = "privacy_error"
    default_message = _("Personal data could not be handled.")


class KeyEncryptionKeyError(PrivacyError):
    """No key-encryption key is configured, or it does not unwrap the stored subject keys."""

    status_code = 500
    default_code = "key_encryption_key"
    default_message = _("Personal data is declared but FLUVIUS['PRIVACY_KEK'] (or PRIVACY_KMS) is not "
                        "configured: nothing personal can be stored.")


class PersonalDataTampered(PrivacyError):
    """A sealed personal value failed authentication: it was altered, or copied where it does not belong."""

    status_code = 500
    default_code = "personal_data_tampered"
    default_message = _("A sealed personal value does not authenticate.")


class UnknownSubject(PrivacyError):
    """No personal data is held for this data subject (nothing to forget or export)."""

    status_code = 404
    default_code = "unknown_subject"
    default_message = _("No personal data is held for this subject.")
