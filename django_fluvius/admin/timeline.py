"""An aggregate's history as the admin shows it: each event with the state after it.

The state is folded by the aggregate's own domain (``@apply`` folds included), once
and incrementally: a page of versions ``a..b`` loads the aggregate at ``a - 1``
through ``Domain.load`` (snapshots help there when a domain has them) and folds
the page's events one by one, recording the state after each. A namespace no
registered domain answers for is still shown, folded by the default merge, with
a notice saying so.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass, field
from typing import Any

from django_fluvius.admin.display import Change, diff
from django_fluvius.context import DomainContext
from django_fluvius.events.store import EventStore
from django_fluvius.exceptions import AggregateNotFound, InvalidVersion, UnknownDomain
from django_fluvius.models import Event
from django_fluvius.read.state import parse_aggregate_id
from django_fluvius.registry import domains
from django_fluvius.security import tenancy
from django_fluvius.write.aggregate import Aggregate

PER_PAGE = 50


@dataclass
class TimelineEntry:
    event: Event
    state: dict[str, Any] | None
    changes: list[Change] = field(default_factory=list)
    error: str = ""


@dataclass
class Timeline:
    aggregate_id: uuid.UUID
    namespace: str
    resource: str
    latest_version: int
    page: int
    num_pages: int
    entries: list[TimelineEntry]
    domain_class: type | None
    notice: str = ""

    @property
    def first_version(self) -> int:
        return self.entries[0].event.version if self.entries else 0

    @property
    def last_version(self) -> int:
        return self.entries[-1].event.version if self.entries else 0

    @property
    def page_range(self) -> range:
        return range(1, self.num_pages + 1)


@dataclass
class Stream:
    """What the timeline and diff share: the parsed id, its first event, its domain."""

    aggregate_id: uuid.UUID
    head: Event
    latest_version: int
    domain: Any  # a Domain instance, or None when no registered domain owns the namespace
    notice: str = ""

    @classmethod
    def open(cls, aggregate_id: Any, context: DomainContext | None = None) -> Stream:
        pk = parse_aggregate_id(aggregate_id)
        store = EventStore()
        head = store.head(pk)
        if head is None or (context is not None and not tenancy.row_visible(head.tenant, context)):
            # Another tenant's aggregate reads exactly as one that does not exist.
            raise AggregateNotFound(f"No events are stored for aggregate {pk}.")
        latest = (store.events.filter(aggregate_id=pk).order_by("-version")
                  .values_list("version", flat=True).first())
        try:
            domain_class = domains.get(head.namespace)
        except UnknownDomain:
            return cls(pk, head, latest, None,
                       notice=f"No registered domain has the namespace {head.namespace!r}: the "
                              f"state is folded by the default merge of payloads, without the "
                              f"aggregate's own rules.")
        context = context or DomainContext.system(namespace=head.namespace)
        return cls(pk, head, latest, domain_class(context))

    def version(self, value: Any, *, name: str = "version") -> int:
        """A version number from the address: 0 (before the first event) .. latest."""
        try:
            number = int(str(value).strip())
        except (TypeError, ValueError):
            raise InvalidVersion(f"The {name} {value!r} is not a whole number.") from None
        if number < 0 or number > self.latest_version:
            raise AggregateNotFound(
                f"Aggregate {self.aggregate_id} has no version {number} "
                f"(its versions are 1 to {self.latest_version}).",
                code="unknown_version",
            )
        return number

    def aggregate_at(self, version: int) -> Aggregate:
        """The aggregate after ``version`` (0: a blank one, before its first event)."""
        if self.domain is None:
            aggregate = Aggregate(self.aggregate_id, self.head.resource)
            for event in EventStore().stream(self.aggregate_id, upto_version=version):
                aggregate.fold(event)
            return aggregate
        if version == 0:
            return self.domain.__aggregate__(self.aggregate_id, self.head.resource,
                                             context=self.domain.context)
        return self.domain.load(self.aggregate_id, version=version)

    def events(self, after_version: int, upto_version: int) -> list[Event]:
        store = self.domain.store if self.domain is not None else EventStore()
        return store.stream(self.aggregate_id, after_version=after_version, upto_version=upto_version)


def timeline(aggregate_id: Any, *, page: Any = 1, per_page: int = PER_PAGE,
             context: DomainContext | None = None) -> Timeline:
    stream = Stream.open(aggregate_id, context)
    num_pages = max(1, -(-stream.latest_version // per_page))
    try:
        page = int(page)
    except (TypeError, ValueError):
        page = 1
    page = min(max(page, 1), num_pages)
    start = (page - 1) * per_page + 1
    end = min(start + per_page - 1, stream.latest_version)

    entries: list[TimelineEntry] = []
    error = ""
    try:
        aggregate = stream.aggregate_at(start - 1)
        events = stream.events(start - 1, end)
    except Exception as exc:  # noqa: BLE001 - a broken fold or decode is shown, not raised
        aggregate = None
        events = list(EventStore().events.filter(aggregate_id=stream.aggregate_id,
                                                 version__gte=start, version__lte=end).order_by("version"))
        error = f"The state cannot be rebuilt for versions {start} to {end}: {type(exc).__name__}: {exc}"
    before = copy.deepcopy(aggregate.state) if aggregate is not None else None
    for event in events:
        if aggregate is None:
            entries.append(TimelineEntry(event, None, error=error))
            continue
        try:
            aggregate.fold(event)
        except Exception as exc:  # noqa: BLE001 - see above
            error = (f"Folding version {event.version} ({event.evt_key}) failed: "
                     f"{type(exc).__name__}: {exc}. Later states are unknown.")
            aggregate = None
            entries.append(TimelineEntry(event, None, error=error))
            continue
        state = copy.deepcopy(aggregate.state)
        entries.append(TimelineEntry(event, state, diff(before, state)))
        before = state
    return Timeline(
        aggregate_id=stream.aggregate_id,
        namespace=stream.head.namespace,
        resource=stream.head.resource,
        latest_version=stream.latest_version,
        page=page,
        num_pages=num_pages,
        entries=entries,
        domain_class=type(stream.domain) if stream.domain is not None else None,
        notice=stream.notice,
    )


@dataclass
class VersionDiff:
    aggregate_id: uuid.UUID
    namespace: str
    resource: str
    latest_version: int
    old_version: int
    new_version: int
    old_state: dict[str, Any]
    new_state: dict[str, Any]
    changes: list[Change]
    events: list[Event]
    notice: str = ""


def version_diff(aggregate_id: Any, old: Any, new: Any, *,
                 context: DomainContext | None = None) -> VersionDiff:
    """The state at two versions and what changed between them (and which events did it)."""
    stream = Stream.open(aggregate_id, context)
    old_version = stream.version(old, name="first version")
    new_version = stream.version(new, name="second version")
    old_state = stream.aggregate_at(old_version).state
    new_state = stream.aggregate_at(new_version).state
    low, high = sorted((old_version, new_version))
    events = list(stream.events(low, high))
    return VersionDiff(
        aggregate_id=stream.aggregate_id,
        namespace=stream.head.namespace,
        resource=stream.head.resource,
        latest_version=stream.latest_version,
        old_version=old_version,
        new_version=new_version,
        old_state=old_state,
        new_state=new_state,
        changes=diff(old_state, new_state),
        events=events,
        notice=stream.notice,
    )
