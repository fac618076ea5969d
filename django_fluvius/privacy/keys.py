"""Subject keys: one random AES-256 key per data subject, stored wrapped by a key-encryption key.

The ``SubjectKey`` table holds each key encrypted (AES-GCM, the subject's id as
associated data) by the key-encryption key (KEK) of ``FLUVIUS['PRIVACY_KEK']`` —
or by an external KMS through ``FLUVIUS['PRIVACY_KMS']`` — so a copy of the
database alone reads nothing. ``forget`` empties the row's key and stamps it
forgotten: the row stays as a tombstone, so a later command never makes a new key
for a subject that asked to be forgotten.

Invariant: an unwrapped key enters this process's cache only once the row that
holds it has committed (``transaction.on_commit``): a key made in a transaction
that rolls back is never used again. The cache keeps keys for
``PRIVACY_KEY_CACHE_SECONDS``: how long another process may still read a subject
forgotten elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import threading
import time
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.core.signals import setting_changed
from django.db import IntegrityError, connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import KeyEncryptionKeyError
from django_fluvius.models import SubjectKey


class KeyWrapper(Protocol):
    """What wraps subject keys: the local KEK (``LocalKeyWrapper``) or an external KMS's client."""

    key_id: str

    def wrap(self, key: bytes, subject: str) -> bytes: ...

    def unwrap(self, wrapped: bytes, key_id: str, subject: str) -> bytes: ...


def parse_kek(value: Any, setting: str = "PRIVACY_KEK") -> bytes:
    """A KEK as the setting gives it (urlsafe base64 of 32 bytes, or the bytes) -> its 32 bytes."""
    if isinstance(value, bytes) and len(value) == 32:
        return value
    if not isinstance(value, str) or not value.strip():
        raise KeyEncryptionKeyError(f"FLUVIUS[{setting!r}] must be 32 random bytes in urlsafe base64 "
                                    "(make one with: python -c \"import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())\").")
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise KeyEncryptionKeyError(f"FLUVIUS[{setting!r}] is not 32 bytes in urlsafe base64 "
                                    f"(it decodes to {len(raw)} bytes).")
    return raw


def kek_id(kek: bytes) -> str:
    """A KEK's public name: what each wrapped key records, so a wrong KEK is named, not guessed."""
    return "local:" + hashlib.sha256(b"fluvius-kek\0" + kek).hexdigest()[:16]


