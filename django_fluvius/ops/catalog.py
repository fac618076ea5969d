"""The domain map: what each domain's commands produce and who listens, read from the code.

``domain_map()`` walks the registered code, never a hand-kept list, so the map
cannot drift from what runs: each domain's ``@action`` commands, the event each
one produces, and every subscriber of that event — the resource projections the
domain keeps inline, the async projections, the event handlers, and, for a
handler that is a process manager, the commands it issues (found by reading the
handler's source for ``issue(SomeDomain, "command-key", ...)`` calls, see
process.py; a key computed at run time is not seen).

It sits with ``inspection`` (what the code registers, for operators); the payload
schemas come from the caller (``schema_of``), the REST layer's ``json_schema``.

The map is rendered three ways for ``manage.py fluvius_catalog`` (Markdown,
Mermaid, AsyncAPI 3) and drawn as HTML by the admin's domain-map pages. An
event's payload schema in the AsyncAPI document is the JSON Schema of the
producing action's signature (what the command is given; ``@apply`` may fold it
differently into the state).
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django_fluvius.delivery.handlers import ALL_EVENTS, handlers
from django_fluvius.delivery.projections import async_projections
from django_fluvius.registry import domains

# A payload's JSON Schema from the action's serializer class: given by the faces that
# draw the map (rest.schema.json_schema), so this layer does not import them.
SchemaOf = Callable[[Any], dict[str, Any]]


def label(key: str) -> str:
    """``lend-book`` -> ``Lend book``."""
    text = key.replace("-", " ").replace("_", " ")
    return text[:1].upper() + text[1:]


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring as one line of text (reST markup left as written)."""
    text = inspect.cleandoc(doc or "").split("\n\n", 1)[0]
    return " ".join(text.split())


@dataclass
class CommandInfo:
    namespace: str
    key: str
    evt_key: str
    create: bool
    resources: tuple[str, ...]
    description: str
    schema: dict[str, Any]

    @property
    def label(self) -> str:
        return label(self.key)


@dataclass
class Subscriber:
    name: str
    kind: str  # "projection" (inline), "async projection", "handler", "process manager"
    description: str = ""
    issues: list[tuple[str, str]] = field(default_factory=list)  # (namespace, command key)

    @property
    def short_name(self) -> str:
        return self.name.rsplit(".", 1)[-1]


@dataclass
class EventInfo:
    namespace: str
    evt_key: str
    produced_by: list[CommandInfo]
    subscribers: list[Subscriber]


@dataclass
class DomainInfo:
    namespace: str
    name: str
    description: str
    resources: dict[str, str]  # resource -> model label
    commands: list[CommandInfo]
    events: list[EventInfo]

    def event(self, evt_key: str) -> EventInfo:
        return next(e for e in self.events if e.evt_key == evt_key)

    def rows(self) -> list[tuple[CommandInfo, EventInfo]]:
        """(command, the event it produces), in the aggregate's order of actions."""
        return [(command, self.event(command.evt_key)) for command in self.commands]


# -- reading the code -------------------------------------------------------------


