"""Rebuilding read models from the event store, in batches, resumably.

``fluvius_rebuild`` (and ``rebuild()`` below) walks the aggregates of a resource
in aggregate-id order, ``batch_size`` aggregates at a time. For each batch it
reads their events in (aggregate, version) order, decodes them (upcasters,
renames), folds them with the aggregate class and writes the projection rows;
the rows and the run's cursor (the last aggregate id done) commit in one
transaction. A crashed run therefore resumes after the last committed batch,
and redoing a batch is harmless because every write is an idempotent upsert.
Memory is bounded by one batch: events are streamed, never all loaded.

Readers never see an empty table. Instead of building a copy aside and
swapping tables (which breaks foreign keys, indexes, grants and the model's
``db_table`` on PostgreSQL, and has no atomic equivalent on SQLite), the
rebuild writes *in place*: each row is replaced by its rebuilt version with
``INSERT ... ON CONFLICT (pk) DO UPDATE ... WHERE row.version <= rebuilt.version``.
Every row a reader sees is therefore the state of its aggregate at some
version, old rows are never dropped first, and the version guard keeps a
command that commits during the rebuild from being overwritten by the older
state the rebuild folded. Rows whose aggregate's projection is now ``None``
are deleted with the same guard; rows with no aggregate at all are deleted at
the end of the run.

Progress (``RebuildRun``) is one row per target; ``fluvius_rebuild`` prints a
progress bar with counts, rate and ETA.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any, TextIO

from django.db import connections, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.base import ModelState
from django.utils import timezone

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.projections import APPLIED, IDLE, async_projections
from django_fluvius.events import sql
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import check_foldable
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.exceptions import EventDecodeError, RebuildError, UnknownResource
from django_fluvius.models import Checkpoint, Event, RebuildRun
from django_fluvius.ops.progress import Progress
from django_fluvius.read.projections import VERSION_FIELD, row_values
from django_fluvius.registry import domains, resolve_model

if TYPE_CHECKING:
    from django_fluvius.delivery.projections import AsyncProjection
    from django_fluvius.protocols import DomainProtocol
    from django_fluvius.write.aggregate import Aggregate

logger = logging.getLogger("django_fluvius.rebuild")

DEFAULT_BATCH_SIZE = 500
# Events fetched from the database per round trip while streaming one batch.
FETCH_SIZE = 5000


# -- reading and folding aggregates in batches ----------------------------------------


class AggregateScanner:
    """Aggregates of some resources of one domain, folded from their events, batch by batch."""

    def __init__(self, domain_class: type[DomainProtocol], resources: Sequence[str] | None = None, *,
                 using: str | None = None):
        self.domain_class = domain_class
        self.namespace = domain_class.__namespace__
        self.aggregate_class = domain_class.__aggregate__
        self.resources = list(resources) if resources is not None else None
        self.store = EventStore(using)

    def _streams(self) -> models.QuerySet:
        qs = self.store.events.filter(namespace=self.namespace)
        if self.resources is not None:
            qs = qs.filter(resource__in=self.resources)
        return qs

    def count_events(self) -> int:
        return self._streams().count()

    def count_aggregates(self) -> int:
        return self._streams().filter(version=1).count()

    def next_ids(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        """The next ``limit`` aggregate ids after ``after``, in id order (the rebuild's cursor order)."""
        qs = self._streams().filter(version=1)
        if after is not None:
            qs = qs.filter(aggregate_id__gt=after)
        return list(qs.order_by("aggregate_id").values_list("aggregate_id", flat=True)[:limit])

    def fold(self, ids: Sequence[uuid.UUID], *,
             on_error: Callable[[uuid.UUID, Exception], None] | None = None,
             observe: Callable[[Aggregate, Event], None] | None = None) -> Iterator[Aggregate]:
        """Each aggregate of ``ids`` folded to its latest version (``.event_count`` set).

        A bad event raises ``EventDecodeError`` naming it; with ``on_error`` the
        aggregate is reported and skipped instead. ``observe(aggregate, event)``
        sees the aggregate after each event (to check intermediate states).
        """
        current: Aggregate | None = None
        broken: uuid.UUID | None = None
        count = 0
        make = self.aggregate_class
        for event in self._decoded(ids, on_error):
            if isinstance(event, _Broken):
                broken = event.aggregate_id
                if current is not None and current.id == broken:
                    current = None
                continue
            if event.aggregate_id == broken:
                continue
            if current is None or event.aggregate_id != current.id:
                if current is not None:
                    current.event_count = count
                    yield current
                current = make(event.aggregate_id, event.resource)
                count = 0
            try:
                if event.version != current.version + 1:
                    raise EventDecodeError(
                        f"The stream of {self.namespace} aggregate {event.aggregate_id} jumps from version "
                        f"{current.version} to {event.version} (event {event.evt_key!r}).",
                        aggregate_id=str(event.aggregate_id), version=event.version, evt_key=event.evt_key)
                check_foldable(current, event)
                current.fold(event)
                if observe is not None:
                    observe(current, event)
            except EventDecodeError as exc:
                if on_error is None:
                    raise
                on_error(event.aggregate_id, exc)
                broken, current = event.aggregate_id, None
                continue
            count += 1
        if current is not None:
            current.event_count = count
            yield current

    def _decoded(self, ids: Sequence[uuid.UUID], on_error: Any) -> Iterator[Any]:
        """Decoded events of these aggregates in (aggregate id, version) order, streamed."""
        qs = self.store.events.filter(aggregate_id__in=list(ids)).order_by("aggregate_id", "version")
        decode = self.store.decode
        for event in stored_events(qs, self.store.using):
            try:
                yield decode(event)
            except EventDecodeError as exc:
                if on_error is None:
                    raise
                on_error(event.aggregate_id, exc)
                yield _Broken(event.aggregate_id)


_EVENT_ATTNAMES = tuple(f.attname for f in Event._meta.concrete_fields)


def stored_events(qs: models.QuerySet, using: str) -> Iterator[Event]:
    """Stream ``Event`` instances of ``qs`` (every field loaded), cheaply.

    Rows come from ``values_list`` (the fields' own conversions) and become
    instances the way ``Model.from_db`` makes them, minus ``__init__``'s per-field
    bookkeeping and its signals (events are never initialised with side effects):
    about half the cost per event, which is most of a rebuild's time.
    """
    new = Event.__new__
    names = _EVENT_ATTNAMES
    for row in qs.values_list(*names).iterator(chunk_size=FETCH_SIZE):
        event = new(Event)
        attrs = event.__dict__
        attrs.update(zip(names, row, strict=True))
        state = ModelState()
        state.adding = False
        state.db = using
        attrs["_state"] = state
        yield event


@dataclass
class _Broken:
    aggregate_id: uuid.UUID


# -- writing projection rows ----------------------------------------------------------


@cache
def _columns(model: type[models.Model]) -> tuple[models.Field, ...]:
    pk = model._meta.pk
    return (pk, *(f for f in model._meta.concrete_fields if not f.primary_key))


def _has_version(model: type[models.Model]) -> bool:
    return any(f.attname == VERSION_FIELD for f in model._meta.concrete_fields)


@cache
def _upsert_prefix(model: type[models.Model], vendor: str, quote: Any) -> tuple[str, str]:
    if vendor == "mysql":
        return _mysql_upsert_prefix(model, quote)
    fields = _columns(model)
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    cols = ", ".join(quote(f.column) for f in fields)
    head = f"INSERT INTO {table} ({cols}) VALUES "
    sets = ", ".join(f"{quote(f.column)} = EXCLUDED.{quote(f.column)}" for f in fields[1:])
    tail = f" ON CONFLICT ({pk}) DO UPDATE SET {sets}"
    if _has_version(model):
        # Never replace a row a command wrote meanwhile with the older state folded here.
        tail += f" WHERE {table}.{quote(VERSION_FIELD)} <= EXCLUDED.{quote(VERSION_FIELD)}"
    return head, tail


def _mysql_upsert_prefix(model: type[models.Model], quote: Any) -> tuple[str, str]:
    """MariaDB / MySQL: ``ON DUPLICATE KEY UPDATE``, each column guarded by the version.

    Assignments run left to right and later ones see earlier results, so the
    version column, which the guards compare, is assigned last.
    """
    fields = _columns(model)
    table = quote(model._meta.db_table)
    cols = ", ".join(quote(f.column) for f in fields)
    head = f"INSERT INTO {table} ({cols}) VALUES "
    rest = sorted(fields[1:], key=lambda f: f.attname == VERSION_FIELD)
    if _has_version(model):
        version = quote(VERSION_FIELD)
        sets = ", ".join(f"{quote(f.column)} = IF({version} <= VALUES({version}), VALUES({quote(f.column)}),"
                         f" {quote(f.column)})" for f in rest)
    else:
        sets = ", ".join(f"{quote(f.column)} = VALUES({quote(f.column)})" for f in rest)
    pk = quote(model._meta.pk.column)
    return head, f" ON DUPLICATE KEY UPDATE {sets or f'{pk} = {pk}'}"


def _write_rows_one_by_one(model: type[models.Model], rows: list[list[Any]], connection: Any) -> None:
    """MariaDB / MySQL, tables with unique keys besides the pk: ON DUPLICATE KEY would
    update whichever row another key matches, so each row is an UPDATE (version-guarded)
    or, when its pk is new, an INSERT that raises on a clash like PostgreSQL's upsert."""
    quote = connection.ops.quote_name
    fields = _columns(model)
    table, pk = quote(model._meta.db_table), quote(model._meta.pk.column)
    version_at = next((i for i, f in enumerate(fields) if f.attname == VERSION_FIELD), None)
    guard = f" AND {quote(VERSION_FIELD)} <= %s" if version_at is not None else ""
    update = (f"UPDATE {table} SET " + ", ".join(f"{quote(f.column)} = %s" for f in fields[1:])
              + f" WHERE {pk} = %s{guard}")
    insert = (f"INSERT INTO {table} ({', '.join(quote(f.column) for f in fields)})"
              f" VALUES ({', '.join(['%s'] * len(fields))})")
    with connection.cursor() as cursor:
        for row in rows:
            cursor.execute(update, [*row[1:], row[0], *([row[version_at]] if version_at is not None else [])])
            if cursor.rowcount:
                continue
            cursor.execute(f"SELECT 1 FROM {table} WHERE {pk} = %s", [row[0]])
            if cursor.fetchone() is None:  # absent (not merely newer than this state): insert it
                cursor.execute(insert, row)


def _prep(field: models.Field, value: Any, connection: Any) -> Any:
    if value is not None and not isinstance(field, models.JSONField):
        value = field.to_python(value)
    return field.get_db_prep_save(value, connection)


class RowWriter:
    """Upserts (version-guarded) and deletes of projection rows, buffered per model."""

    def __init__(self, using: str):
        self.using = using
        self.rows: dict[type[models.Model], list[list[Any]]] = {}
        self.deletes: dict[type[models.Model], list[tuple[Any, int]]] = {}
        self.written = 0
        self.deleted = 0

    def put(self, model: type[models.Model], aggregate: Aggregate) -> None:
        fields = aggregate.projection(aggregate.resource)
        if fields is None:
            self.deletes.setdefault(model, []).append((aggregate.id, aggregate.version))
            return
        values = row_values(model, aggregate, fields)
        connection = connections[self.using]
        row = []
        for f in _columns(model):
            if f.primary_key:
                value = aggregate.id
            elif f.attname in values:
                value = values[f.attname]
            else:
                # A column the state does not mention gets its default, as a fresh insert would.
                value = f.get_default()
            row.append(_prep(f, value, connection))
        self.rows.setdefault(model, []).append(row)

    def flush(self) -> None:
        connection = connections[self.using]
        for model, rows in self.rows.items():
            fields = _columns(model)
            if connection.vendor == "mysql" and sql.unique_beyond_pk(model):
                _write_rows_one_by_one(model, rows, connection)
                self.written += len(rows)
                continue
            head, tail = _upsert_prefix(model, connection.vendor, connection.ops.quote_name)
            size = max(1, connection.ops.bulk_batch_size(list(fields), rows))
            marks = "(" + ", ".join(["%s"] * len(fields)) + ")"
            with connection.cursor() as cursor:
                for start in range(0, len(rows), size):
                    chunk = rows[start:start + size]
                    params = [value for row in chunk for value in row]
                    cursor.execute(head + ", ".join([marks] * len(chunk)) + tail, params)
            self.written += len(rows)
        self.rows.clear()
        for model, items in self.deletes.items():
            manager = model._base_manager.db_manager(self.using)
            guarded = _has_version(model)
            for pk, version in items:
                qs = manager.filter(pk=pk, **({f"{VERSION_FIELD}__lte": version} if guarded else {}))
                _, per_model = qs.delete()
                self.deleted += per_model.get(model._meta.label, 0)
        self.deletes.clear()


# -- targets --------------------------------------------------------------------------


@dataclass
class BatchReport:
    """What one committed batch did; ``on_batch`` callbacks receive it (inside its transaction)."""

    target: str
    number: int
    aggregates: int
    events: int
    cursor: str
    run: RebuildRun


class RebuildTarget:
    """Something ``fluvius_rebuild`` can rebuild: a name, a size and a batch loop."""

    name: str

    def total_events(self, using: str) -> int:
        raise NotImplementedError

    def run_batches(self, run: RebuildRun, *, batch_size: int, using: str,
                    on_batch: Callable[[BatchReport], None] | None) -> Iterator[BatchReport]:
        raise NotImplementedError

    def finish(self, run: RebuildRun, *, using: str) -> None:
        """Once every batch is done (e.g. drop rows no aggregate accounts for)."""


@dataclass
class ResourceTarget(RebuildTarget):
    """An inline resource projection: fold each aggregate, write its row."""

    domain_class: type[DomainProtocol]
    resource: str
    model: type[models.Model] = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"{self.domain_class.__namespace__}.{self.resource}"
        self.model = self.domain_class.resource_model(self.resource)

    def scanner(self, using: str) -> AggregateScanner:
        return AggregateScanner(self.domain_class, [self.resource], using=using)

    def total_events(self, using: str | None = None) -> int:
        return self.scanner(using or fluvius_settings.DATABASE).count_events()

    def run_batches(self, run: RebuildRun, *, batch_size: int, using: str,
                    on_batch: Callable[[BatchReport], None] | None) -> Iterator[BatchReport]:
        scanner = self.scanner(using)
        cursor = uuid.UUID(run.cursor) if run.cursor else None
        while True:
            ids = scanner.next_ids(cursor, batch_size)
            if not ids:
                return
            with transaction.atomic(using=using):
                writer = RowWriter(using)
                events = aggregates = 0
                for aggregate in scanner.fold(ids):
                    writer.put(self.model, aggregate)
                    events += aggregate.event_count
                    aggregates += 1
                writer.flush()
                cursor = ids[-1]
                run.cursor = str(cursor)
                run.events_done += events
                run.aggregates_done += aggregates
                run.rows_written += writer.written
                run.rows_deleted += writer.deleted
                run.batches += 1
                run.updated = timezone.now()
                run.save(using=using)
                report = BatchReport(self.name, run.batches, aggregates, events, run.cursor, run)
                if on_batch is not None:
                    on_batch(report)
            yield report

    def finish(self, run: RebuildRun, *, using: str) -> None:
        """Delete rows whose id is no aggregate of any resource kept in this model."""
        heads = Event.objects.using(using).filter(owners_of(self.model, self), aggregate_id=OuterRef("pk"),
                                                  version=1)
        with transaction.atomic(using=using):
            deleted = self.model._base_manager.db_manager(using).filter(~Exists(heads)).delete()[0]
            run.rows_deleted += deleted
            run.save(using=using)


def owners_of(model: type[models.Model], target: ResourceTarget | None = None) -> Q:
    """Which streams may own a row of ``model``: every (namespace, resource) whose model it is."""
    owners = Q(pk__in=[])
    pairs = set()
    for domain in domains:
        for resource, value in (getattr(domain, "__resources__", {}) or {}).items():
            try:
                if resolve_model(value) is model:
                    pairs.add((domain.__namespace__, resource))
            except Exception:  # noqa: BLE001 - a broken resource is the system checks' business
                continue
    if target is not None:  # a domain class that is not registered (a test's, a script's)
        pairs.add((target.domain_class.__namespace__, target.resource))
    for namespace, resource in sorted(pairs):
        owners |= Q(namespace=namespace, resource=resource)
    return owners


# -- async projections (projections.AsyncProjection) -----------------------------------------

SHADOW_SCHEMA = "fluvius_rebuild"
SHADOW_SUFFIX = "@rebuild"


class ProjectionTarget(RebuildTarget):
    """An async projection, rebuilt *aside* and swapped in.

    On PostgreSQL, when the projection declares its ``models``, the rebuild
    creates copies of their tables in the schema ``fluvius_rebuild`` (``CREATE
    TABLE ... (LIKE ... INCLUDING ALL)``) and runs a twin of the projection
    (its own checkpoint, ``<name>@rebuild``) with ``search_path`` pointing
    there: the twin's writes land in the copies, batch by batch, each batch
    committing with the twin's checkpoint (so a crash resumes). Live workers
    keep the live tables current meanwhile. The swap is one short transaction:
    lock the live checkpoint, catch the twin up to the feed's end, replace the
    live rows with the copy's (``DELETE`` + ``INSERT ... SELECT``: readers see
    the old rows until it commits, then the new ones; no DDL on live tables, so
    foreign keys, indexes and grants stay), move the live checkpoint to the
    twin's, and drop the copies.

    Elsewhere (SQLite, or a projection with no ``models``) the reset and the
    whole catch-up run in one transaction: readers keep the old rows until it
    commits; a crash rolls back to them and the next run starts over.
    """

    kind = "async"

    def __init__(self, projection_class: type[AsyncProjection]):
        self.projection_class = projection_class
        self.name = projection_class.name

    def total_events(self, using: str) -> int:

        cls = self.projection_class
        qs = Event.objects.using(using)
        if cls.namespace is not None:
            qs = qs.filter(namespace=cls.namespace)
        keys = cls.read_keys()
        if keys is not None:
            qs = qs.filter(evt_key__in=upcasters.stored_keys(keys, cls.namespace))
        return qs.count()

    def models(self) -> list[type[models.Model]]:
        return [resolve_model(m) for m in self.projection_class.models]

    def aside(self, using: str) -> bool:
        return connections[using].vendor == "postgresql" and bool(self.projection_class.models)

    def run_batches(self, run: RebuildRun, *, batch_size: int, using: str,
                    on_batch: Callable[[BatchReport], None] | None) -> Iterator[BatchReport]:
        if self.aside(using):
            yield from self._aside(run, batch_size=batch_size, using=using, on_batch=on_batch)
        else:
            yield from self._in_one_transaction(run, batch_size=batch_size, using=using, on_batch=on_batch)

    # -- shared -------------------------------------------------------------------------

    def _step(self, projection: Any, run: RebuildRun, batch_size: int, using: str,
              on_batch: Callable[[BatchReport], None] | None) -> BatchReport | None:
        """One batch of ``projection`` inside the caller's transaction; None when caught up."""

        result = projection.run_batch(wait=True, limit=batch_size)
        if result.status == IDLE:
            return None
        if result.status != APPLIED:
            raise RebuildError(f"Rebuilding {self.name} failed after position {result.position} "
                               f"({result.status}): {result.error!r}")
        run.events_done += result.applied
        run.batches += 1
        run.cursor = str(result.position)
        run.updated = timezone.now()
        run.save(using=using)
        report = BatchReport(self.name, run.batches, 0, result.applied, run.cursor, run)
        if on_batch is not None:
            on_batch(report)
        return report

    def _in_one_transaction(self, run: RebuildRun, *, batch_size: int, using: str,
                            on_batch: Callable[[BatchReport], None] | None) -> Iterator[BatchReport]:
        run.cursor, run.events_done, run.batches = "", 0, 0
        with transaction.atomic(using=using):
            projection = self.projection_class(using=using)
            projection.reset()
            while (report := self._step(projection, run, batch_size, using, on_batch)) is not None:
                yield report

    # -- aside and swap (PostgreSQL) ------------------------------------------------------

    def twin(self) -> type[AsyncProjection]:
        cls = self.projection_class
        return type(f"{cls.__name__}Rebuild", (cls,),
                    {"name": cls.name + SHADOW_SUFFIX, "__module__": cls.__module__}, register=False)

    def _tables(self, using: str) -> tuple[str, list[tuple[str, str]]]:
        """(live schema, [(quoted live table, quoted shadow table)])."""
        connection = connections[using]
        quote = connection.ops.quote_name
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_schema()")
            live_schema = cursor.fetchone()[0]
        pairs = [(f"{quote(live_schema)}.{quote(m._meta.db_table)}", f"{quote(SHADOW_SCHEMA)}.{quote(m._meta.db_table)}")
                 for m in self.models()]
        return live_schema, pairs

    def _shadow_path(self, using: str, live_schema: str) -> None:
        quote = connections[using].ops.quote_name
        with connections[using].cursor() as cursor:
            cursor.execute(f"SET LOCAL search_path TO {quote(SHADOW_SCHEMA)}, {quote(live_schema)}")

    def _aside(self, run: RebuildRun, *, batch_size: int, using: str,
               on_batch: Callable[[BatchReport], None] | None) -> Iterator[BatchReport]:

        connection = connections[using]
        live_schema, tables = self._tables(using)
        twin = self.twin()
        shadow_name = twin.name
        resuming = run.cursor != "" and Checkpoint.objects.using(using).filter(name=shadow_name).exists()
        if resuming:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = ANY(%s)",
                               [SHADOW_SCHEMA, [m._meta.db_table for m in self.models()]])
                resuming = cursor.fetchone()[0] == len(tables)
        if not resuming:
            run.cursor, run.events_done, run.batches = "", 0, 0
            with transaction.atomic(using=using), connection.cursor() as cursor:
                cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {connection.ops.quote_name(SHADOW_SCHEMA)}")
                for live, shadow in tables:
                    cursor.execute(f"DROP TABLE IF EXISTS {shadow}")
                    cursor.execute(f"CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL)")
                self._shadow_path(using, live_schema)
                twin(using=using).reset()
                run.cursor = "0"
                run.save(using=using)
        projection = twin(using=using)
        while True:
            with transaction.atomic(using=using):
                self._shadow_path(using, live_schema)
                report = self._step(projection, run, batch_size, using, on_batch)
            if report is None:
                break
            yield report
        self._swap(projection, tables, run, using=using, live_schema=live_schema, batch_size=batch_size)

    def _swap(self, twin: Any, tables: list[tuple[str, str]], run: RebuildRun, *, using: str,
              live_schema: str, batch_size: int) -> None:
        from django.core.management.color import no_style


        connection = connections[using]
        with transaction.atomic(using=using):
            live = self.projection_class(using=using)
            live.checkpoint()
            live_cp = Checkpoint.objects.using(using).select_for_update().get(name=self.name)
            # Events committed since the last batch: the twin catches up while live workers wait.
            self._shadow_path(using, live_schema)
            while self._step(twin, run, batch_size, using, None) is not None:
                pass
            shadow_cp = Checkpoint.objects.using(using).get(name=twin.name)
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL search_path TO DEFAULT")
                for live_table, shadow in tables:
                    cursor.execute(f"DELETE FROM {live_table}")
                    cursor.execute(f"INSERT INTO {live_table} SELECT * FROM {shadow}")
                for statement in connection.ops.sequence_reset_sql(no_style(), self.models()):
                    cursor.execute(statement)
            live_cp.txid, live_cp.position = shadow_cp.txid, shadow_cp.position
            live_cp.events_applied = shadow_cp.events_applied
            live_cp.failures, live_cp.last_error, live_cp.updated = 0, "", timezone.now()
            live_cp.save(using=using)
            shadow_cp.delete()
        with transaction.atomic(using=using), connection.cursor() as cursor:
            for _live, shadow in tables:
                cursor.execute(f"DROP TABLE IF EXISTS {shadow}")


