"""The event store: append to and read from the ``Event`` table.

Everything that reads events goes through ``EventStore`` so one place decides
which database alias holds them and how a stored row is decoded (the hook that
upcasting plugs into).

Invariant: the store only ever appends. A second event with the same
(aggregate_id, version) is refused by the database's unique constraint, not by a
read-then-check here, so two writers racing for one version cannot both win:
the loser's whole transaction rolls back (``ConcurrencyConflict``).
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from django.db import IntegrityError

from django_fluvius.conf import fluvius_settings
from django_fluvius.events import sql, upcasting
from django_fluvius.exceptions import PersonalDataTampered
from django_fluvius.models import Event
from django_fluvius.privacy.cipher import TOKEN_PREFIX, open_payload


class EventStore:
    """Append-only, versioned streams of events, one stream per aggregate."""

    def __init__(self, using: str | None = None):
        self.using = using or fluvius_settings.DATABASE

    @property
    def events(self):
        return Event.objects.using(self.using)

    # -- writing -------------------------------------------------------------

    def append(self, events: Sequence[Event]) -> list[Event]:
        """Insert events; the (aggregate_id, version) constraint refuses duplicates.

        Raises ``IntegrityError`` on a duplicate version: the caller, which owns
        the transaction, turns it into ``ConcurrencyConflict``.
        """
        for event in events:
            sql.insert(event, self.using)
        return list(events)

    def current_version(self, aggregate_id: uuid.UUID) -> int:
        """The version of the last stored event of a stream (0 when there is none)."""
        last = (self.events.filter(aggregate_id=aggregate_id).order_by("-version")
                .values_list("version", flat=True).first())
        return last or 0

    def version_taken(self, aggregate_id: uuid.UUID, version: int) -> bool:
        return self.events.filter(aggregate_id=aggregate_id, version=version).exists()

    # -- reading -------------------------------------------------------------

    def stream(
        self,
        aggregate_id: uuid.UUID,
        *,
        after_version: int = 0,
        upto_version: int | None = None,
        until: datetime.datetime | None = None,
        sealed: bool = False,
    ) -> list[Event]:
        """The events of one aggregate in version order, decoded.

        ``sealed``: personal values may be left sealed (``event.personal_sealed``) when no
        upcaster could need them; ``snapshots.fold`` opens only the ones the state keeps.
        """
        qs = self.events.filter(aggregate_id=aggregate_id)
        if after_version:
            qs = qs.filter(version__gt=after_version)
        if upto_version is not None:
            qs = qs.filter(version__lte=upto_version)
        if until is not None:
            qs = qs.filter(created__lte=until)
        lazy = sealed and not upcasting.registry
        return [self.decode(event, sealed=lazy) for event in qs.order_by("version")]

    def head(self, aggregate_id: uuid.UUID) -> Event | None:
        """The first event of a stream (its namespace and resource), or None."""
        return self.events.filter(aggregate_id=aggregate_id, version=1).first()

    def read_all(self, *, after_position: int = 0, limit: int = 1000,
                 namespace: str | None = None, evt_keys: Sequence[str] | None = None) -> list[Event]:
        """Events across all streams by global position, for catch-up and replay."""
        qs = self.events.filter(position__gt=after_position)
        if namespace:
            qs = qs.filter(namespace=namespace)
        if evt_keys:
            # Old names of renamed keys too: they are read back under the new name.
            qs = qs.filter(evt_key__in=upcasting.registry.stored_keys(evt_keys, namespace))
        return [self.decode(event) for event in qs.order_by("position")[:limit]]

    def iter_all(self, *, after_position: int = 0, batch_size: int = 1000, **filters: Any) -> Iterator[Event]:
        """Every event after a position, read in batches (bounded memory)."""
        position = after_position
        while True:
            batch = self.read_all(after_position=position, limit=batch_size, **filters)
            if not batch:
                return
            yield from batch
            position = batch[-1].position

    def last_position(self) -> int:
        last = self.events.order_by("-position").values_list("position", flat=True).first()
        return last or 0

    # -- decoding ------------------------------------------------------------

    def decode(self, event: Event, *, sealed: bool = False) -> Event:
        """Turn a stored row into the shape current code expects (renames, upcasters: upcasting.py).

        Sealed personal values are opened first (None once their subject is forgotten);
        one that does not authenticate is an ``EventDecodeError`` naming the event.
        """
        payload = event.payload
        if type(payload) is dict:
            for value in payload.values():
                if type(value) is str and value.startswith(TOKEN_PREFIX):
                    if sealed:
                        event.personal_sealed = True  # type: ignore[attr-defined]
                    else:
                        self.open_personal(event)
                    break
        return upcasting.registry.decode(event)

    def open_personal(self, event: Event) -> None:
        try:
            event.payload, subject = open_payload(event.payload, self.using)
        except PersonalDataTampered as exc:
            raise upcasting.decode_error(event, exc.message) from exc
        # Whose data it carried: what a dead letter's texts about this event are sealed under.
        event.personal_subject = subject  # type: ignore[attr-defined]
        event.personal_sealed = False  # type: ignore[attr-defined]

    def open_state(self, state: dict[str, Any], sealed_by: dict[str, Event]) -> dict[str, Any]:
        """Open the sealed values a fold kept in ``state``; a bad one names the event it came from."""
        values = {field: state[field] for field in sealed_by if type(state.get(field)) is str
                  and state[field].startswith(TOKEN_PREFIX)}
        if not values:
            return state
        try:
            opened, _ = open_payload(values, self.using)
        except PersonalDataTampered as exc:
            raise upcasting.decode_error(sealed_by[exc.details.get("field", "")], exc.message) from exc
        return {**state, **opened}


def is_stream_conflict(store: EventStore, error: IntegrityError, events: Sequence[Event]) -> bool:
    """Did this IntegrityError come from another writer taking one of our versions?"""
    return any(store.version_taken(e.aggregate_id, e.version) for e in events)
