"""Given / when / then for aggregates, in memory or through the real bus, and projection assertions.

Two forms of the same scenario::

    from django_fluvius.testing import event, given

    # In memory: folds the given events and runs the action; no database at all.
    given(UserDomain, event("user-created", name="Jo", email="jo@example.com", active=True)) \\
        .when("deactivate-user").then(event("user-deactivated", active=False))

    # Through the real command bus and database (middleware, projections, handlers).
    given(UserDomain, database=True).when("create-user", name="Jo", email="bad") \\
        .then_error(DomainError, match="Invalid email")

Invariant: the in-memory form folds and validates exactly as the bus does (the
same payload serializer, upcasters and ``@apply`` folds), so a scenario that
passes in memory means the same thing against the database.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from django_fluvius.context import DomainContext
from django_fluvius.domain import Domain
from django_fluvius.events.snapshots import fold
from django_fluvius.events.upcasting import current_version
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.exceptions import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    FluviusError,
    WrongResource,
)
from django_fluvius.models import Event
from django_fluvius.read.projections import project_inline
from django_fluvius.write.bus import Command, CommandResult, to_json_value
from django_fluvius.write.cache import aggregate_cache

if TYPE_CHECKING:
    import datetime

    from django.db.models import Model

    from django_fluvius.write.aggregate import Aggregate

__all__ = [
    "AggregateScenario",
    "EventSpec",
    "StoredScenario",
    "assert_events",
    "assert_no_projection",
    "assert_projection",
    "assert_projection_current",
    "event",
    "given",
]

DomainLike = type[Domain] | Domain


# -- events as tests write them -------------------------------------------------------


@dataclass(frozen=True)
class EventSpec:
    """An event as a test names it: a key and a payload (plus, rarely, a schema version or time).

    Used both ways: as history (``given``) and as expectation (``then``). Payloads
    compare as JSON reads them back, so ``date(2025, 1, 2)`` equals ``"2025-01-02"``.
    """

    evt_key: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    # As history only: the schema version it was written with (default: the current one,
    # so give an older one to exercise upcasters) and when it happened (time travel).
    schema_version: int | None = None
    created: datetime.datetime | None = None

    def at(self, created: datetime.datetime) -> EventSpec:
        return replace(self, created=created)

    def written_as(self, schema_version: int) -> EventSpec:
        return replace(self, schema_version=schema_version)

    def matches(self, actual: Any) -> bool:
        return (self.evt_key == actual.evt_key
                and to_json_value(dict(self.payload)) == to_json_value(dict(actual.payload or {})))

    def __str__(self) -> str:
        return f"{self.evt_key} {to_json_value(dict(self.payload))}"


def event(evt_key: str, payload: Mapping[str, Any] | None = None, /, **fields: Any) -> EventSpec:
    """``event('user-renamed', name='Jo')`` or ``event('user-renamed', {'name': 'Jo'})``."""
    return EventSpec(evt_key, {**(payload or {}), **fields})


def _describe(actual: Any) -> str:
    if isinstance(actual, EventSpec):
        return str(actual)
    return f"{actual.evt_key} {to_json_value(dict(actual.payload or {}))}"


def assert_events(actual: Iterable[Any], *expected: EventSpec | str) -> None:
    """The events, in order, are exactly these (an ``EventSpec``, or just an evt_key)."""
    actual = list(actual)
    specs = [event(e) if isinstance(e, str) else e for e in expected]
    ok = len(actual) == len(specs) and all(
        spec.evt_key == a.evt_key if isinstance(raw, str) else spec.matches(a)
        for spec, raw, a in zip(specs, expected, actual, strict=False))
    if not ok:
        want = "\n".join(f"  {s if not isinstance(r, str) else r}" for s, r in zip(specs, expected, strict=True))
        got = "\n".join(f"  {_describe(a)}" for a in actual)
        raise AssertionError(f"Events differ.\nexpected:\n{want or '  (none)'}\ngot:\n{got or '  (none)'}")


# -- given / when / then ----------------------------------------------------------------


def _domain(domain: DomainLike, context: DomainContext | None = None, user: Any = None) -> Domain:
    if isinstance(domain, Domain):
        return domain
    if context is None:
        context = DomainContext.create(namespace=domain.__namespace__, user=user, source="test")
    return domain(context)


class AggregateScenario:
    """Given events, when a command, then events or an error — in memory, no database.

    Runs what the aggregate decides: payload validation, the ``@action`` (sync or
    async), resource and create rules, the expected version, ``@apply`` folds and
    upcasters. It does not run the command-bus middleware, projections or
    handlers: ``StoredScenario`` (``given(..., database=True)``) does.
    """

    database = False

    def __init__(self, domain: DomainLike, events: Iterable[EventSpec] = (), *,
                 aggregate_id: Any = None, resource: str | None = None,
                 context: DomainContext | None = None, user: Any = None):
        self.domain = _domain(domain, context, user)
        self.aggregate_id = uuid.UUID(str(aggregate_id)) if aggregate_id else uuid.uuid4()
        given_events = list(events)
        self.resource = resource or self._resource_of(given_events)
        self.history: list[Event] = []
        self.aggregate: Aggregate | None = None
        self.result: CommandResult | None = None
        self.error: BaseException | None = None
        self._given(given_events)

    # -- given --------------------------------------------------------------------

    def _resource_of(self, events: list[EventSpec]) -> str:
        """The resource of the create action whose event starts the history."""
        if events:
            for spec in self.domain.commands().values():
                if spec.create and spec.evt_key == events[0].evt_key and spec.resources:
                    return spec.resources[0]
        return self.domain.default_resource()

    def _to_event(self, spec: EventSpec, version: int) -> Event:
        namespace = self.domain.__namespace__
        return Event(
            namespace=namespace, resource=self.resource, aggregate_id=self.aggregate_id, version=version,
            evt_key=spec.evt_key,
            schema_version=spec.schema_version or current_version(namespace, spec.evt_key),
            payload=to_json_value(dict(spec.payload)),
            metadata={**self.domain.context.metadata(), "given": True},
            created=spec.created or timezone.now(),
        )

    def _given(self, events: list[EventSpec]) -> None:
        self.history = [self._to_event(spec, n) for n, spec in enumerate(events, start=1)]
        if self.history:
            self.aggregate = self._fold(self.history)

    def _fold(self, events: list[Event]) -> Aggregate:
        aggregate = self.domain.__aggregate__(self.aggregate_id, self.resource, context=self.domain.context)
        # Decode as the store would (renames, upcasters), on copies: history stays as written.
        return fold(aggregate, [upcasters.decode(_copy(e)) for e in events])

    # -- when ---------------------------------------------------------------------

    def when(self, key: str, payload: Mapping[str, Any] | None = None, /, *,
             expected_version: int | None = None, **fields: Any) -> AggregateScenario:
        """Run one command on the aggregate; an error is kept for ``then_error``, not raised.

        Chain ``when`` calls: each one's events join the history of the next.
        """
        self.result, self.error = None, None
        data = {**(payload or {}), **fields}
        try:
            command = self.domain.create_command(key, data, aggregate_id=self.aggregate_id,
                                                 expected_version=expected_version)
            self.result = self._process(command)
        except Exception as exc:  # noqa: BLE001 - kept for then_error / re-raised by then
            self.error = exc
        return self

    def _process(self, command: Command) -> CommandResult:
        spec = command.spec
        if spec.create:
            if self.history:
                raise ConcurrencyConflict(f"Aggregate {self.aggregate_id} already exists.",
                                          code="already_exists")
            self.resource = spec.resources[0] if spec.resources else self.domain.default_resource()
            aggregate = self.domain.__aggregate__(self.aggregate_id, self.resource, context=command.context)
        else:
            if not self.history:
                raise AggregateNotFound(f"No {self.domain.__namespace__} aggregate with id {self.aggregate_id}.")
            aggregate = self._fold(self.history)
            if not spec.applies_to(aggregate.resource):
                raise WrongResource(f"Command {spec.name!r} applies to {', '.join(spec.resources)}, "
                                    f"not to the {aggregate.resource!r} aggregate {aggregate.id}.")
        bus = self.domain.bus
        bus.check_expected_version(command, aggregate)
        aggregate.context = command.context
        payload = aggregate.run(spec, command.payload)
        new = bus.new_event(command, aggregate, payload)
        aggregate.fold(new)
        self.history.append(new)
        self.aggregate = aggregate
        return CommandResult(command=command, aggregate_id=aggregate.id, resource=aggregate.resource,
                             version=aggregate.version, events=[new], state=aggregate.state)

    # -- then ---------------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """The events the last ``when`` produced."""
        self._succeeded()
        assert self.result is not None
        return list(self.result.events)

    @property
    def state(self) -> dict[str, Any]:
        if self.aggregate is None:
            raise AssertionError("The aggregate has no events yet.")
        return self.aggregate.state

    @property
    def version(self) -> int:
        return self.aggregate.version if self.aggregate is not None else 0

    def _succeeded(self) -> None:
        if self.error is not None:
            raise AssertionError(f"The command failed: {type(self.error).__name__}: {self.error}") from self.error
        if self.result is None:
            raise AssertionError("No command was run: call .when(...) first.")

    def then(self, *expected: EventSpec | str) -> AggregateScenario:
        """The last command succeeded and produced exactly these events."""
        assert_events(self.events, *expected)
        return self

    def then_state(self, expected: Mapping[str, Any] | None = None, /, **fields: Any) -> AggregateScenario:
        """The aggregate's state holds these fields with these values (others may exist)."""
        want = to_json_value({**(expected or {}), **fields})
        have = to_json_value(self.state)
        wrong = {k: have.get(k, "<missing>") for k, v in want.items() if have.get(k, object()) != v}
        if wrong:
            raise AssertionError(f"State differs on {sorted(wrong)}: expected "
                                 f"{ {k: want[k] for k in wrong} }, got {wrong} (state: {have})")
        return self

    def then_error(self, error: type[BaseException] = FluviusError, match: str | None = None, *,
                   code: str | None = None, fields: Iterable[str] | None = None) -> AggregateScenario:
        """The last command was refused with this error (and stored nothing).

        ``match`` is a regular expression searched in the message, ``code`` the error's
        stable code, ``fields`` the payload fields a ``CommandValidationError`` names.
        """
        if self.error is None:
            got = ", ".join(_describe(e) for e in self.result.events) if self.result else "nothing"
            raise AssertionError(f"Expected {error.__name__}, but the command succeeded with: {got}")
        if not isinstance(self.error, error):
            raise AssertionError(f"Expected {error.__name__}, got {type(self.error).__name__}: "
                                 f"{self.error}") from self.error
        if match is not None and not re.search(match, str(self.error)):
            raise AssertionError(f"{type(self.error).__name__} message {str(self.error)!r} does not match "
                                 f"{match!r}")
        if code is not None and getattr(self.error, "code", None) != code:
            raise AssertionError(f"Expected code {code!r}, got {getattr(self.error, 'code', None)!r}")
        if fields is not None:
            named = set(getattr(self.error, "errors", {}) or {})
            if not isinstance(self.error, CommandValidationError) or named != set(fields):
                raise AssertionError(f"Expected errors on fields {sorted(fields)}, got {sorted(named)}")
        self._check_nothing_stored()
        return self

    def _check_nothing_stored(self) -> None:
        """Nothing to check in memory: a refused command never joins the history."""

    def then_projection(self, **fields: Any) -> AggregateScenario:
        raise AssertionError("Projections live in the database: use given(..., database=True).")


