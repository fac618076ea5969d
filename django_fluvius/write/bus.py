"""The command bus: one command, one transaction.

``CommandBus(domain).handle(command)`` runs the command through the middleware
chain of ``FLUVIUS['COMMAND_MIDDLEWARE']`` (outermost first; the framework's own
middleware is in ``write/middleware.py``), then, inside one transaction (Django's
``atomic``, begun on MariaDB without autocommit toggles: ``events.sql.command_transaction``): loads the
aggregate (the tenant check is part of loading), runs the command's guards
(``Command.add_guard``: object-level checks middleware registers), checks the
expected version, runs the ``@action``, appends the event, updates the inline
projection and writes the command log — all in one write batch; delivery is
told through ``events_appending`` and wakes its subscriptions once the
transaction commits (it writes nothing here: the event log is the outbox).

A race lost at the database (another writer took the version first) comes back
from the unique (aggregate_id, version) constraint and leaves as
``ConcurrencyConflict``. A transaction the database ended to break a deadlock
(InnoDB's unique-key locks) is run again, unless a caller's transaction encloses
the bus's. Any error rolls everything back; a rejected command
still gets its row in the command log, written after the rollback — whether the
error came from the core or from a middleware (a denied permission, say): the
log is written around the whole chain, once per command.

Invariant: the bus sits on the write side, above the event store and below
everything else. It receives the domain it serves and names it only through the
``BusDomain`` protocol (the domain writes the inline projection row and runs the
after-append hooks); delivery learns of appended events through the
``events_appending`` signal, sent inside the transaction with the write batch.
The bus imports neither the read side nor delivery.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.core.signals import setting_changed
from django.db import DatabaseError, IntegrityError, transaction
from django.dispatch import Signal
from django.utils import timezone

from django_fluvius.conf import fluvius_settings
from django_fluvius.events import sql
from django_fluvius.events.databases import is_deadlock
from django_fluvius.events.store import is_stream_conflict
from django_fluvius.events.upcasting import current_version as current_schema_version
from django_fluvius.exceptions import ConcurrencyConflict, FluviusError
from django_fluvius.models import CommandLog, Event
from django_fluvius.privacy import copies as personal
from django_fluvius.text import storable
from django_fluvius.write.cache import aggregate_cache

if TYPE_CHECKING:
    import datetime

    from django_fluvius.write.aggregate import ActionSpec, Aggregate

logger = logging.getLogger("django_fluvius.bus")

Handler = Callable[["Command"], "CommandResult"]

# How many times a command runs when the database keeps ending its transaction in a deadlock,
# and the longest pause before the next try (random below it, so the runs do not meet again).
DEADLOCK_TRIES = 5
DEADLOCK_PAUSE = 0.02
Guard = Callable[["Command", "Aggregate"], None]


@dataclass(eq=False)
class Command:
    """A validated request to run one action, made by ``Domain.create_command``."""

    namespace: str
    key: str
    payload: dict[str, Any]
    spec: ActionSpec
    context: Any
    aggregate_id: uuid.UUID | None = None
    expected_version: int | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    idempotency_key: str | None = None
    created: datetime.datetime = field(default_factory=timezone.now)
    # The metadata of its events and log row, built once by the bus (CommandBus.metadata),
    # and its JSON text (serialized once for all of them).
    _metadata: dict[str, Any] | None = field(default=None, init=False, repr=False)
    _metadata_json: str | None = field(default=None, init=False, repr=False)
    # Checks run inside the transaction once the aggregate is loaded, before the action.
    guards: tuple[Guard, ...] = field(default=(), init=False, repr=False)
    # perf_counter() when the bus took the command (the command log's duration).
    _started: float = field(default=0.0, init=False, repr=False)

    def add_guard(self, guard: Guard) -> None:
        """Have the bus call ``guard(command, aggregate)`` right after loading the aggregate.

        For checks that need the aggregate (object permissions): it runs inside the
        command's transaction, before the expected-version check and the action, on
        every try. Raising a ``FluviusError`` (e.g. ``PermissionDenied``) rejects the
        command; nothing is stored. Adding the same guard twice keeps one.
        """
        if guard not in self.guards:
            self.guards = (*self.guards, guard)

    @property
    def resource(self) -> str | None:
        return self.spec.resources[0] if self.spec.resources else None

    def __repr__(self) -> str:
        return f"<Command {self.namespace}:{self.key} {self.aggregate_id or 'new'}>"


@dataclass(eq=False)
class CommandResult:
    """What a processed command produced."""

    command: Command
    aggregate_id: uuid.UUID
    resource: str
    version: int
    events: list[Event]
    state: dict[str, Any]
    # How long the command took, every try included (set by middleware.TimingMiddleware).
    duration_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": self.command.key,
            "command_id": str(self.command.id),
            "aggregate_id": str(self.aggregate_id),
            "resource": self.resource,
            "version": self.version,
            "events": [event_as_dict(e) for e in self.events],
            "state": self.state,
        }


def event_as_dict(event: Event) -> dict[str, Any]:
    return {
        "position": event.position,
        "namespace": event.namespace,
        "resource": event.resource,
        "aggregate_id": str(event.aggregate_id),
        "version": event.version,
        "evt_key": event.evt_key,
        "schema_version": event.schema_version,
        "payload": event.payload,
        "metadata": event.metadata,
        "created": event.created.isoformat() if event.created else None,
    }


def to_json_value(value: Any) -> Any:
    """What the value reads back as from a JSON column, so fresh and reloaded state agree."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def json_once(value: Any) -> tuple[Any, str]:
    """(what the value reads back as from a JSON column, its JSON text): serialized once."""
    text = json.dumps(value, cls=DjangoJSONEncoder)
    return json.loads(text), text


