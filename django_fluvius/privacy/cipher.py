"""Sealing personal values into tokens and opening them again.

A sealed value is a JSON string ``"fvpd1:<subject>:<base64url(nonce | AES-GCM ciphertext)>"``:
the value's JSON, encrypted with the subject's key, the subject and the field's
name as associated data (a token moved to another field or subject fails to
open). It stands where the value stood, so every JSON column keeps its shape and
a token names its own subject: reading needs no declaration, only the key.

Opening gives the value back; ``None`` once the subject was forgotten (its key
destroyed); ``PersonalDataTampered`` when the token does not authenticate —
never a guess.
"""

from __future__ import annotations

import binascii
import json
import os
import uuid
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from django.core.serializers.json import DjangoJSONEncoder

from django_fluvius.exceptions import PersonalDataTampered
from django_fluvius.privacy import keys
from django_fluvius.privacy.declarations import PersonalData

TOKEN_PREFIX = "fvpd1:"
TEXT_FIELD = "#text"  # the associated data of a sealed free text (a dead letter's traceback)
_PREFIX_LEN = len(TOKEN_PREFIX)


def is_token(value: Any) -> bool:
    return type(value) is str and value.startswith(TOKEN_PREFIX)


@lru_cache(maxsize=4096)
def _aad(subject: str, field: str) -> bytes:
    return f"{subject}\x1f{field}".encode()


class Keyring:
    """The subject keys one unit of work (a command, a read) uses, each looked up once.

    ``batch``: the command's write batch; a key made for a brand-new aggregate's own
    id is written with it (``keys.create``).
    """

    def __init__(self, using: str, batch: Any = None):
        self.using = using
        self.batch = batch
        self._keys: dict[str, Any] = {}

    def key(self, subject: str, *, create: bool = False, fresh: bool = False) -> Any:
        """The subject's AESGCM; ``keys.FORGOTTEN``; or None (no key, and not asked to make one)."""
        found = self._keys.get(subject)
        if found is None:
            found = None if fresh else keys.load(subject, self.using)
            if found is None and create:
                found = keys.create(subject, self.using, self.batch if fresh else None)
            if found is not None:
                self._keys[subject] = found
        return found

    # -- one value -------------------------------------------------------------------------

    def seal_value(self, key: Any, subject: str, field: str, value: Any) -> str:
        nonce = os.urandom(12)
        blob = nonce + key.encrypt(nonce, _encode(value), _aad(subject, field))
        return f"{TOKEN_PREFIX}{subject}:{binascii.b2a_base64(blob, newline=False).decode()}"

    def open_value(self, token: str, field: str) -> Any:
        subject, sep, data = token[_PREFIX_LEN:].rpartition(":")
        if not sep:
            raise PersonalDataTampered(f"The sealed value of {field!r} is malformed.")
        key = self._keys.get(subject) or self.key(subject)
        if key is None or key is keys.FORGOTTEN:
            return None  # forgotten (or its key is gone): erased
        try:
            blob = binascii.a2b_base64(data)
            return _decode(key.decrypt(blob[:12], blob[12:], _aad(subject, field)))
        except (InvalidTag, binascii.Error, ValueError, IndexError):
            raise PersonalDataTampered(
                f"The sealed value of {field!r} (subject {subject}) does not authenticate: "
                "it was altered or moved.", field=field, subject=subject) from None


# Plaintext framing: most personal values are strings, kept as UTF-8 behind "s" (no JSON
# parse on the read path: loading a long stream opens one value per event); others as JSON.
def _encode(value: Any) -> bytes:
    if type(value) is str:
        return b"s" + value.encode()
    return b"j" + json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


def _decode(plain: bytes) -> Any:
    tag = plain[0]
    if tag == 0x73:  # "s"
        return plain[1:].decode()
    if tag == 0x6A:  # "j"
        return json.loads(plain[1:])
    raise ValueError("unknown framing")


def subject_of_token(token: str) -> str:
    return token[_PREFIX_LEN:].rpartition(":")[0]


