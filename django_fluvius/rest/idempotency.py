"""``Idempotency-Key``: a command sent again with the same key runs once.

The first successful response is stored (``IdempotencyRecord``, per user,
tenant and key: the same key sent for another tenant is another request) in the command's own transaction, together with a fingerprint of what was
asked (endpoint, aggregate, ``If-Match``, body). A retry with the same key and
the same request gets that response back and runs nothing; the same key with a
different request is refused (422). A command that failed stored nothing, so
its retry simply runs again.

Two requests racing with one key: both may run the command, but only one can
insert the record (unique per user and key); the loser's transaction, events
included, is rolled back and it answers with the winner's response.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import FluviusError, IdempotencyKeyReused, InvalidRequest
from django_fluvius.models import IdempotencyRecord
from django_fluvius.privacy.copies import open_result, seal_result
from django_fluvius.rest.errors import error_body

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAY_HEADER = "Idempotent-Replayed"
_META = "HTTP_IDEMPOTENCY_KEY"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
# Response headers worth replaying (the correlation id is the retry's own).
REPLAYED_HEADERS = ("ETag", "Location", "Fluvius-Position")


def idempotency_key(request: Any) -> str | None:
    """The request's ``Idempotency-Key``, None without one; 400 when it is malformed."""
    value = request.META.get(_META)
    if value is None:
        return None
    if not _VALID_KEY.match(value):
        raise InvalidRequest(
            "The Idempotency-Key header must be 1 to 255 printable ASCII characters without spaces.",
            errors={IDEMPOTENCY_HEADER: [f"{value[:50]!r} is not a usable key."]},
        )
    return value


def fingerprint(*parts: Any) -> str:
    """SHA-256 of the parts as canonical JSON: equal requests, equal prints."""
    text = json.dumps(parts, cls=JSONEncoder, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def as_stored_json(data: Any) -> Any:
    """What ``data`` reads back as once stored, so a replay renders the same bytes."""
    return json.loads(json.dumps(data, cls=JSONEncoder))


class IdempotencyStore:
    """Reads and writes ``IdempotencyRecord`` rows on the event store's alias."""

    def __init__(self, using: str):
        self.using = using

    @property
    def records(self):
        return IdempotencyRecord.objects.using(self.using)

    def expiry(self) -> datetime.datetime | None:
        ttl = fluvius_settings.IDEMPOTENCY_TTL
        return None if ttl is None else timezone.now() - datetime.timedelta(seconds=ttl)

    def find(self, user: str, key: str, tenant: str = "") -> IdempotencyRecord | None:
        record = self.records.filter(user=user, tenant=tenant, key=key).first()
        if record is None:
            return None
        expiry = self.expiry()
        if expiry is not None and record.created < expiry:
            return None
        return record

    def save(self, *, user: str, key: str, print_: str, namespace: str, command: str,
             aggregate_id: Any, response: Response, tenant: str = "") -> None:
        # An expired record of the same key gives way (it is stale, not a duplicate).
        expiry = self.expiry()
        if expiry is not None:
            self.records.filter(user=user, tenant=tenant, key=key, created__lt=expiry).delete()
        headers = {name: response[name] for name in REPLAYED_HEADERS if response.has_header(name)}
        IdempotencyRecord(
            user=user, tenant=tenant, key=key, fingerprint=print_, namespace=namespace, command=command,
            aggregate_id=aggregate_id, status_code=response.status_code,
            # Its state and event payloads sealed like every copy of personal data (privacy/copies.py).
            response=json.dumps(seal_result(namespace, response.data, self.using), cls=JSONEncoder),
            headers=headers,
        ).save(using=self.using, force_insert=True)

    def purge_expired(self) -> int:
        """Delete records older than ``FLUVIUS['IDEMPOTENCY_TTL']``; return how many."""
        expiry = self.expiry()
        if expiry is None:
            return 0
        return self.records.filter(created__lt=expiry).delete()[0]


def replay(record: IdempotencyRecord, print_: str) -> Response:
    if record.fingerprint != print_:
        raise IdempotencyKeyReused(
            f"The Idempotency-Key {record.key!r} was already used for a different request "
            f"({record.namespace}:{record.command}); send a new key for a new request."
        )
    body = open_result(json.loads(record.response), record._state.db or fluvius_settings.DATABASE)
    response = Response(body, status=record.status_code, headers=dict(record.headers))
    response[REPLAY_HEADER] = "true"
    return response


def run_once(*, store: IdempotencyStore, user: str, key: str, print_: str, namespace: str,
             command: str, aggregate_id: Any, run: Callable[[], Response], tenant: str = "") -> Response:
    """Return the stored response for (user, tenant, key), or run ``run`` and store what it answered."""
    record = store.find(user, key, tenant)
    if record is not None:
        return replay(record, print_)
    error: FluviusError | DatabaseError | None = None
    try:
        with transaction.atomic(using=store.using):
            try:
                response = run()
            except FluviusError as exc:
                # Refused: the bus rolled its own work back and logged the rejection;
                # let that log row commit, store no record, answer after the block.
                error = exc
            except DatabaseError as exc:
                # A value the database refused (a 400, rest/errors.py): the same, the
                # failure's log row commits. Any other database failure rolls back whole.
                if error_body(exc) is None:
                    raise
                error = exc
            else:
                response.data = as_stored_json(response.data)
                store.save(user=user, tenant=tenant, key=key, print_=print_, namespace=namespace, command=command,
                           aggregate_id=aggregate_id, response=response)
    except IntegrityError:
        # Another request with this key committed first: ours is rolled back whole.
        record = store.find(user, key, tenant)
        if record is None:
            raise
        return replay(record, print_)
    if error is not None:
        # A concurrent twin may have won the race that made this one fail (409).
        record = store.find(user, key, tenant)
        if record is not None:
            return replay(record, print_)
        raise error
    return response
