"""Old events in the current shape: schema versions, upcasters and renamed event keys.

Events are never rewritten. When the payload of an event type changes shape,
register an upcaster that turns a payload of the old schema version into the
next one; every read path (``EventStore.decode``) runs the chain, so aggregates,
handlers and projections only ever see the current shape::

    from django_fluvius.events.upcasting import rename_event, upcaster

    @upcaster('user-created', version=1)          # v1 -> v2
    def split_name(payload):
        first, _, last = payload.pop('name').partition(' ')
        return {**payload, 'first_name': first, 'last_name': last}

    rename_event('user-registered', 'user-created')   # the key it had before

The current schema version of an event type is one more than the highest
version an upcaster is registered for (1 without upcasters); the bus stamps it
on every new event. Registering the same (evt_key, version) twice, or renaming
one key to two targets, is refused. Put these declarations in the domain module
or in an ``upcasters.py`` of any installed app (autodiscovered at start-up).

Anything that cannot be decoded raises ``EventDecodeError`` naming the
aggregate, its version and the event key: a payload that is not a JSON object,
a schema version without an upcaster, a version newer than the code, an
upcaster that fails. Nothing is ever folded in a shape the code does not know.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import EventDecodeError
from django_fluvius.models import Event
from django_fluvius.privacy.declarations import ERASED_EVT_KEY
from django_fluvius.registry import domains

if TYPE_CHECKING:
    from django_fluvius.protocols import AggregateProtocol as Aggregate

Key = tuple[str | None, str]  # (namespace or None for every namespace, evt_key)


@dataclass(frozen=True, eq=False)
class Upcaster:
    """Turns a payload of ``evt_key`` at schema ``version`` into version + 1."""

    evt_key: str
    version: int
    func: Callable[..., Any]
    namespace: str | None = None
    takes_event: bool = False

    @property
    def name(self) -> str:
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', self.func)!s}"

    def __call__(self, payload: dict[str, Any], event: Any) -> Any:
        return self.func(payload, event) if self.takes_event else self.func(payload)


def describe(event: Any) -> str:
    """How an error names one stored event: key, schema, version, aggregate, position."""
    namespace = getattr(event, "namespace", "") or "?"
    return (f"event {event.evt_key!r} (schema v{event.schema_version}) at version {event.version} "
            f"of {namespace} aggregate {event.aggregate_id} (position {event.position})")


def decode_error(event: Any, reason: str, **details: Any) -> EventDecodeError:
    return EventDecodeError(
        f"Cannot decode {describe(event)}: {reason}",
        aggregate_id=str(event.aggregate_id), version=event.version, evt_key=event.evt_key,
        schema_version=event.schema_version, position=event.position, **details,
    )


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # Re-importing a module (autoreload, tests) registers the same code again: harmless.
    return a is b or getattr(a, "__code__", None) is getattr(b, "__code__", object())


def _takes_event(func: Callable[..., Any]) -> bool:
    try:
        params = [p for p in inspect.signature(func).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return False
    return len(params) >= 2


class UpcasterRegistry:
    """Upcasters by (namespace, evt_key) and version; aliases from old keys to new ones."""

    def __init__(self) -> None:
        self._upcasters: dict[Key, dict[int, Upcaster]] = {}
        self._current: dict[Key, int] = {}
        self._aliases: dict[Key, str] = {}

    # -- declaring -------------------------------------------------------------

    def register(self, evt_key: str, version: int, func: Callable[..., Any], *,
                 namespace: str | None = None) -> Upcaster:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ImproperlyConfigured(f"Upcaster {func!r} for {evt_key!r}: version must be an integer >= 1.")
        key = (namespace, evt_key)
        if key in self._aliases:
            raise ImproperlyConfigured(
                f"{evt_key!r} was renamed to {self._aliases[key]!r}: register its upcasters under the new key "
                "(renamed events are upcast after the rename)."
            )
        chain = self._upcasters.setdefault(key, {})
        existing = chain.get(version)
        if existing is not None and not _same_function(existing.func, func):
            raise ImproperlyConfigured(
                f"An upcaster for {evt_key!r} version {version} is already registered ({existing.name})."
            )
        item = Upcaster(evt_key, version, func, namespace, _takes_event(func))
        chain[version] = item
        self._current[key] = max(chain) + 1
        return item

    def rename(self, old: str, new: str, *, namespace: str | None = None) -> None:
        if not old or not new or old == new:
            raise ImproperlyConfigured(f"Cannot rename event key {old!r} to {new!r}.")
        key = (namespace, old)
        existing = self._aliases.get(key)
        if existing is not None and existing != new:
            raise ImproperlyConfigured(f"Event key {old!r} is already renamed to {existing!r}, not {new!r}.")
        if key in self._upcasters:
            raise ImproperlyConfigured(
                f"{old!r} has upcasters; register them under its new key {new!r} instead."
            )
        # Follow the chain from the new name: it must not lead back to the old one.
        seen = {old}
        target: str | None = new
        while target is not None:
            if target in seen:
                raise ImproperlyConfigured(f"Renaming {old!r} to {new!r} makes a cycle of renames.")
            seen.add(target)
            target = self._aliases.get((namespace, target))
        self._aliases[key] = new

    def unregister(self, evt_key: str, version: int | None = None, *, namespace: str | None = None) -> None:
        """Forget upcasters (one version or all) or a rename: for tests."""
        key = (namespace, evt_key)
        if version is None:
            self._upcasters.pop(key, None)
            self._aliases.pop(key, None)
        else:
            self._upcasters.get(key, {}).pop(version, None)
            if not self._upcasters.get(key):
                self._upcasters.pop(key, None)
        if self._upcasters.get(key):
            self._current[key] = max(self._upcasters[key]) + 1
        else:
            self._current.pop(key, None)

    # -- reading ---------------------------------------------------------------

    def _lookup(self, table: dict[Key, Any], namespace: str | None, evt_key: str) -> Any:
        found = table.get((namespace, evt_key))
        return found if found is not None else table.get((None, evt_key))

    def current_version(self, namespace: str | None, evt_key: str) -> int:
        """The schema version new events of this type are written with."""
        if not self._current:
            return 1
        return self._lookup(self._current, namespace, evt_key) or 1

    def resolve(self, namespace: str | None, evt_key: str) -> str:
        """The current name of an event key (following renames)."""
        while self._aliases:
            new = self._lookup(self._aliases, namespace, evt_key)
            if new is None:
                break
            evt_key = new
        return evt_key

    def stored_keys(self, evt_keys: Iterable[str], namespace: str | None = None) -> list[str]:
        """The keys to look for in the store: each key and every old name it had."""
        wanted = list(evt_keys)
        if not self._aliases:
            return wanted
        result = list(wanted)
        targets = set(wanted)
        for (ns, old), _new in self._aliases.items():
            if (namespace is None or ns is None or ns == namespace) and self.resolve(ns, old) in targets:
                result.append(old)
        return list(dict.fromkeys(result))

    def aliases(self) -> dict[Key, str]:
        return dict(self._aliases)

    def upcasters(self) -> dict[Key, dict[int, Upcaster]]:
        return {key: dict(chain) for key, chain in self._upcasters.items()}

    def __bool__(self) -> bool:
        return bool(self._upcasters or self._aliases)

    # -- decoding --------------------------------------------------------------

    def decode(self, event: Any) -> Any:
        """Bring one stored event into the current shape, in place; ``EventDecodeError`` if it cannot be."""
        if type(event.payload) is not dict:
            raise decode_error(event, f"its payload is a {type(event.payload).__name__}, not a JSON object.")
        if not (self._upcasters or self._aliases):
            if event.schema_version != 1:
                self._check_known_version(event, 1)
            return event
        stored_key, stored_version = event.evt_key, event.schema_version
        namespace = event.namespace
        evt_key = self.resolve(namespace, stored_key)
        current = self.current_version(namespace, evt_key)
        if stored_version == current and evt_key == stored_key:
            return event
        event.evt_key = evt_key
        if stored_version != current:
            self._check_known_version(event, current)
            chain = self._lookup(self._upcasters, namespace, evt_key) or {}
            payload = event.payload
            for version in range(stored_version, current):
                step = chain.get(version)
                if step is None:
                    raise decode_error(event, f"no upcaster turns {evt_key!r} schema v{version} into "
                                              f"v{version + 1} (the code is at v{current}).")
                try:
                    payload = step(dict(payload), event)
                except Exception as exc:
                    raise decode_error(event, f"upcaster {step.name} (v{version} -> v{version + 1}) failed: "
                                              f"{type(exc).__name__}: {exc}") from exc
                if type(payload) is not dict:
                    raise decode_error(event, f"upcaster {step.name} returned a {type(payload).__name__}, "
                                              "not a dict.")
            event.payload = payload
            event.schema_version = current
        # What was stored, for tools that show it (fluvius_stream, the admin).
        event.stored_as = (stored_key, stored_version)
        return event

    @staticmethod
    def _check_known_version(event: Any, current: int) -> None:
        version = event.schema_version
        if not isinstance(version, int) or version < 1:
            raise decode_error(event, f"its schema version {version!r} is not a version.")
        if version > current:
            raise decode_error(event, f"it was written with schema v{version}, newer than this code "
                                      f"knows (v{current}); deploy the code that wrote it.")


registry = UpcasterRegistry()


def upcaster(evt_key: str, version: int, *, namespace: str | None = None
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``func(payload) -> payload`` (or ``func(payload, event)``) turning v``version`` into the next."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        func.upcaster = registry.register(evt_key, version, func, namespace=namespace)  # type: ignore[attr-defined]
        return func

    return decorator


def rename_event(old: str, new: str, *, namespace: str | None = None) -> None:
    """Stored events keyed ``old`` are read as ``new`` (then upcast like any ``new`` event)."""
    registry.rename(old, new, namespace=namespace)


def current_version(namespace: str | None, evt_key: str) -> int:
    return registry.current_version(namespace, evt_key)


def autodiscover() -> None:
    """Import ``upcasters.py`` of every installed app, like ``admin.py``."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("upcasters")


