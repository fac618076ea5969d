"""Domains (bounded contexts): an aggregate class, a namespace and its resources.

A ``Domain`` subclass ties an aggregate class to a namespace and its resources
(projection models). An instance is built per request or task with a
``DomainContext`` (``context.py``: who, which tenant, which correlation) and is the entry point
of both sides: ``create_command``/``process_command`` to write,
``load``/``statemgr`` to read.

Invariant: the domain is the only place where the write side, the read side and
security meet. It sits above them in the layering (``tests/test_layers.py``):
the bus and the state manager name it through protocols (``BusDomain``,
``ReadDomain``), and tenancy is applied here on every load and every read
(``tenant_scope``), never in a hook an override could drop.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet

from django_fluvius import privacy
from django_fluvius.context import DomainContext, current_context
from django_fluvius.events import snapshots
from django_fluvius.events.store import EventStore
from django_fluvius.exceptions import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    UnknownCommand,
    UnknownResource,
    WrongResource,
)
from django_fluvius.read.projections import project_inline
from django_fluvius.read.state import StateManager, parse_aggregate_id
from django_fluvius.registry import domains, resolve_model
from django_fluvius.security import erasure, tenancy
from django_fluvius.write.aggregate import ActionSpec, Aggregate
from django_fluvius.write.bus import Command, CommandBus, CommandResult
from django_fluvius.write.cache import aggregate_cache
from django_fluvius.write.payload import validate_payload

if TYPE_CHECKING:
    from django.db.models import Model


class Domain:
    """A bounded context: an aggregate class, a namespace and its resources."""

    __aggregate__: ClassVar[type[Aggregate]]
    __namespace__: ClassVar[str]
    __resources__: ClassVar[Mapping[str, Any]] = {}
    # Tenant-scoped (tenancy.py)? None follows FLUVIUS['TENANCY']; True / False decide for this domain.
    __tenancy__: ClassVar[bool | None] = None
    # Resources with media endpoints (.../<id>/media/): none unless declared. A list of
    # resources, or a dict resource -> who may upload (a policy, as @action(permission=...)
    # takes; None = the default: see django_fluvius.rest.media). docs/media.md.
    __media__: ClassVar[Any] = None
    # Personal data (docs/privacy.md): resource -> its personal fields (a list, or
    # privacy.PersonalData(fields, subject=callable) when the aggregate is not the subject).
    # They are stored sealed under the subject's key; ``forget`` destroys the key.
    __personal__: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace = getattr(cls, "__namespace__", None)
        if isinstance(namespace, str) and ("__namespace__" in cls.__dict__ or "__personal__" in cls.__dict__):
            privacy.declarations.declare(namespace, cls.__qualname__, cls.__personal__)

    def __init__(self, context: DomainContext | None = None):
        """Without a context: the running request's (``DomainContextMiddleware``), else a system one."""
        if context is None:
            context = current_context() or DomainContext.system(namespace=self.__namespace__, source="python")
        self.context = context
        self.store = EventStore()
        self.bus = CommandBus(self)
        self.statemgr = StateManager(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__namespace__}>"

    # -- declarations --------------------------------------------------------

    @classmethod
    def commands(cls) -> dict[str, ActionSpec]:
        return cls.__aggregate__.actions()

    @classmethod
    def resource_model(cls, resource: str) -> type[Model]:
        try:
            value = cls.__resources__[resource]
        except KeyError:
            known = ", ".join(sorted(cls.__resources__)) or "none"
            raise UnknownResource(
                f"Domain {cls.__namespace__!r} has no resource {resource!r} (known: {known})."
            ) from None
        return resolve_model(value)

    @classmethod
    def projection_model(cls, resource: str) -> type[Model] | None:
        """The resource's model, or None for a resource kept without a projection."""
        if resource not in cls.__resources__:
            return None
        return cls.resource_model(resource)

    @classmethod
    def default_resource(cls) -> str:
        return next(iter(cls.__resources__), cls.__namespace__)

    # -- commands ------------------------------------------------------------

    def create_command(
        self,
        key: str,
        payload: Mapping[str, Any] | None = None,
        aggregate_id: Any = None,
        expected_version: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Command:
        """Validate a command against its action; raise a ``FluviusError`` naming what is wrong."""
        spec = self.commands().get(key)
        if spec is None:
            known = ", ".join(sorted(self.commands())) or "none"
            raise UnknownCommand(
                f"Domain {self.__namespace__!r} has no command {key!r} (known: {known})."
            )
        errors: dict[str, list[str]] = {}
        parsed_id = None
        if aggregate_id is not None and aggregate_id != "":
            try:
                parsed_id = parse_aggregate_id(aggregate_id)
            except AggregateNotFound:
                errors["aggregate_id"] = [f"{aggregate_id!r} is not a valid UUID."]
        elif not spec.create:
            errors["aggregate_id"] = [f"Command {key!r} needs the id of an existing aggregate."]
        version = None
        if expected_version is not None:
            if isinstance(expected_version, bool) or not _is_int(expected_version) or int(expected_version) < 0:
                errors["expected_version"] = [f"{expected_version!r} is not a version (an integer >= 0)."]
            else:
                version = int(expected_version)
        try:
            validated = validate_payload(spec.serializer_class, payload)
        except CommandValidationError as exc:
            errors.update(exc.errors)
        if errors:
            raise CommandValidationError(errors)
        return Command(
            namespace=self.__namespace__,
            key=key,
            payload=validated,
            spec=spec,
            context=self.context,
            aggregate_id=parsed_id,
            expected_version=version,
            idempotency_key=idempotency_key,
        )

    def process_command(self, command: Command) -> CommandResult:
        """Run a command in one transaction; return what it produced."""
        return self.bus.handle(command)

    async def aprocess_command(self, command: Command) -> CommandResult:
        return await sync_to_async(self.process_command)(command)

    # -- loading aggregates --------------------------------------------------

    def load(self, aggregate_id: Any, *, version: int | None = None,
             at: datetime.datetime | None = None) -> Aggregate:
        """The aggregate as it is, or as it was at ``version`` / at time ``at``."""
        pk = parse_aggregate_id(aggregate_id)
        if version is not None and (not _is_int(version) or int(version) < 1):
            raise AggregateNotFound(f"{version!r} is not a version of {pk} (versions start at 1).",
                                    code="invalid_version")
        aggregate = self.rehydrate(pk, upto_version=version, until=at)
        if aggregate is not None and not self.may_see(aggregate):
            aggregate = None  # another tenant's: answered exactly as one that does not exist
        if aggregate is None:
            if at is not None:
                raise AggregateNotFound(f"{self.__namespace__} aggregate {pk} did not exist at {at.isoformat()}.")
            raise AggregateNotFound(f"No {self.__namespace__} aggregate with id {pk}.")
        if version is not None and aggregate.version < int(version):
            raise AggregateNotFound(
                f"Aggregate {pk} has no version {version} (its latest is {aggregate.version}).",
                code="unknown_version",
            )
        return aggregate

    async def aload(self, aggregate_id: Any, **kwargs: Any) -> Aggregate:
        return await sync_to_async(self.load)(aggregate_id, **kwargs)

    def rehydrate(self, aggregate_id: uuid.UUID, *, upto_version: int | None = None,
                  until: datetime.datetime | None = None) -> Aggregate | None:
        """Fold the stream into a fresh aggregate; None if it has no events in this domain.

        Starts from the latest usable snapshot when snapshots are on (``snapshots.py``).
        """
        aggregate = snapshots.rehydrate(self, self.__aggregate__, aggregate_id, upto_version=upto_version,
                                        until=until)
        if aggregate is not None and aggregate.tenant is None and aggregate.version and tenancy.is_scoped(self):
            # Restored from a snapshot with no later event: the tenant is on the stream's first event.
            head = self.store.head(aggregate_id)
            aggregate.tenant = (head.tenant or None) if head is not None else None
        return aggregate

    def load_for_command(self, command: Command, *, use_cache: bool = True) -> Aggregate:
        """The aggregate a command acts on: a new one for a create action, else the stored one.

        With ``use_cache`` a committed state from the in-process aggregate cache
        may stand in for the stream (``aggregate.from_cache`` tells); the bus
        re-checks against the store whenever that matters.
        """
        spec = command.spec
        if spec.create:
            tenant = tenancy.tenant_for_new(self, command.context)
            aggregate_id = command.aggregate_id or uuid.uuid4()
            if command.aggregate_id is not None and self.store.head(aggregate_id) is not None:
                raise ConcurrencyConflict(f"Aggregate {aggregate_id} already exists.",
                                          code="already_exists")
            resource = spec.resources[0] if spec.resources else self.default_resource()
            new = self.__aggregate__(aggregate_id, resource, context=command.context)
            new.tenant = tenant
            return new
        existing_id = command.aggregate_id
        if existing_id is None:  # create_command refuses this; a hand-made Command may not
            raise AggregateNotFound(f"Command {spec.name!r} needs the id of an existing aggregate.")
        aggregate = self.cached_aggregate(existing_id) if use_cache else None
        if aggregate is None:
            aggregate = self.rehydrate(existing_id)
        if aggregate is None:
            raise AggregateNotFound(f"No {self.__namespace__} aggregate with id {command.aggregate_id}.")
        # Before anything else is said about it (its resource type, its state): another
        # tenant's aggregate, cached or loaded, is not found.
        tenancy.check_aggregate(self, aggregate, command.context)
        if not spec.applies_to(aggregate.resource):
            raise WrongResource(
                f"Command {spec.name!r} applies to {', '.join(spec.resources)}, "
                f"not to the {aggregate.resource!r} aggregate {aggregate.id}."
            )
        return aggregate

    def cached_aggregate(self, aggregate_id: uuid.UUID) -> Aggregate | None:
        entry = aggregate_cache.get(self.store.using, aggregate_id)
        if entry is None or entry.namespace != self.__namespace__:
            return None
        state = sealed = entry.state
        if privacy.cipher.has_tokens(sealed):
            # Cached sealed like every other copy: a subject forgotten since reads as None.
            state = privacy.open_mapping(privacy.Keyring(self.store.using), sealed)[0]
        aggregate = self.__aggregate__(aggregate_id, entry.resource, version=entry.version,
                                       state=state, context=self.context)
        if state is not sealed:
            # The bus re-seals only what changed (privacy/copies.py: CommandSeal).
            aggregate.personal_tokens = {(f, v): sealed[f] for f, v in state.items()  # type: ignore[attr-defined]
                                         if type(v) is str and privacy.is_token(sealed.get(f))}
        aggregate.created, aggregate.updated = entry.created, entry.updated
        aggregate.tenant = entry.tenant
        aggregate.from_cache = True
        return aggregate

    def may_see(self, aggregate: Aggregate) -> bool:
        """Is the aggregate visible to this domain's context (its tenant, when tenant-scoped)?"""
        try:
            tenancy.check_aggregate(self, aggregate, self.context)
        except AggregateNotFound:
            return False
        return True

    # -- personal data -------------------------------------------------------

    def forget(self, subject_id: Any) -> erasure.Erasure:
        """Erase a data subject everywhere (docs/privacy.md): destroy their key, blank their fields in
        the projection rows, purge caches and snapshots, and append a ``personal-data-erased``
        event (no personal data) to each stream that held theirs.

        ``UnknownSubject`` if nothing is held for them (nothing is changed).
        """
        return erasure.forget(subject_id, self.store.using)

    def export_subject(self, subject_id: Any) -> dict[str, Any]:
        """Every personal value held for the subject, decrypted, with its events (JSON-ready)."""
        return erasure.export_subject(subject_id, self.store.using)

    # -- hooks ---------------------------------------------------------------

    def event_metadata(self, command: Command) -> dict[str, Any]:
        """What every event of this command (and its command-log row) carries as metadata."""
        data = command.context.metadata() if command.context is not None else {}
        data["command_id"] = str(command.id)
        data["command"] = command.key
        return data

    def after_append(self, aggregate: Aggregate, events: list[Any]) -> None:
        """Called inside the transaction once events are stored: takes a snapshot when one is due.

        Call ``super().after_append(...)`` when overriding.
        """
        snapshots.after_append(self, aggregate, events)

    def scope_queryset(self, resource: str, queryset: QuerySet) -> QuerySet:
        """Narrow every read of a resource (row scoping); the default reads everything.

        Tenant scoping (``tenant_scope``) is applied before this hook, whether it
        calls ``super()`` or not.
        """
        return queryset

    # -- what the write and read sides ask of their domain (not hooks) ---------------------
    #
    # The bus (write/bus.py) and the state manager (read/state.py) sit below the
    # domain and name it only through protocols (``BusDomain``, ``ReadDomain``);
    # these methods are where the domain ties them to the read side and to security.

    def writes_after_append(self, aggregate: Aggregate, events: list[Any]) -> bool:
        """Will ``after_append`` write to the database for these events? (Not a hook.)

        False lets the command's write statement be its whole transaction on PostgreSQL
        (no ``BEGIN`` and ``COMMIT`` round trips), which is only safe when ``after_append``
        then does nothing at all: a failure after that commit could not take the command
        back. So: the base ``after_append`` with no snapshot due; any override keeps the
        transaction.
        """
        if type(self).after_append is not Domain.after_append:
            return True
        return snapshots.is_due(aggregate.version, len(events), snapshots.snapshot_interval(type(aggregate)))

    def project(self, aggregate: Aggregate, using: str, batch: Any = None) -> None:
        """Write the aggregate's inline projection row in the command's transaction (or batch)."""
        project_inline(self.projection_model(aggregate.resource), aggregate, using, batch)

    def tenant_scope(self, resource: str, queryset: QuerySet) -> QuerySet:
        """The rows of this context's tenant only (tenant-scoped domains); every row otherwise."""
        return tenancy.scope_queryset(self, resource, queryset)


def _is_int(value: Any) -> bool:
    try:
        int(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, float) or float(value).is_integer()


def register(domain_class: type[Domain]) -> type[Domain]:
    """Register a domain class (what ``FLUVIUS['DOMAINS']`` does for each path)."""
    if not (isinstance(domain_class, type) and issubclass(domain_class, Domain)):
        raise ImproperlyConfigured(f"{domain_class!r} is not a Domain subclass.")
    domains.register(domain_class)
    return domain_class
