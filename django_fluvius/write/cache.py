"""An in-process cache of folded aggregates, in front of the event store.

A command on a cached aggregate skips reading its stream. The cache is filled
only when a transaction commits (``transaction.on_commit``), so it never holds
state that was rolled back. It may still be stale — another process may have
appended since — and that is safe: the unique (aggregate_id, version)
constraint refuses a write on top of an unseen version, and the bus then runs
the command once more from the store (see ``bus.StaleCache``). A rejection
decided on cached state is likewise re-checked against the store before it is
reported.

``FLUVIUS['AGGREGATE_CACHE_SIZE']`` bounds it (least recently used entries go
first); 0 turns it off.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django_fluvius.conf import fluvius_settings

# Values no caller can change in place: a flat state of these is copied with dict().
_IMMUTABLE = frozenset({str, int, float, bool, type(None), uuid.UUID, decimal.Decimal, datetime.datetime,
                        datetime.date, datetime.time, datetime.timedelta})


def private_copy(state: dict[str, Any]) -> dict[str, Any]:
    """A copy no one can mutate the original through: shallow when every value is immutable."""
    for value in state.values():
        if type(value) not in _IMMUTABLE:
            return copy.deepcopy(state)
    return dict(state)


@dataclass(frozen=True)
class CachedAggregate:
    namespace: str
    resource: str
    version: int
    # A private deep copy: no caller can mutate the cached state through a
    # reference, and values keep their types (Decimal, datetime ...).
    frozen_state: dict[str, Any]
    created: Any
    updated: Any
    # The aggregate's tenant: a cached aggregate is checked against the context like a loaded one.
    tenant: str | None = None

    @property
    def state(self) -> dict[str, Any]:
        return private_copy(self.frozen_state)


class AggregateCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, uuid.UUID], CachedAggregate] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return int(fluvius_settings.AGGREGATE_CACHE_SIZE or 0)

    def get(self, using: str, aggregate_id: uuid.UUID) -> CachedAggregate | None:
        if not self.size:
            return None
        key = (using, aggregate_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, using: str, aggregate_id: uuid.UUID, namespace: str, resource: str, version: int,
            state: dict[str, Any], created: Any, updated: Any, tenant: str | None = None) -> None:
        size = self.size
        if not size:
            return
        entry = CachedAggregate(namespace, resource, version, private_copy(state),
                                created, updated, tenant)
        key = (using, aggregate_id)
        with self._lock:
            current = self._entries.get(key)
            if current is not None and current.version > version:
                return  # a later commit already cached a newer version
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > size:
                self._entries.popitem(last=False)

    def evict(self, using: str, aggregate_id: uuid.UUID) -> None:
        with self._lock:
            self._entries.pop((using, aggregate_id), None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


aggregate_cache = AggregateCache()