# -- which keys the code knows ---------------------------------------------------

_known_cache: dict[type, frozenset[str]] = {}


def foldable_keys(aggregate_class: type[Aggregate]) -> frozenset[str]:
    """The event keys an aggregate class can fold: its actions' keys and its ``@apply`` keys."""
    known = _known_cache.get(aggregate_class)
    if known is None:
        known = frozenset({spec.evt_key for spec in aggregate_class.actions().values()}
                          | set(getattr(aggregate_class, "_appliers", {})) | {ERASED_EVT_KEY})
        _known_cache[aggregate_class] = known
    return known


_fingerprints: dict[tuple[type, str, tuple[int, ...]], str] = {}


def fold_fingerprint(aggregate_class: type[Aggregate], namespace: str) -> str:
    """A digest of the schema version of every key the class folds, in this namespace.

    Snapshots store it: state folded before an upcaster was added (or removed)
    has the old shape, so such snapshots no longer match and are ignored.
    """
    keys = sorted(foldable_keys(aggregate_class))
    versions = tuple(registry.current_version(namespace, key) for key in keys)
    digest = _fingerprints.get((aggregate_class, namespace, versions))
    if digest is None:
        text = "|".join(f"{key}:{version}" for key, version in zip(keys, versions, strict=True))
        digest = hashlib.sha256(text.encode()).hexdigest()[:32]
        _fingerprints[(aggregate_class, namespace, versions)] = digest
    return digest


