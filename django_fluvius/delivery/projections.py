"""Async projections: read models of their own, kept from the event feed after commit.

An ``AsyncProjection`` keeps read models from the gap-safe feed
(``events/feed.py``): workers (Celery, the inline dispatcher, or ``manage.py
fluvius_projections``) read committed events in commit order, batch by batch.

Invariant: a batch's writes and the projection's ``Checkpoint`` commit in the
same transaction, so a crash redoes at most the batch that did not commit and no
event is applied twice or skipped. A projection can start (or start again) from
any position.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError, connections, transaction
from django.utils import timezone

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import subscriptions
from django_fluvius.delivery.dispatch import dead_letter, subscribers
from django_fluvius.delivery.handlers import ALL_EVENTS
from django_fluvius.events.feed import Feed, FeedKey
from django_fluvius.exceptions import UnknownProjection
from django_fluvius.models import Checkpoint, DeadLetter
from django_fluvius.read import consistency
from django_fluvius.registry import resolve_model

if TYPE_CHECKING:
    pass

logger = logging.getLogger("django_fluvius.projections")


# -- async projections ------------------------------------------------------------------------
#
# An ``AsyncProjection`` keeps read models of its own from the event feed
# (feed.py): workers read committed events in commit order, batch by batch, and
# save the projection's ``Checkpoint`` in the same transaction as the batch's
# writes, so a crash redoes at most the batch that did not commit and no event is
# applied twice or skipped. It can start (or start again) from any position.


def on(*evt_keys: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a method of an ``AsyncProjection`` as the one that applies these event keys."""
    if not evt_keys:
        raise ImproperlyConfigured("@on needs at least one event key.")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        func._fluvius_on = (*getattr(func, "_fluvius_on", ()), *evt_keys)  # type: ignore[attr-defined]
        return func

    return decorator


