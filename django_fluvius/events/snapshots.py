"""Snapshots: folded state kept every N events so long streams load fast.

An aggregate class sets ``snapshot_every = N`` (or the project sets
``FLUVIUS['SNAPSHOT_EVERY']``). Each time a command takes the aggregate's
version across a multiple of N, ``Domain.after_append`` writes a ``Snapshot``
row in the command's own transaction. ``Domain.rehydrate`` then reads the
latest usable snapshot and folds only the events after it.

A snapshot is a cache, never the truth: deleting every snapshot changes no
result, only the time a load takes. A snapshot is not used when

- snapshots are off for the aggregate class (nothing is even queried, so the
  command path costs nothing extra),
- its ``schema_version`` is not the class's ``snapshot_schema`` (bump it when
  the state's shape or the folding code changes: state is then rebuilt from
  the events and new snapshots are taken in the new shape),
- its ``fingerprint`` (the schema versions of the event types the class folds)
  is not the current one: an upcaster was added since, so old events now read
  differently and the snapshot's state has the old shape,
- it is newer than the version or time asked for (time travel),
- its state is not a JSON object (it was damaged), or a sealed personal value in it
  does not authenticate: the load falls back to the events and logs a warning.

Personal fields (``Domain.__personal__``) are stored sealed, as in the events
(privacy/), and opened when the snapshot is read.

Only state that survives a JSON round trip unchanged is snapshotted; an
aggregate whose ``@apply`` keeps e.g. ``Decimal`` or ``datetime`` values in its
state is simply loaded from its events (with a warning), never from a snapshot
that would read back different.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections
from django.utils import timezone

from django_fluvius.conf import fluvius_settings
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import check_foldable, fold_fingerprint
from django_fluvius.exceptions import PersonalDataTampered
from django_fluvius.models import Snapshot
from django_fluvius.privacy.cipher import Keyring, has_tokens, is_token, open_mapping
from django_fluvius.privacy.copies import seal_state
from django_fluvius.privacy.declarations import ERASED_EVT_KEY

if TYPE_CHECKING:
    import datetime

    from django_fluvius.protocols import AggregateProtocol as Aggregate
    from django_fluvius.protocols import AggregateT
    from django_fluvius.protocols import DomainProtocol as Domain

logger = logging.getLogger("django_fluvius.snapshots")

SNAPSHOT_UPDATE_FIELDS = ["namespace", "resource", "schema_version", "fingerprint", "state", "aggregate_created",
                          "aggregate_updated", "created"]


def snapshot_interval(aggregate_class: type[Aggregate]) -> int:
    """Every how many events the class is snapshotted; 0 when never."""
    every = aggregate_class.snapshot_every
    if every is None:
        every = fluvius_settings.SNAPSHOT_EVERY
    return int(every) if every and int(every) > 0 else 0


def is_due(version: int, new_events: int, every: int) -> bool:
    """Did going from ``version - new_events`` to ``version`` cross a multiple of ``every``?"""
    return bool(every) and version // every > (version - new_events) // every


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


_unsnapshottable_warned: set[type] = set()


class SnapshotStore:
    """Reads and writes ``Snapshot`` rows on the event store's database."""

    def __init__(self, using: str | None = None):
        self.using = using or fluvius_settings.DATABASE

    @property
    def snapshots(self):
        return Snapshot.objects.using(self.using)

    def latest(self, aggregate_class: type[Aggregate], aggregate_id: uuid.UUID, namespace: str, *,
               upto_version: int | None = None, until: datetime.datetime | None = None) -> Snapshot | None:
        """The newest snapshot usable for this load, or None."""
        qs = self.snapshots.filter(aggregate_id=aggregate_id, namespace=namespace,
                                   schema_version=aggregate_class.snapshot_schema,
                                   fingerprint=fold_fingerprint(aggregate_class, namespace))
        if upto_version is not None:
            qs = qs.filter(version__lte=upto_version)
        if until is not None:
            qs = qs.filter(aggregate_updated__lte=until)
        for snapshot in qs.order_by("-version")[:2]:
            if isinstance(snapshot.state, dict):
                if not has_tokens(snapshot.state):
                    return snapshot
                try:
                    snapshot.state = open_mapping(Keyring(self.using), snapshot.state)[0]
                    return snapshot
                except PersonalDataTampered as exc:
                    logger.warning("Ignoring the snapshot of %s at version %s: %s Loading from the events.",
                                   aggregate_id, snapshot.version, exc.message)
                    continue
            logger.warning("Ignoring the damaged snapshot of %s at version %s (its state is a %s); "
                           "loading from the events.", aggregate_id, snapshot.version,
                           type(snapshot.state).__name__)
        return None

    def save(self, aggregate: Aggregate, namespace: str) -> Snapshot | None:
        """Write the aggregate's current state as a snapshot (replacing one at the same version)."""
        state = json_roundtrip(aggregate.state)
        if state != aggregate.state:
            klass = type(aggregate)
            if klass not in _unsnapshottable_warned:
                _unsnapshottable_warned.add(klass)
                logger.warning("%s keeps state that does not survive JSON (e.g. Decimal, datetime, tuple); "
                               "it is loaded from its events, without snapshots.", klass.__qualname__)
            return None
        snapshot = Snapshot(
            aggregate_id=aggregate.id,
            namespace=namespace,
            resource=aggregate.resource,
            version=aggregate.version,
            schema_version=type(aggregate).snapshot_schema,
            fingerprint=fold_fingerprint(type(aggregate), namespace),
            state=seal_state(namespace, aggregate, state, self.using),
            aggregate_created=aggregate.created,
            aggregate_updated=aggregate.updated,
            created=timezone.now(),
        )
        # MariaDB / MySQL name no conflict target (ON DUPLICATE KEY UPDATE): the only key a
        # new snapshot can clash on is (aggregate_id, version), its id being fresh.
        features = connections[self.using].features
        self.snapshots.bulk_create([snapshot], update_conflicts=True,
                                   unique_fields=(["aggregate_id", "version"]
                                                  if features.supports_update_conflicts_with_target else None),
                                   update_fields=SNAPSHOT_UPDATE_FIELDS)
        return snapshot

    def clear(self, *, namespace: str | None = None, aggregate_id: uuid.UUID | None = None) -> int:
        """Delete snapshots (all, of one namespace, or of one aggregate); they are only a cache."""
        qs = self.snapshots.all()
        if namespace:
            qs = qs.filter(namespace=namespace)
        if aggregate_id is not None:
            qs = qs.filter(aggregate_id=aggregate_id)
        return qs.delete()[0]