class StoredScenario(AggregateScenario):
    """The same scenario through the real command bus, in the test's database.

    The given events are appended to the event store (as history: they are not
    dispatched to handlers) and the resource's projection row is written from
    them; each ``when`` goes through ``domain.process_command`` with its
    middleware, transaction, projections, command log and dispatch.
    """

    database = True

    def _given(self, events: list[EventSpec]) -> None:
        super()._given(events)
        if not self.history:
            return
        store = self.domain.store
        with transaction.atomic(using=store.using):
            store.append(self.history)
            assert self.aggregate is not None
            project_inline(self.domain.projection_model(self.resource), self.aggregate, store.using)
        aggregate_cache.evict(store.using, self.aggregate_id)

    def when(self, key: str, payload: Mapping[str, Any] | None = None, /, *,
             expected_version: int | None = None, **fields: Any) -> StoredScenario:
        self._version_before = self.domain.store.current_version(self.aggregate_id)
        super().when(key, payload, expected_version=expected_version, **fields)
        return self

    def _process(self, command: Command) -> CommandResult:
        result = self.domain.process_command(command)
        self.history.extend(result.events)
        self.resource = result.resource
        self.aggregate = self.domain.load(result.aggregate_id)
        return result

    def _check_nothing_stored(self) -> None:
        now = self.domain.store.current_version(self.aggregate_id)
        if now != self._version_before:
            raise AssertionError(f"The refused command changed the stream of {self.aggregate_id}: "
                                 f"version {self._version_before} -> {now}.")

    def then_projection(self, **fields: Any) -> StoredScenario:
        """The aggregate's projection row holds these values."""
        assert_projection(self.domain, self.aggregate_id, self.resource, **fields)
        return self

    def then_no_projection(self) -> StoredScenario:
        assert_no_projection(self.domain, self.aggregate_id, self.resource)
        return self

    def then_projection_current(self) -> StoredScenario:
        assert_projection_current(self.domain, self.aggregate_id)
        return self