def projection_targets(name: str) -> list[RebuildTarget] | None:
    registry = async_projections
    if name == "*":
        return [ProjectionTarget(cls) for cls in registry]
    if name in registry:
        return [ProjectionTarget(registry.get(name))]
    return None


# -- finding targets by name ----------------------------------------------------------

# Resolvers of target names other than resources: name (or "*": all) -> targets or None.
target_resolvers: list[Callable[[str], list[RebuildTarget] | None]] = [projection_targets]


def resource_targets(domain_class: type[DomainProtocol]) -> list[RebuildTarget]:
    return [ResourceTarget(domain_class, resource) for resource in domain_class.__resources__
            if domain_class.projection_model(resource) is not None]


def resolve_targets(names: Iterable[str] = ()) -> list[RebuildTarget]:
    """Targets by name: ``user``, ``app-user.user``, a namespace (all its resources), or a
    projection name a resolver knows; every inline resource of every domain when no name is given."""
    names = list(names)
    if not names:
        targets: list[RebuildTarget] = []
        for domain in domains:
            targets += resource_targets(domain)
        for resolver in target_resolvers:
            targets += resolver("*") or []
        return targets
    targets = []
    for name in names:
        targets += _resolve_one(name)
    unique: dict[str, RebuildTarget] = {}
    for target in targets:
        unique.setdefault(target.name, target)
    return list(unique.values())


