"""Aggregates: where business rules live.

An ``Aggregate`` subclass declares its commands with ``@action`` and, where the
default merge of an event's payload into the state is not enough, its folds with
``@apply``. Both decorators only tag the method; ``__init_subclass__`` collects the
tags into ``_actions`` and ``_appliers``, so the class reads top to bottom.

Invariant: state is only ever what folding the aggregate's events gives
(``fold``); an action returns an event payload and never changes ``self.state``
itself, so the state after a command is exactly what rebuilding from the store
will give later.
"""

from __future__ import annotations

import dis
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from django_fluvius.exceptions import DomainError
from django_fluvius.privacy.declarations import ERASED_EVT_KEY
from django_fluvius.write.payload import build_serializer

if TYPE_CHECKING:
    import datetime
    import uuid

    from rest_framework.serializers import Serializer

ACTION_ATTR = "_fluvius_action"
APPLY_ATTR = "_fluvius_applies"


# Opcodes through which a coroutine can suspend (await, async for, async with).
_SUSPENDING_OPS = {"GET_AWAITABLE", "GET_AITER", "GET_ANEXT", "BEFORE_ASYNC_WITH", "SEND", "YIELD_VALUE"}


def awaits_anything(func: Callable[..., Any]) -> bool:
    code = getattr(func, "__code__", None)
    if code is None:
        return True
    return any(ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code))


def drive(coroutine: Any) -> Any:
    """Run a coroutine that cannot suspend to completion, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("A coroutine judged never to suspend did suspend.")


def kebab_case(name: str) -> str:
    """``create_user`` -> ``create-user``; ``createUser`` -> ``create-user``."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", name)
    return name.replace("_", "-").lower()


@dataclass(eq=False)
class ActionSpec:
    """What ``@action`` says about one command."""

    name: str
    evt_key: str
    func: Callable[..., Any]
    resources: tuple[str, ...] = ()
    create: bool = False
    serializer: type[Serializer] | None = None
    permission: Any = None
    retry_safe: bool = False
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @cached_property
    def never_suspends(self) -> bool:
        """An ``async def`` that awaits nothing can be driven without an event loop."""
        return self.is_async and not awaits_anything(self.func)

    @cached_property
    def serializer_class(self) -> type[Serializer]:
        """The explicit serializer, or one built from the method's signature."""
        return self.serializer or build_serializer(self.func, self.name)

    def applies_to(self, resource: str) -> bool:
        return not self.resources or resource in self.resources


def action(
    evt_key: str | None = None,
    *,
    resources: Iterable[str] | None = None,
    create: bool = False,
    name: str | None = None,
    serializer: type[Serializer] | None = None,
    permission: Any = None,
    retry_safe: bool = False,
    **extra: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an aggregate method as a command.

    The method's return value (a dict, or None for an empty one) is the payload of
    the ``evt_key`` event it produces. ``name`` overrides the command key (by
    default the method name in kebab-case); ``serializer`` overrides the payload
    validation built from the signature; ``permission`` is a policy for the
    authorization middleware; ``retry_safe`` lets the retry middleware run the
    command again after a lost race.
    """

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        command_name = name or kebab_case(func.__name__)
        spec = ActionSpec(
            name=command_name,
            evt_key=evt_key or command_name,
            func=func,
            resources=tuple(resources or ()),
            create=create,
            serializer=serializer,
            permission=permission,
            retry_safe=retry_safe,
            description=inspect.getdoc(func) or "",
            extra=extra,
        )
        setattr(func, ACTION_ATTR, spec)
        return func

    return decorator


def apply(*evt_keys: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare how events of these keys fold into the state: ``(self, state, event) -> state``."""
    if not evt_keys:
        raise TypeError("@apply needs at least one event key.")

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, APPLY_ATTR, getattr(func, APPLY_ATTR, ()) + evt_keys)
        return func

    return decorator