# Sent inside the command's transaction once its events are built and before the write batch
# is flushed: sender=CommandBus, events= (the new Event rows), using=, batch= (an
# ``events.sql.WriteBatch`` a receiver may add rows to, written in the same statement).
# Delivery connects to it (delivery/dispatch.py) to wake its relay on commit (it writes nothing).
events_appending = Signal(use_caching=True)


class BusDomain(Protocol):
    """What the bus needs of the domain it runs commands for (``django_fluvius.domain.Domain``)."""

    __namespace__: ClassVar[str]
    store: Any

    def load_for_command(self, command: Command, *, use_cache: bool = True) -> Aggregate: ...

    def project(self, aggregate: Aggregate, using: str, batch: Any = None) -> None: ...

    def event_metadata(self, command: Command) -> dict[str, Any]: ...

    def after_append(self, aggregate: Aggregate, events: list[Any]) -> None: ...

    def writes_after_append(self, aggregate: Aggregate, events: list[Any]) -> bool: ...


class StaleCache(Exception):
    """Internal: the aggregate cache was behind the store; the bus retries from the store."""


def build_chain(middleware: Sequence[Any], handler: Handler) -> Handler:
    """Wrap ``handler`` in the middleware, the first of the list outermost.

    A class in the list is instantiated (``active_middleware`` does it once per
    settings); an ``async def`` middleware (or one whose ``__call__`` is) gets an
    awaitable ``call_next`` and is driven from the bus's synchronous core.
    """
    call = handler
    for item in reversed(middleware):
        mw = item() if isinstance(item, type) else item
        call = _link(mw, call)
    return call


def _is_async(mw: Any) -> bool:
    return iscoroutinefunction(mw) or iscoroutinefunction(type(mw).__call__)


def _link(mw: Callable[[Command, Any], Any], call_next: Handler) -> Handler:
    if _is_async(mw):
        # The core stays synchronous (one code path): the middleware runs on an event
        # loop, and what it awaits runs back on this thread, in this transaction.
        run = async_to_sync(mw)
        acall_next = sync_to_async(call_next, thread_sensitive=True)

        def step(command: Command) -> CommandResult:
            return run(command, acall_next)
    else:
        def step(command: Command) -> CommandResult:
            return mw(command, call_next)

    step.__qualname__ = f"{getattr(mw, '__qualname__', type(mw).__qualname__)}->step"
    return step


_active: tuple[Any, ...] | None = None


def active_middleware() -> tuple[Any, ...]:
    """``FLUVIUS['COMMAND_MIDDLEWARE']`` with its classes instantiated: once, until the setting changes."""
    global _active
    active = _active
    if active is None:
        active = _active = tuple(item() if isinstance(item, type) else item
                                 for item in fluvius_settings.COMMAND_MIDDLEWARE)
    return active


def _reset_middleware(*, setting: str, **kwargs: Any) -> None:
    global _active
    if setting == "FLUVIUS":
        _active = None


setting_changed.connect(_reset_middleware)