def restore(aggregate_class: type[AggregateT], snapshot: Snapshot, context: Any = None) -> AggregateT:
    aggregate = aggregate_class(snapshot.aggregate_id, snapshot.resource, version=snapshot.version,
                                state=snapshot.state, context=context)
    aggregate.created = snapshot.aggregate_created
    aggregate.updated = snapshot.aggregate_updated
    return aggregate


def fold(aggregate: AggregateT, events: Iterable[Any], store: EventStore | None = None) -> AggregateT:
    """Fold stored events, refusing any whose key the aggregate class does not know.

    Events read with ``sealed=True`` may still hold sealed personal values: a plain merge
    keeps them sealed and only the values the final state holds are opened (a name renamed
    99 times is decrypted once); an ``@apply`` fold gets its event opened first.
    """
    sealed_by: dict[str, Any] | None = None
    appliers = getattr(aggregate, "_appliers", {})
    for event in events:
        check_foldable(aggregate, event)
        if store is not None and getattr(event, "personal_sealed", False):
            if event.evt_key in appliers or event.evt_key == ERASED_EVT_KEY:
                store.open_personal(event)
            else:
                if sealed_by is None:
                    sealed_by = {}
                for field, value in event.payload.items():
                    if is_token(value):
                        sealed_by[field] = event
        aggregate.fold(event)
    if sealed_by and store is not None:
        aggregate.state = store.open_state(aggregate.state, sealed_by)
    return aggregate


def rehydrate(domain: Any, aggregate_class: type[AggregateT], aggregate_id: uuid.UUID, *,
              upto_version: int | None = None, until: datetime.datetime | None = None) -> AggregateT | None:
    """The aggregate (of the domain's ``aggregate_class``) from its latest usable snapshot plus the
    later events; None if it has no events here."""
    store = domain.store
    snapshot = None
    if snapshot_interval(aggregate_class):
        snapshot = SnapshotStore(store.using).latest(aggregate_class, aggregate_id, domain.__namespace__,
                                                     upto_version=upto_version, until=until)
    if snapshot is None:
        return rehydrate_from_events(domain, aggregate_class, aggregate_id, upto_version=upto_version, until=until)
    # From the snapshot's own event on: a snapshot is trusted only where the stream has that
    # version. One restored from a newer backup than the events would otherwise stand for
    # versions never stored, and the next command would leave a gap in the stream.
    events = store.stream(aggregate_id, after_version=snapshot.version - 1, upto_version=upto_version,
                          until=until, sealed=True)
    if not events or events[0].version != snapshot.version:
        logger.warning("Ignoring the snapshot of %s at version %s: the stream has no event at that "
                       "version; loading from the events.", aggregate_id, snapshot.version)
        return rehydrate_from_events(domain, aggregate_class, aggregate_id, upto_version=upto_version, until=until)
    return fold(restore(aggregate_class, snapshot, domain.context), events[1:], store)


def rehydrate_from_events(domain: Any, aggregate_class: type[AggregateT], aggregate_id: uuid.UUID, *,
                          upto_version: int | None = None,
                          until: datetime.datetime | None = None) -> AggregateT | None:
    """The aggregate folded from its first event, no snapshot read; None if it has none here."""
    store = domain.store
    events = store.stream(aggregate_id, upto_version=upto_version, until=until, sealed=True)
    if not events or events[0].namespace != domain.__namespace__:
        return None
    return fold(aggregate_class(aggregate_id, events[0].resource, context=domain.context), events, store)


def after_append(domain: Any, aggregate: Aggregate, events: Sequence[Any]) -> Snapshot | None:
    """Take a snapshot if these events crossed the class's interval (inside the command's transaction)."""
    every = snapshot_interval(type(aggregate))
    if not is_due(aggregate.version, len(events), every):
        return None
    return SnapshotStore(domain.store.using).save(aggregate, domain.__namespace__)


def take_snapshots(domain_class: type[Domain], aggregate_ids: Iterable[uuid.UUID] | None = None, *,
                   using: str | None = None) -> int:
    """Snapshot aggregates at their current version (all of the domain's when no ids are given)."""
    domain = domain_class()
    store = EventStore(using) if using else domain.store
    snapshots = SnapshotStore(store.using)
    if aggregate_ids is None:
        aggregate_ids = (store.events.filter(namespace=domain_class.__namespace__, version=1)
                         .order_by("aggregate_id").values_list("aggregate_id", flat=True).iterator())
    count = 0
    for aggregate_id in aggregate_ids:
        # From the events, never from an older snapshot: a fresh snapshot must not inherit a stale one.
        events = store.stream(aggregate_id)
        if not events or events[0].namespace != domain_class.__namespace__:
            continue
        aggregate = fold(domain_class.__aggregate__(aggregate_id, events[0].resource), events)
        if snapshots.save(aggregate, domain_class.__namespace__) is not None:
            count += 1
    return count
