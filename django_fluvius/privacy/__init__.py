"""Personal data: declared per resource, sealed per data subject, forgotten by destroying a key.

Crypto-shredding: every personal field the framework keeps a copy of (event
payloads, snapshots, the command log, stored idempotent responses, dead letters,
the aggregate cache) is stored as an AES-GCM token under a key of its own data
subject; ``forget`` destroys that key and every copy becomes unreadable at once,
while the event streams stay intact. Projection rows hold plaintext and are
erased field by field (``Domain.forget``).

Invariant: this unit sits just above the ground (``tests/test_layers.py``) so the
lowest writer — the event store's insert, the bus's log row — can seal without
naming a higher layer. It knows no domain: ``Domain`` registers its
``__personal__`` declaration here when its class is made.
"""

from django_fluvius.privacy.cipher import (
    TOKEN_PREFIX,
    Keyring,
    is_token,
    open_mapping,
    open_text,
    seal_mapping,
    seal_text,
)
from django_fluvius.privacy.declarations import ERASED_EVT_KEY, PersonalData, declarations

__all__ = [
    "ERASED_EVT_KEY",
    "TOKEN_PREFIX",
    "Keyring",
    "PersonalData",
    "declarations",
    "is_token",
    "open_mapping",
    "open_text",
    "seal_mapping",
    "seal_text",
]