class ProjectionRegistry:
    """Async projection classes by name; a second class under a taken name is refused."""

    def __init__(self) -> None:
        self._classes: dict[str, type[AsyncProjection]] = {}

    def register(self, cls: type[AsyncProjection]) -> type[AsyncProjection]:
        existing = self._classes.get(cls.name)
        if existing is not None and existing is not cls and (
            existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ImproperlyConfigured(
                f"An async projection named {cls.name!r} is already registered "
                f"({existing.__module__}.{existing.__qualname__})."
            )
        self._classes[cls.name] = cls
        subscribers.add(_ProjectionSubscriber(cls))
        # Reads asking for a minimum position wait for it (read/consistency.py).
        consistency.register_feeder(cls.name, cls.models, cls.read_keys(), cls.namespace)
        return cls

    def unregister(self, name: str) -> None:
        self._classes.pop(name, None)
        subscribers.remove(name)
        consistency.feeders.remove(name)

    def get(self, name: str) -> type[AsyncProjection]:
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise UnknownProjection(f"No async projection is named {name!r} (known: {known}).") from None

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def __iter__(self):
        return iter(list(self._classes.values()))

    def __len__(self) -> int:
        return len(self._classes)


async_projections = ProjectionRegistry()

APPLIED = "applied"   # a batch was applied
IDLE = "idle"         # nothing to read up to the feed's bound
BUSY = "busy"         # another worker holds the checkpoint
FAILED = "failed"     # the batch failed and was rolled back (tried again later)


@dataclass
class BatchResult:
    status: str
    applied: int = 0
    position: int = 0
    skipped: int = 0
    error: BaseException | None = None
    # Idle, but committed events wait above the bound (a running transaction holds
    # the feed back): try again shortly.
    held: bool = False


@dataclass
class CatchUp:
    status: str
    applied: int = 0
    batches: int = 0
    position: int = 0
    skipped: int = 0
    held: bool = False


class _Busy(Exception):
    pass


class AsyncProjection:
    """Read models kept by workers from the event feed.

    ::

        class CustomerTotals(AsyncProjection):
            name = 'customer-totals'          # default: module.ClassName
            namespace = 'app-order'           # optional: only this domain's events
            models = [CustomerTotal]          # what reset() empties

            @on('order-placed')
            def placed(self, event):
                CustomerTotal.objects.using(self.using).update_or_create(...)

    Every subclass is registered under its ``name`` (``abstract=True`` in the
    class statement opts out for base classes, ``register=False`` leaves it to an
    explicit ``async_projections.register(cls)``). ``evt_keys`` defaults to the keys of its ``@on``
    methods; an event without a method goes to ``handle()``. Override
    ``apply_batch(events)`` to write a whole batch at once. Writes must use
    ``self.using`` (the database of the event store and the checkpoint): they
    commit together with the checkpoint.
    """

    name: ClassVar[str] = ""
    namespace: ClassVar[str | None] = None
    evt_keys: ClassVar[Sequence[str]] = ()
    models: ClassVar[Sequence[Any]] = ()
    batch_size: ClassVar[int | None] = None
    max_retries: ClassVar[int | None] = None
    # Where the subscription starts the first time it runs: "beginning" (the default),
    # "now" or an event position (checked: fluvius.E055).
    start: ClassVar[Any] = subscriptions.BEGINNING
    _appliers: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, *, abstract: bool = False, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        appliers: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for key in getattr(value, "_fluvius_on", ()):
                    appliers[key] = attr
        cls._appliers = appliers
        if not cls.__dict__.get("name"):
            cls.name = f"{cls.__module__}.{cls.__qualname__}"
        if abstract:
            return
        if not cls.keys():
            raise ImproperlyConfigured(
                f"Async projection {cls.name!r} handles no event: give it @on methods, evt_keys, "
                f"or evt_keys = ['*'] with a handle() method."
            )
        if register:  # register=False: defined now, registered later with async_projections.register()
            async_projections.register(cls)

    # -- what it reads ---------------------------------------------------------

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(cls.evt_keys) or tuple(cls._appliers)

    @classmethod
    def wants(cls, event: Any) -> bool:
        if cls.namespace is not None and event.namespace != cls.namespace:
            return False
        keys = cls.keys()
        return ALL_EVENTS in keys or event.evt_key in keys

    @classmethod
    def read_keys(cls) -> list[str] | None:
        keys = cls.keys()
        return None if ALL_EVENTS in keys else list(keys)

    def __init__(self, using: str | None = None):
        self.using = using or fluvius_settings.DATABASE
        self.feed = Feed(self.using)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- applying events (override these) --------------------------------------

    def apply(self, event: Any) -> None:
        attr = self._appliers.get(event.evt_key)
        if attr is not None:
            getattr(self, attr)(event)
        else:
            self.handle(event)

    def handle(self, event: Any) -> None:
        """Events of ``evt_keys`` without an ``@on`` method come here (default: ignored)."""

    def apply_batch(self, events: Sequence[Any]) -> None:
        for event in events:
            self.apply(event)

    def clear(self) -> None:
        """Empty the read models (``reset()`` calls it); override for models shared with others."""
        for model in self.models:
            resolve_model(model)._default_manager.db_manager(self.using).all().delete()

    # -- the checkpoint ----------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The projection's checkpoint, created at its ``start`` the first time."""
        return subscriptions.ensure(subscriptions.of_projection(_ProjectionSubscriber(type(self))), self.using)

    def _lock(self, wait: bool) -> Checkpoint:
        """The checkpoint row, locked for the caller's transaction (every caller is in one)."""
        locked = Checkpoint.objects.using(self.using).select_for_update(nowait=not wait).filter(name=self.name)
        try:
            # No savepoint of its own: a NOWAIT refusal ends the caller's transaction anyway.
            with transaction.atomic(using=self.using, savepoint=False):
                cp = locked.first()
                if cp is None:  # the first run: create it at its start (its own savepoint), then lock it
                    self.checkpoint()
                    cp = locked.get()
                return cp
        except OperationalError as exc:  # NOWAIT: another worker holds it
            raise _Busy() from exc

    @staticmethod
    def _advance(cp: Checkpoint, key: FeedKey, applied: int) -> None:
        cp.txid, cp.position = key
        cp.events_applied += applied
        cp.failures = 0
        cp.last_error = ""
        cp.updated = timezone.now()
        cp.save()

    def start_at(self, position: int = 0) -> Checkpoint:
        """Move the checkpoint so the next catch-up reads every event after ``position``."""
        with transaction.atomic(using=self.using):
            cp = self._lock(wait=True)
            cp.txid, cp.position = self.feed.key_before(position)
            cp.failures, cp.last_error, cp.updated = 0, "", timezone.now()
            cp.save()
        consistency.forget()  # reached positions may be reached no more
        return cp

    def reset(self, position: int = 0) -> Checkpoint:
        """Empty the read models and start again from ``position`` (0: the beginning), atomically."""
        with transaction.atomic(using=self.using):
            cp = self._lock(wait=True)
            self.clear()
            cp.txid, cp.position = self.feed.key_before(position)
            cp.events_applied, cp.failures, cp.last_error, cp.updated = 0, 0, "", timezone.now()
            cp.save()
        consistency.forget()
        return cp

    def lag(self) -> int:
        """Committed events this projection has still to read."""
        return self.feed.count(self.checkpoint().key, evt_keys=self.read_keys(), namespace=self.namespace)

    # -- running -------------------------------------------------------------------

    def run_batch(self, *, wait: bool = True, limit: int | None = None) -> BatchResult:
        """Read and apply one batch after the checkpoint, and save the checkpoint, in one transaction."""
        limit = limit or self.batch_size or int(fluvius_settings.PROJECTION_BATCH_SIZE)
        # A transaction of our own (not one of the caller's) has read no server statistics yet.
        own = not connections[self.using].in_atomic_block
        try:
            with transaction.atomic(using=self.using):
                cp = self._lock(wait)
                upto = self.feed.bound(fresh_transaction=own)
                events = self.feed.read(cp.key, upto, evt_keys=self.read_keys(), namespace=self.namespace,
                                        limit=limit)
                if not events:
                    if cp.key < upto:  # skip past events other projections read
                        self._advance(cp, upto, 0)
                    return BatchResult(IDLE, position=cp.position, held=self.feed.head() > upto)
                self.apply_batch(events)
                key = self.feed.key(events[-1]) if len(events) >= limit else upto
                self._advance(cp, key, len(events))
                return BatchResult(APPLIED, applied=len(events), position=cp.position)
        except _Busy:
            return BatchResult(BUSY)
        except Exception as exc:  # noqa: BLE001 - counted, retried, then the failing event is dead-lettered
            return self._batch_failed(exc, limit)

    def _batch_failed(self, error: BaseException, limit: int) -> BatchResult:
        tries = 1 + (self.max_retries if self.max_retries is not None
                     else int(fluvius_settings.PROJECTION_MAX_RETRIES))
        with transaction.atomic(using=self.using):
            cp = self._lock(wait=True)
            cp.failures += 1
            cp.last_error = f"{type(error).__name__}: {error}"[:10_000]
            if cp.failures < tries:
                cp.save()
                logger.warning("Async projection %s failed after position %s (try %s of %s): %r",
                               self.name, cp.position, cp.failures, tries, error)
                return BatchResult(FAILED, position=cp.position, error=error)
            # Last try: apply event by event and dead-letter the ones that fail.
            failures = cp.failures
            upto = self.feed.bound()
            applied = skipped = 0
            events = self._read_tolerant(cp, upto, limit)
            for event in events:
                try:
                    with transaction.atomic(using=self.using):
                        if isinstance(event, _Undecodable):
                            raise event.error
                        self.apply_batch([event])
                    applied += 1
                except Exception as exc:  # noqa: BLE001
                    skipped += 1
                    dead_letter(DeadLetter.Kind.PROJECTION, self.name, event, attempts=failures, error=exc,
                                tb="".join(traceback.format_exception(exc)))
            key = self.feed.key(events[-1]) if len(events) >= limit else upto
            self._advance(cp, key, applied)
            return BatchResult(APPLIED, applied=applied, skipped=skipped, position=cp.position)

    def _read_tolerant(self, cp: Checkpoint, upto: FeedKey, limit: int) -> list[Any]:
        """The batch's events, with the ones that cannot be decoded wrapped instead of raising."""
        raw = self.feed.read(cp.key, upto, evt_keys=self.read_keys(), namespace=self.namespace, limit=limit,
                             decode=False)
        events: list[Any] = []
        for event in raw:
            try:
                events.append(self.feed.store.decode(event))
            except Exception as exc:  # noqa: BLE001
                events.append(_Undecodable(event, exc))
        return events

    def catch_up(self, *, wait: bool = True, max_events: int | None = None,
                 progress: Callable[[CatchUp], None] | None = None) -> CatchUp:
        """Run batches until the projection reaches the feed's bound (or fails, or is busy)."""
        total = CatchUp(IDLE)
        while True:
            result = self.run_batch(wait=wait)
            total.batches += 1
            total.applied += result.applied
            total.skipped += result.skipped
            total.position = result.position or total.position
            total.held = result.held
            if result.status != APPLIED:
                total.status = result.status if (result.status != IDLE or not total.applied) else APPLIED
                return total
            total.status = APPLIED
            if progress is not None:
                progress(total)
            if max_events is not None and total.applied >= max_events:
                return total

    def rebuild(self, *, progress: Callable[[CatchUp], None] | None = None) -> CatchUp:
        """``reset()`` then ``catch_up()``: the read models from scratch."""
        self.reset()
        return self.catch_up(progress=progress)

    def apply_one(self, event: Any) -> None:
        """Apply one event now, out of order (re-driving a dead letter)."""
        with transaction.atomic(using=self.using):
            self.apply_batch([event])


@dataclass
class _Undecodable:
    event: Any
    error: BaseException

    def __getattr__(self, name: str) -> Any:
        return getattr(self.event, name)


class _ProjectionSubscriber:
    """How dispatch.py wakes a projection after commit without importing this module."""

    def __init__(self, cls: type[AsyncProjection]):
        self.cls = cls
        self.name = cls.name
        self.start = cls.start
        self.namespace = cls.namespace

    def read_keys(self) -> list[str] | None:
        return self.cls.read_keys()

    def wants(self, event: Any) -> bool:
        return self.cls.wants(event)

    def behind(self, using: str) -> bool:
        """Whether committed events wait for this projection (one short read)."""
        projection = self.cls(using=using)
        cp = projection.checkpoint()
        return bool(projection.feed.read(cp.key, projection.feed.bound(), evt_keys=self.read_keys(),
                                         namespace=self.namespace, limit=1, decode=False))

    def run_inline(self, using: str) -> CatchUp:
        return self.cls(using=using).catch_up(wait=True)

    def redrive(self, event: Any, using: str) -> None:
        self.cls(using=using).apply_one(event)
