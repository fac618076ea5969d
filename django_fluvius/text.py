"""Text a client sent, checked for what cannot be stored or rendered.

Two kinds of character pass JSON parsing and Python's ``str`` but fail later:
NUL (``\\u0000``), which PostgreSQL refuses in text and jsonb columns, and lone
surrogates (``\\ud800``), which cannot be encoded as UTF-8 (the database driver
and DRF's renderer raise ``UnicodeEncodeError``). Both were 500s. Validation
refuses them (``text_problem``); what must be written or shown whatever was
sent -- the command log, an error body -- uses ``storable`` and ``safe_text``.
This module imports nothing of the package: every layer may use it.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udxxx``: always encodable as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if _SURROGATE.search(text) else text


def text_problem(text: str) -> str | None:
    """Why a string cannot be stored (NUL, a lone surrogate), or None."""
    if "\x00" in text:
        # PostgreSQL refuses NUL in text and jsonb (a DataError after validation).
        return "contains a NUL character (\\u0000)."
    if _SURROGATE.search(text):
        # Not encodable as UTF-8: the database driver and the JSON renderer both fail on it.
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid Unicode."
    return None


def storable(value: Any) -> Any:
    """``value`` (JSON-like) with NUL and lone surrogates replaced by U+FFFD, in keys and strings.

    For what must be written whatever a client sent (the command log): the record
    of a refusal can never fail on the payload that was refused.
    """
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value.replace("\x00", "\ufffd"))
    if isinstance(value, dict):
        return {storable(k) if isinstance(k, str) else k: storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
