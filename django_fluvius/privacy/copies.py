"""The framework's copies of personal data, each sealed the same way.

One function per kind of copy, so every writer calls one line: a command's
event payloads, log payload and cached state (``CommandSeal``), a rejected
command's log payload, a snapshot's state, a stored idempotent response, a dead
letter's texts. Readers open with ``open_mapping``/``open_text`` (tokens name
their subject; no declaration is needed to read).

Invariant: when nothing is declared for (namespace, resource) every function
returns its input unchanged after one dict lookup.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from django_fluvius.exceptions import PersonalDataTampered
from django_fluvius.models import SubjectAggregate
from django_fluvius.privacy import keys
from django_fluvius.privacy.cipher import (
    Keyring,
    is_token,
    open_mapping,
    open_text,
    seal_mapping,
    seal_text,
    subject_of_token,
)
from django_fluvius.privacy.declarations import PersonalData, declarations

# (using, subject, aggregate id) already recorded in SubjectAggregate by this process.
_recorded: set[tuple[str, str, uuid.UUID]] = set()


class CommandSeal:
    """Seals the copies one command writes, under one subject's key looked up once."""

    def __init__(self, spec: PersonalData, aggregate: Any, namespace: str, using: str, batch: Any, *,
                 fresh: bool):
        self.spec = spec
        self.using = using
        self.keyring = Keyring(using, batch)
        self.subject = spec.subject_of(aggregate.id, aggregate.state)
        # A brand-new aggregate that is its own subject: its key goes out with the batch.
        self.fresh = fresh and self.subject == str(aggregate.id)
        if self.subject != str(aggregate.id):
            _record(using, self.subject, namespace, aggregate.resource, aggregate.id)
        if not self.fresh and self.keyring.key(self.subject) is keys.FORGOTTEN:
            # Erasure lasts: what a command says of a forgotten subject is not kept, in the
            # state (so the projection and the result agree) nor in any copy.
            aggregate.state = {**aggregate.state, **dict.fromkeys(spec.fields)}
        # Tokens the loaded state came with (the sealed aggregate cache): an unchanged value
        # is not encrypted again.
        self.memo: dict[tuple[str, str], str] = {
            name: token for name, token in (getattr(aggregate, "personal_tokens", None) or {}).items()
            if subject_of_token(token) == self.subject}

    def mapping(self, data: Mapping[str, Any]) -> dict[str, Any]:
        sealed = seal_mapping(self.keyring, self.spec, self.subject, data, fresh=self.fresh, memo=self.memo)
        self.fresh = False  # made now (or found): later copies reuse the keyring's key
        return sealed


def command_seal(namespace: str, aggregate: Any, using: str, batch: Any = None, *,
                 fresh: bool = False) -> CommandSeal | None:
    """The seal of a command on ``aggregate`` (state already folded), or None: nothing declared."""
    spec = declarations.get(namespace, aggregate.resource)
    if spec is None:
        return None
    return CommandSeal(spec, aggregate, namespace, using, batch, fresh=fresh)


def seal_rejected(namespace: str, resource: str | None, aggregate_id: Any, payload: Mapping[str, Any],
                  using: str) -> Mapping[str, Any]:
    """A rejected command's log payload: personal fields sealed if the subject has a key, else None."""
    spec = declarations.get(namespace, resource or "")
    if spec is None:
        return payload
    if aggregate_id is None and spec.subject is None:
        return {k: (None if k in spec.fields else v) for k, v in payload.items()}
    subject = spec.subject_of(aggregate_id, payload)
    return seal_mapping(Keyring(using), spec, subject, payload, create=False)


def seal_state(namespace: str, aggregate: Any, state: Mapping[str, Any], using: str) -> Mapping[str, Any]:
    """A snapshot's state (or any copy of folded state) with its personal fields sealed."""
    spec = declarations.get(namespace, aggregate.resource)
    if spec is None:
        return state
    subject = spec.subject_of(aggregate.id, state)
    return seal_mapping(Keyring(using), spec, subject, state)


def seal_result(namespace: str, body: Any, using: str) -> Any:
    """A command's response body (as an Idempotency-Key stores it): state and event payloads sealed."""
    if not isinstance(body, dict) or not isinstance(body.get("state"), dict):
        return body
    spec = declarations.get(namespace, str(body.get("resource") or ""))
    if spec is None:
        return body
    keyring = Keyring(using)
    subject = spec.subject_of(body.get("aggregate_id"), body["state"])
    sealed = dict(body)
    sealed["state"] = seal_mapping(keyring, spec, subject, body["state"])
    if isinstance(body.get("events"), list):
        sealed["events"] = [
            {**event, "payload": seal_mapping(keyring, spec, subject, event["payload"])}
            if isinstance(event, dict) and isinstance(event.get("payload"), dict) else event
            for event in body["events"]
        ]
    return sealed


def open_result(body: Any, using: str) -> Any:
    """A stored response body opened (forgotten fields as None)."""
    if not isinstance(body, dict) or not isinstance(body.get("state"), dict):
        return body
    keyring = Keyring(using)
    opened = dict(body)
    opened["state"] = open_mapping(keyring, body["state"])[0]
    if isinstance(body.get("events"), list):
        opened["events"] = [
            {**event, "payload": open_mapping(keyring, event["payload"])[0]}
            if isinstance(event, dict) and isinstance(event.get("payload"), dict) else event
            for event in body["events"]
        ]
    return opened


def seal_texts(event: Any, using: str, *texts: str) -> list[str]:
    """Free texts about an event (a handler's error, its traceback) sealed under the event's subject.

    The subject is the one the event's opened tokens named (``EventStore.decode`` keeps it as
    ``event.personal_subject``): texts about an event without personal data stay as they are.
    """
    subject = getattr(event, "personal_subject", None)
    if subject is None:
        return list(texts)
    keyring = Keyring(using)
    return [seal_text(keyring, subject, text) for text in texts]


def _record(using: str, subject: str, namespace: str, resource: str, aggregate_id: uuid.UUID) -> None:
    """Note once that the aggregate holds data of another subject (what forget and export visit)."""
    marker = (using, subject, aggregate_id)
    if marker in _recorded:
        return
    try:
        with transaction.atomic(using=using):
            SubjectAggregate.objects.using(using).get_or_create(
                subject=subject, aggregate_id=aggregate_id,
                defaults={"namespace": namespace, "resource": resource})
    except IntegrityError:
        pass  # a concurrent command recorded it
    transaction.on_commit(lambda: _recorded.add(marker), using=using)


def forget_recorded(subject: str) -> None:
    for marker in [m for m in _recorded if m[1] == subject]:
        _recorded.discard(marker)




# -- for display (the admin) ---------------------------------------------------------------------

ERASED_TEXT = "[erased: its subject was forgotten]"
UNREADABLE_TEXT = "[sealed personal data that does not authenticate]"


def readable(data: Any, using: str) -> Any:
    """A stored mapping with its sealed values opened, for display: never raises on a bad token."""
    if not isinstance(data, Mapping):
        return data
    keyring = Keyring(using)
    shown = dict(data)
    for name, value in data.items():
        if is_token(value):
            try:
                shown[name] = keyring.open_value(value, name)
            except PersonalDataTampered:
                shown[name] = UNREADABLE_TEXT
    return shown


def readable_text(text: str, using: str) -> str:
    """A stored free text (a dead letter's error, traceback) opened for display."""
    if not is_token(text):
        return text
    try:
        return open_text(Keyring(using), text, erased=ERASED_TEXT)
    except PersonalDataTampered:
        return UNREADABLE_TEXT