def given(domain: DomainLike, *events: EventSpec, database: bool = False, aggregate_id: Any = None,
          resource: str | None = None, context: DomainContext | None = None,
          user: Any = None) -> AggregateScenario:
    """Start a scenario: an aggregate of ``domain`` with these events as its history.

    ``database=True`` runs it through the real command bus and database (needs a
    test database); otherwise everything happens in memory.
    """
    scenario = StoredScenario if database else AggregateScenario
    return scenario(domain, events, aggregate_id=aggregate_id, resource=resource, context=context,
                    user=user)


def _copy(stored: Event) -> Event:
    clone = copy.copy(stored)
    clone.payload = dict(stored.payload or {})
    return clone


# -- projections --------------------------------------------------------------------------


def _row(domain: DomainLike, aggregate_id: Any, resource: str | None) -> tuple[type[Model], Model | None]:
    domain = _domain(domain)
    pk = uuid.UUID(str(aggregate_id))
    if resource is None:
        head = domain.store.head(pk)
        resource = head.resource if head is not None else domain.default_resource()
    model = domain.resource_model(resource)
    # The model's own manager, unscoped: a test asks what is stored, not what a user may see.
    return model, model._default_manager.using(domain.store.using).filter(pk=pk).first()


def assert_projection(domain: DomainLike, aggregate_id: Any, resource: str | None = None, /,
                      **fields: Any) -> Model:
    """The projection row of ``aggregate_id`` exists and holds these values; returns it."""
    model, row = _row(domain, aggregate_id, resource)
    if row is None:
        raise AssertionError(f"No {model._meta.label} row for aggregate {aggregate_id}.")
    columns = {f.name: f for f in model._meta.concrete_fields}
    wrong = {}
    for name, want in fields.items():
        if name not in columns:
            raise AssertionError(f"{model._meta.label} has no field {name!r}.")
        have = getattr(row, name)
        try:
            want = columns[name].to_python(want)
        except Exception:  # noqa: BLE001 - compare as given; the mismatch will be reported
            pass
        if have != want:
            wrong[name] = (want, have)
    if wrong:
        lines = "\n".join(f"  {n}: expected {w!r}, got {h!r}" for n, (w, h) in wrong.items())
        raise AssertionError(f"{model._meta.label} row {aggregate_id} differs:\n{lines}")
    return row


def assert_no_projection(domain: DomainLike, aggregate_id: Any, resource: str | None = None) -> None:
    model, row = _row(domain, aggregate_id, resource)
    if row is not None:
        raise AssertionError(f"{model._meta.label} has a row for aggregate {aggregate_id}.")


def assert_projection_current(domain: DomainLike, aggregate_id: Any) -> None:
    """The projection row equals what folding the aggregate's events gives (no drift)."""
    from django_fluvius.ops.inspection import compare_row

    domain = _domain(domain)
    aggregate = domain.load(aggregate_id)
    model, row = _row(domain, aggregate_id, aggregate.resource)
    problems = compare_row(model, aggregate, row)
    if problems:
        lines = "\n".join(f"  {kind}: {message}" for kind, message in problems)
        raise AssertionError(f"{model._meta.label} row {aggregate_id} drifted from its events:\n{lines}")
