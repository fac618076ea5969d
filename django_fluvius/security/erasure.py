"""Forgetting a data subject, and exporting what is held about them (GDPR arts. 17 and 15).

``forget`` destroys the subject's key (every sealed copy — events, snapshots,
command log, idempotent responses, dead letters, cached state — becomes
unreadable at once), blanks the subject's personal fields in the projection rows
(the only plaintext copies), purges the snapshots and cached aggregates that held
them, and appends to each stream that held them a ``personal-data-erased`` event
naming the erased fields, no values. All of it in one transaction: a failure
changes nothing.

``export_subject`` reads every sealed value of the subject, with the event each
came from.

Invariant: the streams stay intact and append-only; erasure is the key's
destruction plus an event, never an edit of history.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from django_fluvius.events.snapshots import SnapshotStore
from django_fluvius.events.store import EventStore
from django_fluvius.exceptions import UnknownSubject
from django_fluvius.models import Event, SubjectAggregate, SubjectKey
from django_fluvius.privacy import keys
from django_fluvius.privacy.cipher import Keyring, is_token, subject_id, subject_of_token
from django_fluvius.privacy.copies import forget_recorded
from django_fluvius.privacy.declarations import ERASED_EVT_KEY, declarations
from django_fluvius.read.projections import empty_value
from django_fluvius.registry import domains
from django_fluvius.write.cache import aggregate_cache


@dataclass
class Holding:
    """One aggregate that holds personal data of the subject."""

    namespace: str
    resource: str
    aggregate_id: uuid.UUID
    tenant: str = ""


@dataclass
class Erasure:
    """What ``forget`` did."""

    subject: str
    aggregates: list[Holding] = field(default_factory=list)
    rows_erased: int = 0
    snapshots_purged: int = 0
    events: list[Event] = field(default_factory=list)


def holdings(subject: str, using: str) -> list[Holding]:
    """The aggregates holding the subject's data: their own stream (the subject is an aggregate) and
    those that recorded it (``SubjectAggregate``: an order's customer)."""
    found: list[Holding] = []
    try:
        own_id: uuid.UUID | None = uuid.UUID(subject)
    except ValueError:
        own_id = None
    if own_id is not None:
        head = Event.objects.using(using).filter(aggregate_id=own_id, version=1).first()
        if head is not None and declarations.get(head.namespace, head.resource) is not None:
            found.append(Holding(head.namespace, head.resource, own_id, head.tenant))
    for ref in SubjectAggregate.objects.using(using).filter(subject=subject).order_by("id"):
        head = Event.objects.using(using).filter(aggregate_id=ref.aggregate_id, version=1).first()
        found.append(Holding(ref.namespace, ref.resource, ref.aggregate_id, head.tenant if head else ""))
    return found


def _key_row(subject: str, using: str) -> SubjectKey:
    row = SubjectKey.objects.using(using).filter(subject=subject).first()
    if row is None:
        raise UnknownSubject(f"No personal data is held for subject {subject!r}: nothing was changed.",
                             subject=subject)
    return row


def forget(subject_value: Any, using: str) -> Erasure:
    """Erase the subject everywhere (see the module's note); ``UnknownSubject`` if nothing is held."""
    subject = subject_id(subject_value)
    row = _key_row(subject, using)
    if row.forgotten is not None:
        raise UnknownSubject(f"Subject {subject!r} was already forgotten ({row.forgotten.isoformat()}); "
                             "nothing was changed.", code="already_forgotten", subject=subject)
    erasure = Erasure(subject)
    store = EventStore(using)
    with transaction.atomic(using=using):
        keys.destroy(subject, using)
        for holding in holdings(subject, using):
            spec = declarations.get(holding.namespace, holding.resource)
            fields = spec.fields if spec is not None else ()
            version = store.current_version(holding.aggregate_id) + 1
            event = Event(namespace=holding.namespace, resource=holding.resource,
                          aggregate_id=holding.aggregate_id, version=version, evt_key=ERASED_EVT_KEY,
                          payload={"subject": subject, "fields": list(fields)},
                          metadata={"source": "forget"}, tenant=holding.tenant, created=timezone.now())
            store.append([event])
            erasure.events.append(event)
            erasure.rows_erased += erase_rows(holding, fields, version, event.created)
            erasure.snapshots_purged += SnapshotStore(using).clear(aggregate_id=holding.aggregate_id)
            aggregate_cache.evict(using, holding.aggregate_id)
            erasure.aggregates.append(holding)
        ids = [h.aggregate_id for h in erasure.aggregates]
        transaction.on_commit(lambda: _evict_all(using, ids), using=using)
    forget_recorded(subject)
    return erasure


def _evict_all(using: str, ids: list[uuid.UUID]) -> None:
    for aggregate_id in ids:
        aggregate_cache.evict(using, aggregate_id)


def erase_rows(holding: Holding, fields: tuple[str, ...], version: int, when: Any) -> int:
    """Blank the personal fields of the aggregate's projection row (each to its field's empty value)."""
    if holding.namespace not in domains:
        return 0
    model = domains.get(holding.namespace).projection_model(holding.resource)
    if model is None:
        return 0
    columns = {f.name: f for f in model._meta.concrete_fields}
    values = {name: empty_value(columns[name]) for name in fields if name in columns}
    if not values:
        return 0
    # The row follows its stream: the erasure event is its new version (the REST ETag).
    if "version" in columns:
        values["version"] = version
    if "updated_at" in columns:
        values["updated_at"] = when
    return model._default_manager.filter(pk=holding.aggregate_id).update(**values)


def export_subject(subject_value: Any, using: str) -> dict[str, Any]:
    """Every personal value held for the subject, decrypted, with the event it came from (JSON-ready)."""
    subject = subject_id(subject_value)
    row = _key_row(subject, using)
    keyring = Keyring(using)
    values: list[dict[str, Any]] = []
    aggregates = holdings(subject, using)
    for holding in aggregates:
        for event in Event.objects.using(using).filter(aggregate_id=holding.aggregate_id).order_by("version"):
            payload = event.payload if isinstance(event.payload, dict) else {}
            for name, value in payload.items():
                if not is_token(value) or subject_of_token(value) != subject:
                    continue
                values.append({
                    "namespace": event.namespace,
                    "resource": event.resource,
                    "aggregate_id": str(event.aggregate_id),
                    "field": name,
                    "value": keyring.open_value(value, name),
                    "event": {"position": event.position, "version": event.version, "evt_key": event.evt_key,
                              "created": event.created.isoformat()},
                })
    return {
        "subject": subject,
        "exported": timezone.now().isoformat(),
        "forgotten": row.forgotten.isoformat() if row.forgotten else None,
        "aggregates": [{"namespace": h.namespace, "resource": h.resource, "aggregate_id": str(h.aggregate_id)}
                       for h in aggregates],
        "values": values,
    }