def _resolve_one(name: str) -> list[RebuildTarget]:
    for resolver in target_resolvers:
        found = resolver(name)
        if found:
            return found
    if name in domains:
        return resource_targets(domains.get(name))
    try:
        domain_class, resource = domains.find_resource(name)
    except UnknownResource as exc:
        known = sorted({t.name for t in resolve_targets()} | {d.__namespace__ for d in domains})
        # Said for fluvius_verify's targets as well as for rebuilds: no "rebuild" in it.
        raise RebuildError(f"{exc.message} Known: {', '.join(known) or 'none'}.") from None
    return [ResourceTarget(domain_class, resource)]


# -- running --------------------------------------------------------------------------


def start_run(target: RebuildTarget, *, using: str, restart: bool = False) -> RebuildRun:
    """The run to continue (a crashed or failed one) or a fresh one."""
    run = RebuildRun.objects.using(using).filter(name=target.name).first()
    total = target.total_events(using)
    if run is None:
        run = RebuildRun(name=target.name)
    elif restart or run.status == RebuildRun.Status.DONE:
        run = RebuildRun(id=run.id, name=target.name)
    else:
        logger.info("Resuming the rebuild of %s after %s (%s events done).", target.name, run.cursor,
                    run.events_done)
    run.status = RebuildRun.Status.RUNNING
    run.total_events = total
    run.error = ""
    run.finished = None
    run.updated = timezone.now()
    run.save(using=using)
    return run


