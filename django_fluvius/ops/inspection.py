"""What the inspection commands compute: ``fluvius_inspect``, ``fluvius_stream``, ``fluvius_verify``.

The commands only format; everything here returns plain data so tests and
other tools (the admin, scripts) can use it too.

Invariant: inspection only reads. It folds and compares with the same code the
bus and rebuilds use (``row_values``, the upcasters, ``@apply``), so a drift it
reports is a real one and never an artefact of a second implementation.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Exists, OuterRef

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.handlers import ALL_EVENTS, handlers
from django_fluvius.events.snapshots import json_roundtrip, snapshot_interval
from django_fluvius.exceptions import AggregateNotFound, UnknownDomain
from django_fluvius.models import Event, Snapshot
from django_fluvius.ops.rebuild import (
    AggregateScanner,
    ProjectionTarget,
    ResourceTarget,
    owners_of,
    resolve_targets,
)
from django_fluvius.read.projections import row_values
from django_fluvius.read.state import parse_aggregate_id
from django_fluvius.registry import domains, resolve_model

if TYPE_CHECKING:
    from django_fluvius.protocols import DomainProtocol
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import (
    check_foldable,
    event_type_problems,
    fold_fingerprint,
    registry,
    stored_event_types,
)


def label(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# -- fluvius_inspect ------------------------------------------------------------------


def overview(*, counts: bool = False, using: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Domains, commands, events, handlers and projections the project declares."""
    using = using or fluvius_settings.DATABASE
    result: dict[str, list[dict[str, Any]]] = {"domains": [], "commands": [], "events": [], "handlers": [],
                                               "projections": []}
    events: dict[tuple[str, str], dict[str, Any]] = {}
    for domain in sorted(domains, key=lambda d: d.__namespace__):
        namespace = domain.__namespace__
        aggregate = domain.__aggregate__
        resources = {}
        for resource, value in domain.__resources__.items():
            try:
                resources[resource] = resolve_model(value)._meta.label
            except Exception as exc:  # noqa: BLE001 - shown, as the system checks report it
                resources[resource] = f"<{exc}>"
        result["domains"].append({
            "namespace": namespace, "domain": label(domain), "aggregate": label(aggregate),
            "resources": resources, "snapshot_every": snapshot_interval(aggregate) or None,
            "snapshot_schema": aggregate.snapshot_schema,
        })
        for spec in sorted(aggregate.actions().values(), key=lambda s: s.name):
            fields = list(getattr(spec.serializer_class(), "fields", {}))
            result["commands"].append({
                "namespace": namespace, "command": spec.name, "evt_key": spec.evt_key,
                "resources": list(spec.resources), "create": spec.create, "async": spec.is_async,
                "fields": fields, "method": spec.func.__name__,
            })
            entry = events.setdefault((namespace, spec.evt_key), _event_entry(namespace, spec.evt_key))
            entry["produced_by"].append(spec.name)
        for evt_key, method in aggregate._appliers.items():
            entry = events.setdefault((namespace, evt_key), _event_entry(namespace, evt_key))
            entry["applied_by"] = method
    for (ns, old) in registry.aliases():
        for (namespace, evt_key), entry in events.items():
            if (ns is None or ns == namespace) and registry.resolve(namespace, old) == evt_key:
                entry["renamed_from"].append(old)
    for spec in handlers:
        result["handlers"].append({
            "name": spec.name, "evt_keys": list(spec.evt_keys), "namespace": spec.namespace,
            "ordered": spec.ordered, "async": spec.is_async,
        })
        for (namespace, evt_key), entry in events.items():
            if (spec.namespace in (None, namespace)) and (ALL_EVENTS in spec.evt_keys or evt_key in spec.evt_keys):
                entry["handlers"].append(spec.name)
    if counts:
        stored: Counter[tuple[str, str]] = Counter()
        for namespace, evt_key, _version, n in stored_event_types(using):
            stored[(namespace, registry.resolve(namespace, evt_key))] += n
        for key, entry in events.items():
            entry["stored"] = stored.get(key, 0)
    result["events"] = [events[key] for key in sorted(events)]
    for target in resolve_targets():
        item: dict[str, Any] = {"name": target.name, "kind": getattr(target, "kind", "inline")}
        if isinstance(target, ResourceTarget):
            item.update(model=target.model._meta.label, table=target.model._meta.db_table)
            if counts:
                item["rows"] = target.model._base_manager.using(using).count()
        elif isinstance(target, ProjectionTarget):
            models_ = target.models()
            item.update(model=", ".join(m._meta.label for m in models_) or None,
                        table=", ".join(m._meta.db_table for m in models_) or None,
                        evt_keys=list(target.projection_class.keys()))
            if counts:
                item["rows"] = sum(m._base_manager.using(using).count() for m in models_)
                item["lag"] = target.projection_class(using=using).lag()
        result["projections"].append(item)
    return result