def check_foldable(aggregate: Any, event: Any) -> None:
    """Refuse to fold an event whose key the aggregate class does not know (its state would be a guess)."""
    if event.evt_key not in foldable_keys(type(aggregate)):
        raise decode_error(
            event,
            f"{type(aggregate).__qualname__} has no action or @apply for {event.evt_key!r}; "
            f"declare it, or rename_event({event.evt_key!r}, '<current key>') if it was renamed.",
        )


def known_keys(domain_class: type) -> frozenset[str]:
    aggregate = getattr(domain_class, "__aggregate__", None)
    return foldable_keys(aggregate) if aggregate is not None else frozenset()


# -- system checks (fluvius.E050-E059, W050-W059) --------------------------------


def stored_event_types(using: str) -> list[tuple[str, str, int, int]]:
    """(namespace, evt_key, schema_version, count) of every event type in the store."""
    from django.db.models import Count


    rows = (Event.objects.using(using).order_by().values_list("namespace", "evt_key", "schema_version")
            .annotate(n=Count("position")))
    return [(ns, key, version, n) for ns, key, version, n in rows]


def event_type_problems(types: Sequence[tuple[str, str, int, int]]) -> list[checks.CheckMessage]:
    """What is wrong with the stored event types, as system-check messages."""

    by_namespace = {d.__namespace__: d for d in domains}
    messages: list[checks.CheckMessage] = []
    for namespace, stored_key, version, count in types:
        domain = by_namespace.get(namespace)
        evt_key = registry.resolve(namespace, stored_key)
        label = repr(stored_key) if evt_key == stored_key else f"{stored_key!r} (renamed {evt_key!r})"
        if domain is None:
            messages.append(checks.Warning(
                f"{count} stored event(s) {label} belong to namespace {namespace!r}, which no registered "
                "domain declares.",
                hint="Add the domain to FLUVIUS['DOMAINS'], or ignore this if it was retired on purpose.",
                id="fluvius.W050",
            ))
            continue
        if evt_key not in known_keys(domain):
            messages.append(checks.Error(
                f"{count} stored event(s) {label} of namespace {namespace!r}: no action or @apply of "
                f"{domain.__aggregate__.__qualname__} knows this key, so those aggregates cannot be loaded.",
                hint=f"Add @apply({evt_key!r}) or rename_event({stored_key!r}, '<current key>').",
                obj=domain, id="fluvius.E050",
            ))
            continue
        current = registry.current_version(namespace, evt_key)
        if version > current:
            messages.append(checks.Error(
                f"{count} stored event(s) {label} of namespace {namespace!r} have schema v{version}, "
                f"newer than this code (v{current}).",
                hint="Deploy the code that wrote them.", obj=domain, id="fluvius.E052",
            ))
            continue
        chain = registry._lookup(registry._upcasters, namespace, evt_key) or {}
        missing = [v for v in range(version, current) if v not in chain]
        if missing:
            messages.append(checks.Error(
                f"{count} stored event(s) {label} of namespace {namespace!r} have schema v{version}, but no "
                f"upcaster turns v{missing[0]} into v{missing[0] + 1}.",
                hint=f"Register @upcaster({evt_key!r}, version={missing[0]}).", obj=domain, id="fluvius.E051",
            ))
    return messages