def issued_commands(func: Any) -> list[tuple[str, str]]:
    """The (namespace, command key) pairs a handler issues with ``issue(Domain, "key", ...)``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):  # no source (built in, compiled): nothing to show
        return []
    found = []
    try:
        names = inspect.getclosurevars(func)
        scope = {**names.builtins, **names.globals, **names.nonlocals}
    except TypeError:
        scope = getattr(func, "__globals__", {})
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and len(node.args) >= 2):
            continue
        callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        domain_arg, key_arg = node.args[0], node.args[1]
        if callee != "issue" or not isinstance(domain_arg, ast.Name):
            continue
        if not (isinstance(key_arg, ast.Constant) and isinstance(key_arg.value, str)):
            continue
        namespace = getattr(scope.get(domain_arg.id), "__namespace__", None)
        if namespace:
            found.append((namespace, key_arg.value))
    return found


def _listens(keys: Any, namespace: str | None, event_namespace: str, evt_key: str) -> bool:
    if namespace is not None and namespace != event_namespace:
        return False
    return ALL_EVENTS in keys or evt_key in keys


def _external_subscribers() -> list[tuple[Any, str | None, Subscriber]]:
    """(event keys, namespace or None, subscriber) of every handler and async projection."""
    found: list[tuple[Any, str | None, Subscriber]] = []
    for spec in handlers:
        issues = issued_commands(spec.func)
        found.append((spec.evt_keys, spec.namespace, Subscriber(
            spec.name, "process manager" if issues else "handler",
            first_paragraph(spec.func.__doc__), issues)))
    for cls in async_projections:
        found.append((tuple(cls.keys()), cls.namespace,
                      Subscriber(cls.name, "async projection", first_paragraph(cls.__doc__))))
    return found


def domain_map(schema_of: SchemaOf | None = None) -> list[DomainInfo]:
    """Every registered domain, its commands, their events and each event's subscribers.

    ``schema_of(serializer_class)`` gives each command's payload schema (empty without it).
    """
    listeners = _external_subscribers()
    result = []
    for domain in sorted(domains, key=lambda d: d.__namespace__):
        namespace = domain.__namespace__
        resources = {name: _model_label(domain, name) for name in getattr(domain, "__resources__", {})}
        commands = [
            CommandInfo(namespace, key, spec.evt_key, spec.create, tuple(spec.resources),
                        first_paragraph(spec.description or spec.func.__doc__),
                        schema_of(spec.serializer_class) if schema_of else {})
            for key, spec in domain.commands().items()
        ]
        events: dict[str, EventInfo] = {}
        for command in commands:
            event = events.setdefault(command.evt_key, EventInfo(namespace, command.evt_key, [], []))
            event.produced_by.append(command)
        for event in events.values():
            touched = {r for c in event.produced_by for r in (c.resources or tuple(resources))}
            event.subscribers.extend(
                Subscriber(f"{namespace}.{name}", "projection", f"keeps {resources[name]}")
                for name in resources if name in touched and resources[name])
            event.subscribers.extend(sub for keys, ns, sub in listeners
                                     if _listens(keys, ns, namespace, event.evt_key))
        result.append(DomainInfo(namespace, domain.__qualname__, first_paragraph(domain.__doc__),
                                 resources, commands, list(events.values())))
    return result


def _model_label(domain: Any, resource: str) -> str:
    try:
        return domain.resource_model(resource)._meta.label
    except Exception:  # noqa: BLE001 - a resource without a model is shown without one
        return ""


# -- renderings -------------------------------------------------------------------


def to_markdown(maps: list[DomainInfo]) -> str:
    lines = ["# Domain map", ""]
    for info in maps:
        lines += [f"## {info.namespace} ({info.name})", ""]
        if info.description:
            lines += [info.description, ""]
        lines += ["| command | event | subscribers |", "|---|---|---|"]
        for command in info.commands:
            event = info.event(command.evt_key)
            subs = "<br>".join(_subscriber_text(s) for s in event.subscribers) or "—"
            lines.append(f"| **{command.label}** `{command.key}`{' (creates)' if command.create else ''} "
                         f"| `{command.evt_key}` | {subs} |")
        lines.append("")
    return "\n".join(lines)


def _subscriber_text(sub: Subscriber) -> str:
    text = f"{sub.kind}: `{sub.short_name}`"
    if sub.issues:
        text += " → " + ", ".join(f"`{ns}:{key}`" for ns, key in sub.issues)
    return text


def _node(*parts: str) -> str:
    return "_".join(parts).replace("-", "_").replace(".", "_").replace(":", "_")


def to_mermaid(maps: list[DomainInfo]) -> str:
    lines = ["flowchart LR"]
    edges = []
    for info in maps:
        lines.append(f'  subgraph {_node("d", info.namespace)}["{info.namespace}"]')
        for command in info.commands:
            lines.append(f'    {_node("c", info.namespace, command.key)}["{command.label}"]')
        for event in info.events:
            lines.append(f'    {_node("e", info.namespace, event.evt_key)}(["{event.evt_key}"])')
        lines.append("  end")
        for command in info.commands:
            edges.append(f'  {_node("c", info.namespace, command.key)} --> '
                         f'{_node("e", info.namespace, command.evt_key)}')
        for event in info.events:
            for sub in event.subscribers:
                shape = f'[("{sub.short_name}")]' if "projection" in sub.kind else f'[["{sub.short_name}"]]'
                node = _node("s", sub.name)
                edges.append(f'  {_node("e", info.namespace, event.evt_key)} --> {node}{shape}')
                for namespace, key in sub.issues:
                    edges.append(f'  {node} -. issues .-> {_node("c", namespace, key)}')
    return "\n".join(lines + list(dict.fromkeys(edges))) + "\n"


def to_asyncapi(maps: list[DomainInfo], *, title: str = "Domain events", version: str = "1.0.0") -> dict:
    """An AsyncAPI 3.0.0 document: one channel per domain, one message per event."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for info in maps:
        channel: dict[str, Any] = {"address": info.namespace, "title": info.name, "messages": {}}
        if info.description:
            channel["description"] = info.description
        for event in info.events:
            message_id = f"{info.namespace}.{event.evt_key}"
            producer = event.produced_by[0]
            messages[message_id] = {
                "name": event.evt_key,
                "title": label(event.evt_key),
                "summary": f"Produced by {', '.join(c.key for c in event.produced_by)}.",
                "contentType": "application/json",
                "payload": producer.schema,
            }
            channel["messages"][event.evt_key] = {"$ref": f"#/components/messages/{message_id}"}
        channels[info.namespace] = channel
        for command in info.commands:
            operation: dict[str, Any] = {
                "action": "send", "title": command.label,
                "channel": {"$ref": f"#/channels/{info.namespace}"},
                "messages": [{"$ref": f"#/channels/{info.namespace}/messages/{command.evt_key}"}],
            }
            if command.description:
                operation["summary"] = command.description
            operations[f"{info.namespace}.{command.key}"] = operation
        receivers: dict[str, list[str]] = {}
        for event in info.events:
            for sub in event.subscribers:
                receivers.setdefault(sub.name, []).append(event.evt_key)
        for name, keys in receivers.items():
            operations[f"{info.namespace}.{name}"] = {
                "action": "receive", "title": name.rsplit(".", 1)[-1],
                "channel": {"$ref": f"#/channels/{info.namespace}"},
                "messages": [{"$ref": f"#/channels/{info.namespace}/messages/{key}"} for key in keys],
            }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": title, "version": version,
                 "description": "Events of the registered domains, produced by their commands."},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


RENDERERS = {
    "markdown": to_markdown,
    "mermaid": to_mermaid,
    "asyncapi": lambda maps: json.dumps(to_asyncapi(maps), indent=2, sort_keys=False, default=str) + "\n",
}