# -- mappings (payloads, states) ---------------------------------------------------------------


def seal_mapping(keyring: Keyring, spec: PersonalData, subject: str, data: Mapping[str, Any], *,
                 create: bool = True, fresh: bool = False,
                 memo: dict[tuple[str, str], str] | None = None) -> dict[str, Any]:
    """A copy of ``data`` with its personal fields sealed under the subject's key.

    Fields of a forgotten subject are stored as None (erasure lasts); without a key
    and ``create=False`` (a rejected command's log row) they are left out as None too.
    ``memo``: (field, text) -> a token already made for it under this subject's key, so
    the copies of one command (event, log, cached state) share one encryption per value.
    """
    sealed = dict(data)
    key = None
    for field in spec.fields:
        value = sealed.get(field)
        if value is None or is_token(value):
            continue
        if memo is not None and type(value) is str:
            token = memo.get((field, value))
            if token is not None:
                sealed[field] = token
                continue
        if key is None:
            key = keyring.key(subject, create=create, fresh=fresh) or keys.FORGOTTEN
        if key is keys.FORGOTTEN:
            sealed[field] = None
            continue
        sealed[field] = token = keyring.seal_value(key, subject, field, value)
        if memo is not None and type(value) is str:
            memo[(field, value)] = token
    return sealed


def open_payload(data: dict[str, Any], using: str) -> tuple[dict[str, Any], str | None]:
    """``open_mapping`` for the store's read path (one call per event read): no keyring built,
    the keys straight from the process's cache (``keys.load``)."""
    opened = dict(data)
    subject = None
    for field, value in data.items():
        if type(value) is str and value.startswith(TOKEN_PREFIX):
            owner, sep, blob64 = value[_PREFIX_LEN:].rpartition(":")
            key = keys.load(owner, using) if sep else None
            if key is None or key is keys.FORGOTTEN:
                if not sep:
                    raise PersonalDataTampered(f"The sealed value of {field!r} is malformed.")
                opened[field] = None
            else:
                try:
                    blob = binascii.a2b_base64(blob64)
                    opened[field] = _decode(key.decrypt(blob[:12], blob[12:], _aad(owner, field)))
                except (InvalidTag, binascii.Error, ValueError, IndexError):
                    raise PersonalDataTampered(
                        f"The sealed value of {field!r} (subject {owner}) does not authenticate: "
                        "it was altered or moved.", field=field, subject=owner) from None
            subject = owner
    return opened, subject


def open_mapping(keyring: Keyring, data: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """A copy of ``data`` with every sealed value opened (None if forgotten), and a subject it named."""
    opened: dict[str, Any] | None = None
    subject = None
    for field, value in data.items():
        if type(value) is str and value.startswith(TOKEN_PREFIX):
            if opened is None:
                opened = dict(data)
            opened[field] = keyring.open_value(value, field)
            if subject is None:
                subject = subject_of_token(value)
    return (opened if opened is not None else dict(data)), subject


def has_tokens(data: Any) -> bool:
    return isinstance(data, Mapping) and any(is_token(v) for v in data.values())


# -- free text (dead letters, errors) ----------------------------------------------------------


def seal_text(keyring: Keyring, subject: str | None, text: str) -> str:
    """Free text that may quote personal values (a traceback), sealed whole under the subject's key."""
    if not text or subject is None:
        return text
    key = keyring.key(subject)
    if key is None:
        return text
    if key is keys.FORGOTTEN:
        return ""
    return keyring.seal_value(key, subject, TEXT_FIELD, text)


def open_text(keyring: Keyring, text: str, erased: str = "") -> str:
    """Sealed free text opened; ``erased`` if its subject was forgotten; other text as it is."""
    if not is_token(text):
        return text
    value = keyring.open_value(text, TEXT_FIELD)
    return erased if value is None else str(value)


def subject_id(value: Any) -> str:
    """A subject id as stored: UUIDs in their canonical text form."""
    if isinstance(value, uuid.UUID):
        return str(value)
    text = str(value).strip()
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return text
