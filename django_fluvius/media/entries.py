"""Files bound to aggregates: ``MediaEntry`` rows and media references in payloads.

``store_media()`` turns bytes into a ``MediaEntry`` of an aggregate: it refuses
empty files, content that contradicts its declared type, types not allowed and
over-size files, and returns the existing entry for bytes already attached to
the aggregate. Commands and events carry media by reference: annotate an
action's parameter with ``MediaRef`` and the payload holds the entry's metadata,
never the bytes.

Invariant: an entry row exists only for bytes that reached the storage, with the
SHA-256 computed while they streamed; a refused upload leaves neither a row nor
a stored file.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import (
    AggregateNotFound,
    DomainError,
    EmptyMedia,
    MediaNotFound,
    MediaTooLarge,
    MediaTypeMismatch,
    UnsupportedMediaType,
)
from django_fluvius.media import filetypes
from django_fluvius.media.storage import (
    MediaStorage,
    StagedMedia,
    clean_filename,
    iter_chunks,
    media_storage,
)
from django_fluvius.models import Event, MediaEntry
from django_fluvius.read.replicas import write_alias
from django_fluvius.write.payload import FIELD_FOR_TYPE, StrictUUIDField

_UNSET: Any = object()
# type/subtype as RFC 6838 allows (no parameters).
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,62}$")


def check_content_type(declared: str | None, head: bytes, filename: str,
                       allowed: Any = _UNSET) -> str:
    """The content type to record, verified against the bytes and the allowed list."""
    allowed = fluvius_settings.MEDIA_ALLOWED_TYPES if allowed is _UNSET else allowed
    wanted = filetypes.normalize(declared)
    if wanted and not _CONTENT_TYPE.match(wanted):
        raise UnsupportedMediaType(f"{str(declared)[:100]!r} is not a content type.",
                                   errors={"content_type": ["Not a type/subtype."]})
    try:
        content_type = filetypes.verify_content_type(wanted, head, filename)
    except filetypes.ContentTypeError as exc:
        raise MediaTypeMismatch(str(exc), declared=exc.declared, detected=exc.sniffed) from None
    if not filetypes.type_allowed(content_type, allowed):
        raise UnsupportedMediaType(
            f"Files of type {content_type} are not accepted (accepted: {', '.join(allowed) or 'none'}).",
            content_type=content_type, allowed=list(allowed))
    return content_type


def aggregate_resource(namespace: str, aggregate_id: Any) -> str:
    """The resource of an aggregate of ``namespace`` (``AggregateNotFound`` if it has no events)."""
    resource = (Event.objects.using(write_alias())
                .filter(namespace=namespace, aggregate_id=aggregate_id)
                .order_by("version").values_list("resource", flat=True).first())
    if resource is None:
        raise AggregateNotFound(f"No {namespace} aggregate with id {aggregate_id}.")
    return resource


def find_duplicate(namespace: str, aggregate_id: Any, sha256: str) -> MediaEntry | None:
    return (MediaEntry.objects.using(write_alias())
            .filter(namespace=namespace, aggregate_id=aggregate_id, sha256=sha256).first())


def store_media(content: Any, *, namespace: str, aggregate_id: Any, filename: str,
                content_type: str | None = None, user: Any = "", storage: MediaStorage | None = None,
                max_size: Any = _UNSET, allowed_types: Any = _UNSET) -> tuple[MediaEntry, bool]:
    """Store bytes for an aggregate and record them; return ``(entry, created)``.

    ``content`` is a stream, bytes, or a ``StagedMedia`` the caller filled (the
    REST upload does). Refused, with nothing stored: an aggregate that does not
    exist, an empty file, one over ``max_size`` (default ``MEDIA_MAX_SIZE``), a
    content contradicting ``content_type``, a type not in ``allowed_types``
    (default ``MEDIA_ALLOWED_TYPES``). Bytes already attached to the aggregate
    are not stored again: the existing entry comes back with ``created=False``.
    """
    strategy = storage or media_storage()
    limit = fluvius_settings.MEDIA_MAX_SIZE if max_size is _UNSET else max_size
    staged = content if isinstance(content, StagedMedia) else None
    try:
        resource = aggregate_resource(namespace, aggregate_id)
        name = clean_filename(filename)
        if staged is None:
            staged = strategy.stage(max_size=limit)
            for chunk in iter_chunks(content):
                staged.write(chunk)
        elif limit is not None and staged.size > limit:
            raise MediaTooLarge(f"The file is larger than {limit} bytes, the most accepted.", max_size=limit)
        staged.close()
        if staged.size == 0:
            raise EmptyMedia(errors={"file": ["The file is empty."]})
        checked_type = check_content_type(content_type, staged.head, name, allowed_types)
        existing = find_duplicate(namespace, aggregate_id, staged.sha256)
        if existing is not None:
            return existing, False
        stored = strategy.commit(staged, strategy.make_key(name, namespace, aggregate_id),
                                 content_type=checked_type)
        try:
            with transaction.atomic(using=write_alias()):
                entry = MediaEntry.objects.using(write_alias()).create(
                    namespace=namespace, resource=resource, aggregate_id=aggregate_id, filename=name,
                    content_type=checked_type, size=stored.size, sha256=stored.sha256,
                    storage=strategy.name, key=stored.key, uploaded_by=_user_id(user),
                )
        except IntegrityError:
            # A concurrent upload of the same bytes won: keep its entry, drop our copy.
            strategy.delete(stored.key)
            existing = find_duplicate(namespace, aggregate_id, stored.sha256)
            if existing is None:
                raise
            return existing, False
        except BaseException:
            strategy.delete(stored.key)
            raise
        return entry, True
    finally:
        if staged is not None:
            staged.discard()


def _user_id(user: Any) -> str:
    if user is None or user == "":
        return ""
    if isinstance(user, str):
        return user[:150]
    if not getattr(user, "is_authenticated", True):
        return ""
    pk = getattr(user, "pk", None)
    return str(pk if pk is not None else user)[:150]


def get_entry(media_id: Any, *, namespace: str | None = None, aggregate_id: Any = None) -> MediaEntry:
    """The entry with this id (and, when given, of this aggregate); ``MediaNotFound`` otherwise."""
    try:
        pk = media_id if isinstance(media_id, uuid.UUID) else uuid.UUID(str(media_id))
    except (TypeError, ValueError, AttributeError):
        raise MediaNotFound(f"{str(media_id)[:50]!r} is not a media id (a UUID).", code="invalid_media_id") from None
    entries = MediaEntry.objects.using(write_alias()).filter(pk=pk)
    if namespace is not None:
        entries = entries.filter(namespace=namespace)
    if aggregate_id is not None:
        entries = entries.filter(aggregate_id=aggregate_id)
    entry = entries.first()
    if entry is None:
        raise MediaNotFound(f"No media with id {pk}" + (f" on {aggregate_id}." if aggregate_id else "."))
    return entry


def open_entry(entry: MediaEntry) -> Any:
    return media_storage(entry.storage).open(entry.key)


def delete_entry(entry: MediaEntry) -> None:
    """Remove an entry and its bytes (events that carried its metadata keep it)."""
    media_storage(entry.storage).delete(entry.key)
    entry.delete(using=write_alias())


# -- media in commands and events --------------------------------------------


class MediaRef(dict):
    """Type hint of an action parameter that holds a media id.

    The client sends the id of a ``MediaEntry``; the action (and so the event)
    receives the entry's metadata (``MediaEntry.as_ref()``: id, filename,
    content_type, size, sha256, namespace, aggregate_id), never its bytes::

        @action(evt_key="order-document-attached", resources=["order"])
        def attach_document(self, document: MediaRef):
            ensure_attached(document, self)
            return {"document": document}
    """


class MediaField(StrictUUIDField):
    """A payload field taking a media id (or a ref holding one); its value is the entry's ref."""

    default_error_messages = {
        "not_found": "No media with id {value}.",
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:  # type: ignore[override]  # the ref, not the UUID
        if isinstance(data, Mapping) and "id" in data:
            data = data["id"]
        pk = super().to_internal_value(data)
        entry = MediaEntry.objects.using(write_alias()).filter(pk=pk).first()
        if entry is None:
            self.fail("not_found", value=pk)
        return entry.as_ref()

    def to_representation(self, value: Any) -> Any:
        return dict(value) if isinstance(value, Mapping) else str(value)


FIELD_FOR_TYPE[MediaRef] = MediaField


def ensure_attached(ref: Mapping[str, Any], aggregate: Any) -> Mapping[str, Any]:
    """Refuse (``DomainError``) media uploaded for another aggregate than ``aggregate``."""
    if str(ref.get("aggregate_id")) != str(aggregate.id):
        raise DomainError(f"Media {ref.get('id')} belongs to another aggregate.", code="foreign_media")
    return ref