def declaration_problems() -> list[checks.CheckMessage]:
    """Renames and upcasters that cannot work, found without the database."""

    messages: list[checks.CheckMessage] = []
    all_known: dict[str | None, frozenset[str]] = {d.__namespace__: known_keys(d) for d in domains}
    everywhere = frozenset().union(*all_known.values()) if all_known else frozenset()

    def knows(namespace: str | None, evt_key: str) -> bool:
        return evt_key in (everywhere if namespace is None else all_known.get(namespace, frozenset()))

    for (namespace, old), new in registry.aliases().items():
        if knows(namespace, old):
            messages.append(checks.Error(
                f"Event key {old!r} is renamed to {new!r} but an action or @apply still uses {old!r}.",
                hint="Stored events keep one meaning: rename the action's evt_key too, or drop the rename.",
                id="fluvius.E053",
            ))
        final = registry.resolve(namespace, new)
        if domains and not knows(namespace, final):
            messages.append(checks.Warning(
                f"Event key {old!r} is renamed to {final!r}, which no action or @apply knows.",
                hint="Check the spelling of the new key.", id="fluvius.W051",
            ))
    for (namespace, evt_key), chain in registry.upcasters().items():
        gaps = [v for v in range(min(chain), max(chain)) if v not in chain]
        if gaps:
            messages.append(checks.Error(
                f"Upcasters of {evt_key!r} skip version(s) {', '.join(map(str, gaps))}; events of those "
                "versions cannot reach the current schema.",
                hint="Register the missing steps (each upcaster turns vN into vN+1).", id="fluvius.E054",
            ))
        if domains and not knows(namespace, evt_key):
            messages.append(checks.Warning(
                f"Upcasters are registered for {evt_key!r}, which no action or @apply knows.",
                hint="Check the spelling of the key.", id="fluvius.W052",
            ))
    return messages


def check_upcasters(app_configs=None, **kwargs):
    return declaration_problems()


def check_stored_event_types(app_configs=None, databases=None, **kwargs):
    """Database check (``manage.py check --database default``, ``migrate``): stored keys no code knows."""
    from django.db import DatabaseError


    using = fluvius_settings.DATABASE
    if not databases or using not in databases:
        return []
    try:
        types = stored_event_types(using)
    except DatabaseError:
        return []  # not migrated yet: nothing stored to check
    return event_type_problems(types)
