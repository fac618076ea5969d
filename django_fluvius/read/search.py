"""Free-text search of a resource: PostgreSQL full-text search, a plain fallback elsewhere.

``apply_search(queryset, fields, text, config)`` is the one entry point; which
backend runs is looked up by the database vendor of the QuerySet (``BACKENDS``),
so the API is the same on PostgreSQL and SQLite:

- PostgreSQL: ``to_tsvector(config, f1 || ' ' || f2 ...) @@ to_tsquery(config, 'w1:* & w2:*')``,
  every word of the text as a prefix. Declare a ``SearchIndex`` with the same
  fields and config on the model and the query uses its GIN index.
- Anything else (SQLite, MariaDB / MySQL): every word must appear (``icontains``) in at
  least one field. MariaDB's FULLTEXT index is left unused on purpose: it sees rows only
  once their transaction commits, and never finds short or stop words, so results would
  differ from the other databases' (docs/databases.md).

The words are taken from the text with ``\\w+`` only, so no tsquery syntax (``&``,
``|``, ``!``, quotes) ever reaches the database from user input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections
from django.db.models import Index, Q, QuerySet

WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 16


def terms(text: str) -> list[str]:
    """The words of a search text, at most ``MAX_TERMS``, duplicates dropped."""
    seen: dict[str, None] = {}
    for word in WORD.findall(text or ""):
        seen.setdefault(word.lower(), None)
    return list(seen)[:MAX_TERMS]


def search_vector(fields: Sequence[str], config: str) -> Any:
    from django.contrib.postgres.search import SearchVector

    return SearchVector(*fields, config=config)


def _postgres(queryset: QuerySet, fields: Sequence[str], words: list[str], config: str) -> QuerySet:
    from django.contrib.postgres.search import SearchQuery

    # Each word is \w+ only, so quoting it and adding :* (prefix match) is safe tsquery.
    raw = " & ".join(f"'{word}':*" for word in words)
    query = SearchQuery(raw, search_type="raw", config=config)
    return queryset.alias(_fluvius_search=search_vector(fields, config)).filter(_fluvius_search=query)


def _contains(queryset: QuerySet, fields: Sequence[str], words: list[str], config: str) -> QuerySet:
    condition = Q()
    for word in words:
        any_field = Q()
        for name in fields:
            any_field |= Q(**{f"{name}__icontains": word})
        condition &= any_field
    return queryset.filter(condition)


# database vendor -> search implementation; anything else uses the plain fallback.
BACKENDS: dict[str, Callable[[QuerySet, Sequence[str], list[str], str], QuerySet]] = {
    "postgresql": _postgres,
}
FALLBACK = _contains


def apply_search(queryset: QuerySet, fields: Sequence[str], text: str, config: str = "simple") -> QuerySet:
    """Narrow ``queryset`` to rows where every word of ``text`` is found in ``fields``."""
    words = terms(text)
    if not words or not fields:
        return queryset  # nothing to look for (e.g. only punctuation): no narrowing
    vendor = connections[queryset.db].vendor
    return BACKENDS.get(vendor, FALLBACK)(queryset, fields, words, config)


def search_backend_name(alias: str = "default") -> str:
    vendor = connections[alias].vendor
    return "postgres-fulltext" if vendor in BACKENDS else "icontains"


class SearchIndex(Index):
    """A GIN index over ``to_tsvector(config, fields...)`` on PostgreSQL; nothing elsewhere.

    ``SearchIndex(fields=["name", "email"], config="simple", name="user_search")`` in a
    model's ``Meta.indexes`` matches the expression ``apply_search`` builds for the
    same fields and config, so full-text queries use it. On SQLite the migration
    runs (it is one initial migration for every backend) but creates nothing.
    """

    suffix = "search"

    def __init__(self, *, fields: Sequence[str], name: str, config: str = "simple"):
        if not fields:
            raise ValueError("SearchIndex needs at least one field.")
        self.search_fields = list(fields)
        self.config = config
        # Index needs expressions to compile on PostgreSQL; built lazily there, since
        # django.contrib.postgres needs psycopg at import.
        super().__init__(fields=list(fields), name=name)

    def deconstruct(self):
        path = f"{self.__class__.__module__}.{self.__class__.__name__}"
        return path, (), {"fields": list(self.search_fields), "name": self.name, "config": self.config}

    def clone(self):
        return self.__class__(fields=self.search_fields, name=self.name, config=self.config)

    def _skip(self, schema_editor: Any) -> str | None:
        if schema_editor.connection.vendor == "postgresql":
            return None
        # A comment: schema editors execute whatever the index returns, and this keeps
        # sqlmigrate honest about why nothing happens here.
        return f"-- {self.name}: full-text index, PostgreSQL only"

    def _gin(self):
        from django.contrib.postgres.indexes import GinIndex

        return GinIndex(search_vector(self.search_fields, self.config), name=self.name)

    def create_sql(self, model, schema_editor, using="", **kwargs):
        skipped = self._skip(schema_editor)
        if skipped is not None:
            return skipped
        return self._gin().create_sql(model, schema_editor, using=using, **kwargs)

    def remove_sql(self, model, schema_editor, **kwargs):
        skipped = self._skip(schema_editor)
        if skipped is not None:
            return skipped
        return self._gin().remove_sql(model, schema_editor, **kwargs)

    def __eq__(self, other):
        if isinstance(other, SearchIndex):
            return self.deconstruct() == other.deconstruct()
        return NotImplemented

    def __hash__(self):
        return hash((self.name, tuple(self.search_fields), self.config))