class Aggregate:
    """State rebuilt from events, and the commands that may change it.

    ``id``, ``resource``, ``version`` and ``state`` describe the aggregate as of
    its last folded event; ``context`` is the ``DomainContext`` of the command
    being run (who, where, which tenant).
    """

    # Take a snapshot every N events (None: the FLUVIUS['SNAPSHOT_EVERY'] default).
    snapshot_every: int | None = None
    # Bump when the state's shape changes so older snapshots are ignored.
    snapshot_schema: int = 1

    _actions: dict[str, ActionSpec] = {}
    _appliers: dict[str, str] = {}
    _action_conflicts: list[tuple[str, str, str]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        actions: dict[str, ActionSpec] = {}
        appliers: dict[str, str] = {}
        conflicts: list[tuple[str, str, str]] = []
        # Walk the MRO from the base down so subclasses override what they redefine.
        for klass in reversed(cls.__mro__):
            own: dict[str, str] = {}
            for attr, value in vars(klass).items():
                spec = getattr(value, ACTION_ATTR, None)
                if spec is not None:
                    if spec.name in own:
                        conflicts.append((spec.name, own[spec.name], attr))
                    own[spec.name] = attr
                    actions[spec.name] = spec
                for evt_key in getattr(value, APPLY_ATTR, ()):
                    appliers[evt_key] = attr
        cls._actions = actions
        cls._appliers = appliers
        cls._action_conflicts = conflicts

    def __init__(
        self,
        aggregate_id: uuid.UUID,
        resource: str,
        *,
        version: int = 0,
        state: Mapping[str, Any] | None = None,
        context: Any = None,
    ):
        self.id = aggregate_id
        self.resource = resource
        self.version = version
        self.state: dict[str, Any] = dict(state or {})
        self.context = context
        # The tenant the aggregate was created in (tenancy.py); each of its events carries it.
        self.tenant: str | None = None
        # Times of the first and the last folded event.
        self.created: datetime.datetime | None = None
        self.updated: datetime.datetime | None = None
        # True when the state came from the in-process cache, not the event store.
        self.from_cache = False
        # Events folded by the last scan (set by rebuild's AggregateScanner; 0 otherwise).
        self.event_count = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.resource} {self.id} v{self.version}>"

    @property
    def exists(self) -> bool:
        return self.version > 0

    @classmethod
    def actions(cls) -> dict[str, ActionSpec]:
        """The commands of this aggregate, by key."""
        return dict(cls._actions)

    def fold(self, event: Any) -> None:
        """Apply one stored (or about-to-be-stored) event to the state."""
        applier = self._appliers.get(event.evt_key)
        if applier is not None:
            self.state = getattr(self, applier)(dict(self.state), event)
        elif event.evt_key == ERASED_EVT_KEY:
            # Domain.forget's record: the subject's personal fields are gone from here on.
            self.state = {**self.state, **dict.fromkeys((event.payload or {}).get("fields", ()))}
        else:
            self.state = {**self.state, **(event.payload or {})}
        self.version = event.version
        if self.created is None:
            self.created = event.created
        if self.tenant is None:
            self.tenant = getattr(event, "tenant", None) or None
        self.updated = event.created

    def run(self, spec: ActionSpec, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Run one action and return its event payload (sync and async actions alike)."""
        method = getattr(self, spec.func.__name__)
        try:
            if not spec.is_async:
                result = method(**payload)
            elif spec.never_suspends:
                # asgiref's async_to_sync starts a thread and an event loop per call;
                # a body with no await needs neither.
                result = drive(method(**payload))
            else:
                result = async_to_sync(method)(**payload)
        except DomainError as exc:
            exc.name_rule(spec.name)
            raise
        if result is None:
            return {}
        if not isinstance(result, Mapping):
            raise TypeError(
                f"Action {spec.name!r} must return a dict (the event payload), "
                f"not {type(result).__name__}."
            )
        return dict(result)

    def projection(self, resource: str) -> dict[str, Any] | None:
        """The fields of this aggregate's projection row; None removes the row.

        Override to shape the read model differently from the state.
        """
        return self.state