def rebuild(names: Iterable[str] = (), *, batch_size: int = DEFAULT_BATCH_SIZE, restart: bool = False,
            using: str | None = None, stream: TextIO | None = None, progress: bool = True,
            on_batch: Callable[[BatchReport], None] | None = None,
            targets: Sequence[RebuildTarget] | None = None) -> list[RebuildRun]:
    """Rebuild the named targets (all when none is named); resume a crashed run unless ``restart``.

    ``on_batch`` runs inside each batch's transaction, after its writes: an
    exception there rolls that batch back (what a crash does).
    """
    using = using or fluvius_settings.DATABASE
    if batch_size < 1:
        raise RebuildError(f"The batch size must be at least 1, not {batch_size}.")
    runs = []
    for target in (targets if targets is not None else resolve_targets(names)):
        with exclusive(target.name, using):
            run = start_run(target, using=using, restart=restart)
            bar = Progress(target.name, run.total_events, done=run.events_done, stream=stream) if progress else None
            try:
                for report in target.run_batches(run, batch_size=batch_size, using=using, on_batch=on_batch):
                    if bar is not None:
                        bar.update(report.events, report.aggregates)
                target.finish(run, using=using)
            except BaseException as exc:
                _mark_failed(run, exc, using)
                raise
            run.status = RebuildRun.Status.DONE
            run.finished = run.updated = timezone.now()
            run.save(using=using)
            if bar is not None:
                bar.finish()
            runs.append(run)
    return runs