def _event_entry(namespace: str, evt_key: str) -> dict[str, Any]:
    upcasters = registry._lookup(registry._upcasters, namespace, evt_key) or {}
    return {"namespace": namespace, "evt_key": evt_key,
            "schema_version": registry.current_version(namespace, evt_key),
            "upcasters": {f"v{v}": step.name for v, step in sorted(upcasters.items())},
            "renamed_from": [], "produced_by": [], "applied_by": None, "handlers": []}


# -- fluvius_stream -------------------------------------------------------------------


@dataclass
class StreamStep:
    event: Event
    state: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        e = self.event
        stored_key, stored_version = getattr(e, "stored_as", (e.evt_key, e.schema_version))
        return {
            "version": e.version, "position": e.position, "evt_key": e.evt_key,
            "schema_version": e.schema_version, "stored_evt_key": stored_key,
            "stored_schema_version": stored_version, "created": e.created, "user": e.user,
            "command_id": e.command_id, "payload": e.payload, "state": self.state,
        }


def stream_history(aggregate_id: Any, *, upto_version: int | None = None,
                   using: str | None = None) -> tuple[type[DomainProtocol], str, list[StreamStep]]:
    """(domain class, resource, each event with the state right after it), folded from the events."""
    pk = parse_aggregate_id(aggregate_id)
    store = EventStore(using)
    head = store.head(pk)
    if head is None:
        raise AggregateNotFound(f"No events are stored for aggregate {pk}.")
    try:
        domain = domains.get(head.namespace)
    except UnknownDomain as exc:
        raise UnknownDomain(f"Aggregate {pk} belongs to namespace {head.namespace!r}, which no registered "
                            f"domain declares ({exc.message})") from None
    aggregate = domain.__aggregate__(pk, head.resource)
    steps = []
    for event in store.stream(pk, upto_version=upto_version):
        check_foldable(aggregate, event)
        aggregate.fold(event)
        steps.append(StreamStep(event, json_roundtrip(aggregate.state)))
    return domain, head.resource, steps


# -- fluvius_verify -------------------------------------------------------------------


@dataclass
class Drift:
    kind: str  # see DRIFT_KINDS
    target: str
    aggregate_id: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "target": self.target, "aggregate_id": self.aggregate_id,
                "message": self.message}


DRIFT_KINDS = {
    "undecodable": "an event cannot be decoded or folded",
    "missing_row": "the aggregate has no projection row",
    "extra_row": "a projection row has no aggregate (or its projection is None)",
    "stale_row": "the row's version is not the aggregate's",
    "field": "a column differs from the folded state",
    "snapshot": "a snapshot differs from the state folded at its version",
    "event_type": "stored event keys or schema versions no code can read",
}


@dataclass
class VerifyReport:
    events: int = 0
    aggregates: int = 0
    rows: int = 0
    snapshots: int = 0
    drifts: list[Drift] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    targets: defaultdict[str, set[str]] = field(default_factory=lambda: defaultdict(set))  # kind -> all, listed or not
    max_listed: int = 100

    def add(self, drift: Drift) -> None:
        self.counts[drift.kind] += 1
        if drift.target:
            self.targets[drift.kind].add(drift.target)
        if len(self.drifts) < self.max_listed:
            self.drifts.append(drift)

    @property
    def ok(self) -> bool:
        return not self.counts

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "aggregates": self.aggregates, "rows": self.rows,
                "snapshots": self.snapshots, "ok": self.ok, "drift_counts": dict(self.counts),
                "drifts": [d.as_dict() for d in self.drifts]}


def _differing(kept: Any, folded: dict[str, Any]) -> str:
    """Where a snapshot's state differs from the folded one: its keys, or what it holds instead."""
    if not isinstance(kept, dict):
        return f" (it holds a {type(kept).__name__}, not an object)"
    absent = object()
    keys = sorted(k for k in kept.keys() | folded.keys() if kept.get(k, absent) != folded.get(k, absent))
    return f" in: {', '.join(keys)}"


def _comparable(f: models.Field, value: Any) -> Any:
    """A value as the column would read it back, so folded and stored values compare fairly."""
    if value is None:
        return None
    if isinstance(f, models.JSONField):
        return json_roundtrip(value)
    try:
        value = f.to_python(value)
    except Exception:  # noqa: BLE001 - an unparseable value simply differs
        return value
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return value.astimezone(datetime.UTC)
    if isinstance(value, Decimal):
        return value.normalize()
    return value


def _show(value: Any) -> str:
    text = json.dumps(value, cls=DjangoJSONEncoder) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def compare_row(model: type[models.Model], aggregate: Any, row: models.Model | None) -> list[tuple[str, str]]:
    """(kind, message) for each way ``row`` differs from what ``aggregate`` projects."""
    fields = aggregate.projection(aggregate.resource)
    if fields is None:
        return [("extra_row", f"its projection is None at version {aggregate.version}, but a row exists")] \
            if row is not None else []
    if row is None:
        return [("missing_row", f"no {model._meta.label} row for version {aggregate.version}")]
    expected = row_values(model, aggregate, fields)
    columns = {f.attname: f for f in model._meta.concrete_fields}
    problems = []
    row_version = getattr(row, "version", None)
    if "version" in expected and row_version != aggregate.version:
        problems.append(("stale_row", f"row at version {row_version}, events at {aggregate.version}"))
    for name, value in expected.items():
        if name == "version":
            continue
        f = columns[name]
        want, have = _comparable(f, value), _comparable(f, getattr(row, f.attname))
        if want != have:
            problems.append(("field", f"{name}: row has {_show(have)}, events give {_show(want)}"))
    return problems