class LocalKeyWrapper:
    """Wraps with the first KEK of the setting; unwraps with whichever of them wrapped the key."""

    def __init__(self, keks: list[bytes]):
        if not keks:
            raise KeyEncryptionKeyError()
        self._keks = {kek_id(k): AESGCM(k) for k in keks}
        self.key_id = kek_id(keks[0])

    def wrap(self, key: bytes, subject: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._keks[self.key_id].encrypt(nonce, key, subject.encode())

    def unwrap(self, wrapped: bytes, key_id: str, subject: str) -> bytes:
        aead = self._keks.get(key_id)
        if aead is None:
            raise KeyEncryptionKeyError(
                f"The key of subject {subject!r} was wrapped by KEK {key_id}, which is not configured "
                f"(FLUVIUS['PRIVACY_KEK'] has {', '.join(self._keks)}).", code="unknown_kek")
        try:
            return aead.decrypt(wrapped[:12], wrapped[12:], subject.encode())
        except InvalidTag:
            raise KeyEncryptionKeyError(
                f"The key of subject {subject!r} does not unwrap with KEK {key_id}: "
                "the key-encryption key is wrong or the row was altered.", code="wrong_kek") from None


_wrapper: KeyWrapper | None = None


def configured() -> bool:
    """Is a KEK or a KMS configured (without checking that it is right)?"""
    return bool(fluvius_settings.PRIVACY_KMS or fluvius_settings.PRIVACY_KEK)


def wrapper() -> KeyWrapper:
    """The configured key wrapper (built once per settings); ``KeyEncryptionKeyError`` if none is."""
    global _wrapper
    if _wrapper is None:
        kms = fluvius_settings.PRIVACY_KMS
        if kms:
            obj = import_string(kms) if isinstance(kms, str) else kms
            _wrapper = obj() if isinstance(obj, type) else obj
        else:
            keks = fluvius_settings.PRIVACY_KEK
            if not keks:
                raise KeyEncryptionKeyError()
            items = keks if isinstance(keks, list | tuple) else [keks]
            _wrapper = LocalKeyWrapper([parse_kek(k) for k in items])
    return _wrapper


# -- the cache of unwrapped keys ---------------------------------------------------------------

FORGOTTEN: Any = object()  # the subject's key was destroyed


class _KeyCache:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def get(self, using: str, subject: str) -> Any:
        entry = self._entries.get((using, subject))
        if entry is None:
            return None
        if entry[1] < time.monotonic():
            self._entries.pop((using, subject), None)
            return None
        return entry[0]

    def put(self, using: str, subject: str, key: Any) -> None:
        ttl = float(fluvius_settings.PRIVACY_KEY_CACHE_SECONDS or 0)
        if ttl <= 0:
            return
        with self._lock:
            if len(self._entries) >= 10_000:
                self._entries.clear()  # bounded; refilled from the table as needed
            self._entries[(using, subject)] = (key, time.monotonic() + ttl)

    def evict(self, using: str, subject: str) -> None:
        self._entries.pop((using, subject), None)

    def clear(self) -> None:
        self._entries.clear()


key_cache = _KeyCache()


def _remember(using: str, subject: str, key: Any) -> None:
    if connections[using].in_atomic_block:
        transaction.on_commit(lambda: key_cache.put(using, subject, key), using=using)
    else:
        key_cache.put(using, subject, key)


def load(subject: str, using: str) -> Any:
    """The subject's AESGCM, ``FORGOTTEN``, or None when the subject has no key."""
    cached = key_cache.get(using, subject)
    if cached is not None:
        return cached
    row = SubjectKey.objects.using(using).filter(subject=subject).values_list("wrapped", "kek_id").first()
    if row is None:
        return None
    wrapped, key_id = row
    key = FORGOTTEN if wrapped is None else AESGCM(wrapper().unwrap(bytes(wrapped), key_id, subject))
    _remember(using, subject, key)
    return key


def new_row(subject: str) -> tuple[SubjectKey, AESGCM]:
    """A fresh key for the subject and its (unsaved) wrapped row."""
    raw = AESGCM.generate_key(bit_length=256)
    wrap = wrapper()
    row = SubjectKey(subject=subject, wrapped=wrap.wrap(raw, subject), kek_id=wrap.key_id,
                     created=timezone.now())
    return row, AESGCM(raw)


def create(subject: str, using: str, batch: Any = None) -> Any:
    """Make the subject's key (or find the one a concurrent writer made); returns as ``load``.

    With ``batch`` (a write batch of a brand-new aggregate: nobody can race it for its
    own id) the row goes out with the command's other writes.
    """
    row, key = new_row(subject)
    if batch is not None:
        batch.insert(row)
        _remember(using, subject, key)
        return key
    try:
        with transaction.atomic(using=using):
            row.save(using=using)
    except IntegrityError:
        return load(subject, using)
    _remember(using, subject, key)
    return key


def destroy(subject: str, using: str) -> bool:
    """Empty the subject's key (the row stays, stamped forgotten); False if it had none or was forgotten."""
    changed = (SubjectKey.objects.using(using).filter(subject=subject, forgotten__isnull=True)
               .update(wrapped=None, kek_id="", forgotten=timezone.now()))
    key_cache.evict(using, subject)
    if connections[using].in_atomic_block:
        transaction.on_commit(lambda: key_cache.evict(using, subject), using=using)
    return bool(changed)


def rotate(using: str, batch_size: int = 500) -> tuple[int, int]:
    """Re-wrap every key not wrapped by the current KEK; (re-wrapped, already current)."""
    wrap = wrapper()
    done = current = 0
    qs = SubjectKey.objects.using(using).filter(wrapped__isnull=False).order_by("id")
    last = 0
    while True:
        rows = list(qs.filter(id__gt=last)[:batch_size])
        if not rows:
            return done, current
        with transaction.atomic(using=using):
            for row in rows:
                if row.kek_id == wrap.key_id:
                    current += 1
                    continue
                raw = wrap.unwrap(bytes(row.wrapped or b""), row.kek_id, row.subject)
                SubjectKey.objects.using(using).filter(id=row.id).update(
                    wrapped=wrap.wrap(raw, row.subject), kek_id=wrap.key_id)
                done += 1
        last = rows[-1].id


def check_unwraps(using: str) -> str | None:
    """None if the newest live key unwraps with the configured KEK; else what is wrong."""
    row = (SubjectKey.objects.using(using).filter(wrapped__isnull=False).order_by("-id")
           .values_list("subject", "wrapped", "kek_id").first())
    if row is None:
        return None
    subject, wrapped, key_id = row
    try:
        wrapper().unwrap(bytes(wrapped or b""), key_id, subject)
    except KeyEncryptionKeyError as exc:
        return exc.message
    return None


def _reset(*, setting: str, **kwargs: Any) -> None:
    global _wrapper
    if setting == "FLUVIUS":
        _wrapper = None
        key_cache.clear()


setting_changed.connect(_reset)