# vendor -> (take the session lock without waiting: true when taken, release it). Session
# locks: the database drops them when the holder's connection ends, so a killed rebuild
# never blocks the next one. SQLite has one writer at a time anyway.
SESSION_LOCKS: dict[str, tuple[str, str]] = {
    "postgresql": ("SELECT pg_try_advisory_lock(hashtext(%s))", "SELECT pg_advisory_unlock(hashtext(%s))"),
    "mysql": ("SELECT GET_LOCK(%s, 0)", "SELECT RELEASE_LOCK(%s)"),
}


@contextmanager
def exclusive(name: str, using: str) -> Iterator[None]:
    """One rebuild of a target at a time, across processes (a session lock, ``SESSION_LOCKS``)."""
    connection = connections[using]
    statements = SESSION_LOCKS.get(connection.vendor)
    if statements is None:
        yield
        return
    take, release = statements
    # MariaDB / MySQL lock names are at most 64 characters: a digest of long ones.
    key = f"fluvius_rebuild:{name}"
    if len(key) > 64:
        key = "fluvius_rebuild:" + hashlib.sha1(name.encode()).hexdigest()
    with connection.cursor() as cursor:
        cursor.execute(take, [key])
        if not cursor.fetchone()[0]:
            raise RebuildError(f"{name} is being rebuilt by another process right now; wait for it to finish.",
                               code="rebuild_running")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(release, [key])


def _mark_failed(run: RebuildRun, exc: BaseException, using: str) -> None:
    try:
        RebuildRun.objects.using(using).filter(pk=run.pk).update(
            status=RebuildRun.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:10_000],
            updated=timezone.now())
    except Exception:  # noqa: BLE001 - a dead connection: the row stays "running", resume works alike
        logger.exception("Could not record the failure of the rebuild of %s.", run.name)