def verify(names: Iterable[str] = (), *, batch_size: int = 500, using: str | None = None,
           max_listed: int = 100, on_batch: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Decode every stored event, fold every aggregate, compare with projections and snapshots."""
    using = using or fluvius_settings.DATABASE
    report = VerifyReport(max_listed=max_listed)
    names = list(names)
    for message in event_type_problems(stored_event_types(using)):
        report.add(Drift("event_type", "", "", f"{message.id}: {message.msg}"))
    targets = [t for t in resolve_targets(names) if isinstance(t, ResourceTarget)]
    by_domain: dict[type, list[ResourceTarget]] = {}
    for target in targets:
        by_domain.setdefault(target.domain_class, []).append(target)
    if not names:
        # Aggregates of resources without a model are decoded and folded too.
        for domain in domains:
            by_domain.setdefault(domain, [])
    for domain_class, domain_targets in by_domain.items():
        _verify_domain(domain_class, domain_targets, None if not names else [t.resource for t in domain_targets],
                       report, batch_size=batch_size, using=using, on_batch=on_batch)
    return report


def _verify_domain(domain_class: type[DomainProtocol], targets: list[ResourceTarget], resources: list[str] | None,
                   report: VerifyReport, *, batch_size: int, using: str,
                   on_batch: Callable[[int, int], None] | None) -> None:
    scanner = AggregateScanner(domain_class, resources, using=using)
    models_by_resource = {t.resource: t for t in targets}
    schema = domain_class.__aggregate__.snapshot_schema
    cursor = None
    while True:
        ids = scanner.next_ids(cursor, batch_size)
        if not ids:
            break
        cursor = ids[-1]
        rows: dict[type[models.Model], dict[Any, models.Model]] = {}
        for each in targets:
            rows[each.model] = each.model._base_manager.using(using).in_bulk(ids)
        snapshots: dict[uuid.UUID, dict[int, Snapshot]] = {}
        fingerprint = fold_fingerprint(domain_class.__aggregate__, domain_class.__namespace__)
        for snap in Snapshot.objects.using(using).filter(aggregate_id__in=ids, schema_version=schema,
                                                           fingerprint=fingerprint,
                                                           namespace=domain_class.__namespace__):
            snapshots.setdefault(snap.aggregate_id, {})[snap.version] = snap

        def observe(aggregate: Any, event: Event, snapshots: dict = snapshots) -> None:
            snap = snapshots.get(aggregate.id, {}).get(aggregate.version)
            if snap is not None:
                report.snapshots += 1
                folded = json_roundtrip(aggregate.state)
                if snap.state != folded:
                    report.add(Drift("snapshot", f"{domain_class.__namespace__}.{aggregate.resource}",
                                     str(aggregate.id), f"snapshot at version {snap.version} differs from "
                                     f"the folded state{_differing(snap.state, folded)}"))

        def broken(aggregate_id: uuid.UUID, exc: Exception) -> None:
            report.add(Drift("undecodable", domain_class.__namespace__, str(aggregate_id), str(exc)))

        events = aggregates = 0
        for aggregate in scanner.fold(ids, on_error=broken, observe=observe if snapshots else None):
            events += aggregate.event_count
            aggregates += 1
            for version in sorted(v for v in snapshots.get(aggregate.id, {}) if v > aggregate.version):
                report.snapshots += 1
                report.add(Drift("snapshot", f"{domain_class.__namespace__}.{aggregate.resource}",
                                 str(aggregate.id), f"snapshot at version {version} is past the stream's "
                                 f"last event ({aggregate.version}): loads ignore it"))
            target = models_by_resource.get(aggregate.resource)
            if target is None:
                continue
            row = rows[target.model].get(aggregate.id)
            report.rows += row is not None
            for kind, message in compare_row(target.model, aggregate, row):
                report.add(Drift(kind, target.name, str(aggregate.id), message))
        report.events += events
        report.aggregates += aggregates
        if on_batch is not None:
            on_batch(events, aggregates)
    for target in targets:
        _extra_rows(target, report, using)


def _extra_rows(target: ResourceTarget, report: VerifyReport, using: str) -> None:
    heads = Event.objects.using(using).filter(owners_of(target.model, target), aggregate_id=OuterRef("pk"),
                                              version=1)
    orphans = target.model._base_manager.using(using).filter(~Exists(heads))
    for pk in orphans.values_list("pk", flat=True).iterator():
        report.add(Drift("extra_row", target.name, str(pk), "a row whose id is no aggregate kept in this model"))
