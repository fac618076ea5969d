"""Rendering helpers shared by the admin pages: pretty JSON with a size cap, state diffs.

Payloads can be large; every place that shows one goes through ``pretty_json`` so
a multi-megabyte payload becomes a readable head and a note instead of a page
the browser chokes on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.html import format_html

# Characters of pretty JSON shown inline before the rest is cut (the raw JSON
# view serves the whole document).
PRETTY_LIMIT = 100_000
MISSING = object()


@dataclass(frozen=True)
class PrettyJSON:
    text: str
    size: int  # characters of the whole pretty document
    truncated: bool


def dumps(value: Any, *, indent: int | None = 2) -> str:
    return json.dumps(value, indent=indent, sort_keys=True, ensure_ascii=False, cls=DjangoJSONEncoder)


def pretty_json(value: Any, limit: int = PRETTY_LIMIT) -> PrettyJSON:
    text = dumps(value)
    if len(text) <= limit:
        return PrettyJSON(text, len(text), False)
    return PrettyJSON(text[:limit], len(text), True)


def human_size(chars: int) -> str:
    for unit, size in (("MB", 1_000_000), ("kB", 1_000)):
        if chars >= size:
            return f"{chars / size:.1f} {unit}"
    return f"{chars} characters"


def json_block(value: Any, limit: int = PRETTY_LIMIT, raw_url: str | None = None):
    """A ``<pre>`` of pretty JSON; past ``limit`` a note says how much is hidden."""
    pretty = pretty_json(value, limit)
    if not pretty.truncated:
        return format_html('<pre class="fluvius-json">{}</pre>', pretty.text)
    note = f"Showing the first {human_size(limit)} of {human_size(pretty.size)}."
    if raw_url:
        return format_html(
            '<pre class="fluvius-json">{}\n…</pre><p class="help fluvius-truncated">{} '
            '<a href="{}">Download the whole JSON</a>.</p>', pretty.text, note, raw_url,
        )
    return format_html('<pre class="fluvius-json">{}\n…</pre><p class="help fluvius-truncated">{}</p>',
                       pretty.text, note)


def preview(value: Any, limit: int = 120) -> str:
    """One line of compact JSON for list columns."""
    text = value if isinstance(value, str) else dumps(value, indent=None)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A UUID in a one-line summary: its first 8 characters say enough to tell rows apart.
UUID_TEXT = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)":\s*')
JSON_TEXT = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _short(value: Any) -> str:
    if isinstance(value, str):
        if UUID_TEXT.match(value):
            return value[:8] + "…"
        return value if len(value) <= 40 else value[:39] + "…"
    if isinstance(value, list):
        return f"[{len(value)} item{'' if len(value) == 1 else 's'}]"
    if isinstance(value, dict):
        return "{" + ", ".join(str(k) for k in value) + "}"
    return dumps(value, indent=None)


def summary(text: str, limit: int = 160) -> str:
    """One line naming a payload's fields: ``sku: PEN-7, quantity: 3, price: 1.20``.

    ``text`` is the JSON document, or only its first characters (the event list
    reads a prefix, not whole payloads): a document cut short is shown with its
    keys and quotes stripped, never parsed as a whole.
    """
    try:
        value = json.loads(text)
    except ValueError:
        # Keys and whole strings lose their quotes; the quote of a string cut short goes too.
        line = JSON_TEXT.sub(r"\1", JSON_KEY.sub(r"\1: ", text.strip().removeprefix("{"))).replace('"', "") + "…"
    else:
        if isinstance(value, dict):
            line = ", ".join(f"{key}: {_short(item)}" for key, item in value.items()) or "{}"
        else:
            line = _short(value)
    return line if len(line) <= limit else line[: limit - 1] + "…"


# -- diffs --------------------------------------------------------------------

@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added", "removed" or "changed"
    old: Any = None
    new: Any = None

    @property
    def old_text(self) -> str:
        return "" if self.kind == "added" else preview(dumps(self.old, indent=None), 300)

    @property
    def new_text(self) -> str:
        return "" if self.kind == "removed" else preview(dumps(self.new, indent=None), 300)


def diff(old: Any, new: Any, path: str = "") -> list[Change]:
    """What changed between two JSON-like values, as dotted paths (``items[2].price``).

    Dicts are compared key by key and lists index by index, so one changed field
    deep inside a large state is reported as that field, not the whole state.
    """
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[Change] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            changes.extend(_diff_member(old.get(key, MISSING), new.get(key, MISSING), sub))
        return changes
    if isinstance(old, list) and isinstance(new, list):
        changes = []
        for index in range(max(len(old), len(new))):
            a = old[index] if index < len(old) else MISSING
            b = new[index] if index < len(new) else MISSING
            changes.extend(_diff_member(a, b, f"{path}[{index}]"))
        return changes
    if _normal(old) == _normal(new):
        return []
    return [Change(path or "(state)", "changed", old, new)]


def _diff_member(old: Any, new: Any, path: str) -> list[Change]:
    if old is MISSING:
        return [Change(path, "added", None, new)]
    if new is MISSING:
        return [Change(path, "removed", old, None)]
    return diff(old, new, path)


def _normal(value: Any) -> Any:
    """Compare as stored JSON would: a Decimal and its string, a date and its ISO text, are one."""
    return json.loads(dumps(value, indent=None))