class CommandBus:
    def __init__(self, domain: BusDomain):
        self.domain = domain
        self._chain: Handler | None = None
        self._chain_of: tuple[Any, ...] | None = None

    @property
    def using(self) -> str:
        return self.domain.store.using

    def chain(self) -> Handler:
        """The middleware chain around ``execute`` (built once per bus and settings)."""
        middleware = active_middleware()
        if self._chain is None or self._chain_of is not middleware:
            self._chain = build_chain(middleware, self.execute)
            self._chain_of = middleware
        return self._chain

    def handle(self, command: Command) -> CommandResult:
        """Run the command through the middleware and the core; log every outcome."""
        started = command._started = perf_counter()
        try:
            return self.chain()(command)
        except FluviusError as exc:
            self._log_outcome(command, started, CommandLog.Status.REJECTED, error=exc)
            raise
        except Exception as exc:
            self._log_outcome(command, started, CommandLog.Status.FAILED, error=exc)
            raise

    # -- the innermost handler ------------------------------------------------

    def execute(self, command: Command) -> CommandResult:
        started = command._started or perf_counter()
        use_cache = True
        deadlocks = 0
        while True:
            try:
                return self._commit(command, started, use_cache=use_cache)
            except StaleCache:
                # The cached state was behind the store: run once more from the store.
                use_cache = False
            except DatabaseError as exc:
                # The database rolled the whole transaction back to break a deadlock (InnoDB's
                # concurrent inserts of one unique key, say): nothing of it is stored, so it runs
                # again, from the store. Not inside a caller's transaction, which is gone too.
                deadlocks += 1
                if (deadlocks >= DEADLOCK_TRIES or not is_deadlock(exc)
                        or transaction.get_connection(self.using).in_atomic_block):
                    raise
                logger.info("%r: deadlock, running it again (try %d).", command, deadlocks + 1)
                use_cache = False
                time.sleep(random.uniform(0, DEADLOCK_PAUSE * deadlocks))

    def _commit(self, command: Command, started: float, *, use_cache: bool) -> CommandResult:
        domain = self.domain
        using = self.using
        pending: list[Event] = []
        aggregate = None
        try:
            with sql.command_transaction(using):
                aggregate = domain.load_for_command(command, use_cache=use_cache)
                try:
                    for guard in command.guards:
                        guard(command, aggregate)
                    self.check_expected_version(command, aggregate)
                    aggregate.context = command.context
                    payload = aggregate.run(command.spec, command.payload)
                except FluviusError:
                    if aggregate.from_cache and domain.store.current_version(aggregate.id) != aggregate.version:
                        raise StaleCache() from None
                    raise
                event = self.new_event(command, aggregate, payload)
                pending.append(event)
                aggregate.fold(event)
                batch = sql.WriteBatch(using)
                # Personal fields (Domain.__personal__) are stored sealed; the events,
                # projection and result keep the plaintext (privacy/copies.py).
                seal = personal.command_seal(command.namespace, aggregate, using, batch,
                                             fresh=aggregate.version == len(pending) and command.aggregate_id is None)
                for pending_event in pending:
                    batch.insert(pending_event, None if seal is None else {"payload": seal.mapping(pending_event.payload)})
                domain.project(aggregate, using, batch)
                result = CommandResult(
                    command=command,
                    aggregate_id=aggregate.id,
                    resource=aggregate.resource,
                    version=aggregate.version,
                    events=pending,
                    state=aggregate.state,
                )
                if fluvius_settings.COMMAND_LOG == "all":
                    entry = self._log_entry(command, started, CommandLog.Status.DONE, result=result,
                                            preserialize=True)
                    batch.insert(entry, None if seal is None else {"payload": seal.mapping(entry.payload)})
                self._cache_on_commit(aggregate, seal)
                # Delivery (delivery/dispatch.py, connected at start-up) schedules its wake-up
                # for the commit; it adds nothing to the batch (the event log is the outbox).
                if events_appending.receivers:
                    events_appending.send(CommandBus, events=pending, using=using, batch=batch)
                # Nothing written after the batch: on PostgreSQL its one statement may then be
                # the whole transaction, and commit alone (sql.WriteBatch.flush).
                batch.flush(last=not domain.writes_after_append(aggregate, pending))
                domain.after_append(aggregate, pending)
        except IntegrityError as exc:
            if aggregate is not None:
                aggregate_cache.evict(using, aggregate.id)
                if aggregate.from_cache:
                    raise StaleCache() from exc
            if pending and is_stream_conflict(domain.store, exc, pending):
                raise ConcurrencyConflict(
                    f"Aggregate {pending[0].aggregate_id} was changed concurrently: "
                    f"version {pending[0].version} is taken.",
                    expected_version=command.expected_version,
                ) from exc
            raise
        except BaseException:
            if aggregate is not None:
                aggregate_cache.evict(using, aggregate.id)
            raise
        return result

    def _cache_on_commit(self, aggregate: Aggregate, seal: personal.CommandSeal | None = None) -> None:
        using = self.using
        state = aggregate.state if seal is None else seal.mapping(aggregate.state)
        entry = (using, aggregate.id, self.domain.__namespace__, aggregate.resource, aggregate.version,
                 state, aggregate.created, aggregate.updated, aggregate.tenant)
        transaction.on_commit(lambda: aggregate_cache.put(*entry), using=using)

    @staticmethod
    def check_expected_version(command: Command, aggregate: Aggregate) -> None:
        expected = command.expected_version
        if expected is not None and expected != aggregate.version:
            raise ConcurrencyConflict(
                f"Expected version {expected} of {aggregate.id}, but it is at version "
                f"{aggregate.version}.",
                code="stale_version",
                expected_version=expected,
                actual_version=aggregate.version,
            )

    def metadata(self, command: Command) -> dict[str, Any]:
        """The command's metadata (built once per command: events and log share it)."""
        metadata = command._metadata
        if metadata is None:
            metadata = command._metadata = self.domain.event_metadata(command)
        return metadata

    def metadata_json(self, command: Command) -> str:
        text = command._metadata_json
        if text is None:
            text = command._metadata_json = json.dumps(self.metadata(command), cls=DjangoJSONEncoder)
        return text

    def new_event(self, command: Command, aggregate: Aggregate, payload: dict[str, Any]) -> Event:
        metadata = self.metadata(command)
        payload, payload_json = json_once(payload)
        event = Event(
            namespace=command.namespace,
            resource=aggregate.resource,
            aggregate_id=aggregate.id,
            version=aggregate.version + 1,
            evt_key=command.spec.evt_key,
            schema_version=current_schema_version(command.namespace, command.spec.evt_key),
            payload=payload,
            metadata=metadata,
            command_id=command.id,
            correlation_id=metadata.get("correlation_id") or "",
            causation_id=metadata.get("causation_id") or "",
            user=metadata.get("user") or "",
            # The aggregate's tenant (the one it was created in), whoever acts on it.
            tenant=aggregate.tenant or "",
            created=timezone.now(),
        )
        setattr(event, sql.PRESERIALIZED, {"payload": payload_json, "metadata": self.metadata_json(command)})
        return event

    def _log_entry(self, command: Command, started: float, status: str, *,
                   result: CommandResult | None = None, error: BaseException | None = None,
                   preserialize: bool = False) -> CommandLog:
        metadata = self.metadata(command)
        payload, payload_json = json_once(command.payload)
        entry = CommandLog(
            command_id=command.id,
            namespace=command.namespace,
            command=command.key,
            resource=(result.resource if result else command.resource) or "",
            aggregate_id=result.aggregate_id if result else command.aggregate_id,
            payload=payload,
            status=status,
            version=result.version if result else None,
            user=metadata.get("user") or "",
            tenant=(result.events[0].tenant if result and result.events else metadata.get("tenant")) or "",
            correlation_id=metadata.get("correlation_id") or "",
            causation_id=metadata.get("causation_id") or "",
            metadata=metadata,
            created=command.created,
            duration_ms=(perf_counter() - started) * 1000,
        )
        if preserialize:  # written as is by the batch (the failure path cleans the values first)
            setattr(entry, sql.PRESERIALIZED, {"payload": payload_json, "metadata": self.metadata_json(command)})
        if error is not None:
            entry.error_code = getattr(error, "code", None) or type(error).__name__
            entry.error_message = str(error)[:10_000]
        return entry

    def _log_outcome(self, command: Command, started: float, status: str, *,
                     error: BaseException | None = None) -> None:
        """Record a command that stored nothing; written after the rollback.

        The row cannot fail on what the client sent: NUL and lone surrogates (which
        PostgreSQL refuses, and which may be why the command failed) are replaced in
        the payload, metadata and error text. It is written in a savepoint, so a
        failure here never breaks an enclosing transaction (an Idempotency-Key's,
        ``ATOMIC_REQUESTS``).
        """
        entry = self._log_entry(command, started, status, error=error)
        entry.payload = storable(personal.seal_rejected(command.namespace, command.resource, command.aggregate_id,
                                                        entry.payload, self.using))
        entry.metadata = storable(entry.metadata)
        entry.error_message = storable(entry.error_message or "")
        entry.error_code = storable(entry.error_code or "")[:100]
        try:
            with transaction.atomic(using=self.using):
                sql.insert(entry, self.using)
        except Exception:  # noqa: BLE001 - e.g. a broken outer transaction; logging must not hide the error
            logger.exception("Could not write the command log for %r.", command)
