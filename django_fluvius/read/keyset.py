"""Keyset ("cursor") pagination: pages that stay stable while rows are inserted.

A page is cut with ``WHERE (ordering fields) > (values of the last row seen)``
instead of ``OFFSET n``, so a page deep in a large table costs as much as the
first one (an index range scan, no skipped rows) and a row inserted on an earlier
page never shifts later pages. The primary key always ends the ordering, which
makes every position unique.

The cursor is opaque to clients: the ordering and the last row's values, signed
with Django's ``signing`` (a tampered or foreign cursor is a 400, never a query).
"""

from __future__ import annotations

import datetime
import decimal
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils.duration import duration_iso_string

from django_fluvius.exceptions import InvalidQuery
from django_fluvius.read.surface import order_expression
from django_fluvius.text import safe_text, text_problem

SALT = "django_fluvius.cursor"
NEXT = "n"
PREVIOUS = "p"


@dataclass(frozen=True)
class OrderTerm:
    """One ORDER BY term: a field path, its direction and the model field behind it."""

    name: str
    desc: bool
    field: Any

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.field, "null", False))

    @property
    def expression(self) -> Any:
        return order_expression(self.name, self.desc, self.nullable)

    def reversed(self) -> OrderTerm:
        return OrderTerm(self.name, not self.desc, self.field)

    @property
    def label(self) -> str:
        return f"-{self.name}" if self.desc else self.name


# -- values <-> JSON ----------------------------------------------------------

def _dump_value(value: Any) -> Any:
    # isoformat keeps microseconds (DjangoJSONEncoder would cut them to milliseconds,
    # and a cursor must hold the exact value it compares against).
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return duration_iso_string(value)
    if isinstance(value, uuid.UUID | decimal.Decimal):
        return str(value)
    return str(value)


def _load_value(term: OrderTerm, value: Any) -> Any:
    if value is None:
        return None
    model_field = getattr(term.field, "target_field", None) if term.field.is_relation else term.field
    return (model_field or term.field).to_python(value)


def row_value(row: Any, term: OrderTerm) -> Any:
    """The value of ``term`` on a model instance (following ``a__b`` relations)."""
    obj = row
    for part in term.name.split("__")[:-1]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return getattr(obj, term.field.attname)


def encode(terms: Sequence[OrderTerm], values: Sequence[Any], direction: str = NEXT) -> str:
    payload = {"o": [t.label for t in terms], "v": [_dump_value(v) for v in values], "d": direction}
    return signing.dumps(payload, salt=SALT, compress=True)


def encode_row(terms: Sequence[OrderTerm], row: Any, direction: str = NEXT) -> str:
    return encode(terms, [row_value(row, t) for t in terms], direction)


def decode(token: str, terms: Sequence[OrderTerm]) -> tuple[list[Any], str]:
    """(values, direction) of a cursor made for ``terms``; ``InvalidQuery`` otherwise."""
    try:
        payload = signing.loads(token, salt=SALT)
        labels, raw_values, direction = payload["o"], payload["v"], payload["d"]
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise InvalidQuery({"cursor": ["is not a valid cursor (use the next or previous cursor "
                                       "of a response as it is)."]}) from None
    # Signed is not well-formed: a cursor re-signed with the project's key (or made by
    # an older version) may hold any JSON. Its shape is checked before any of it is used
    # (``"v": 5`` was a TypeError, a lone surrogate a database error: both 500s).
    if not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)
            and isinstance(raw_values, list) and all(_is_scalar(v) for v in raw_values)):
        raise InvalidQuery({"cursor": ["is not a valid cursor."]})
    expected = [t.label for t in terms]
    if labels != expected or len(raw_values) != len(terms) or direction not in (NEXT, PREVIOUS):
        raise InvalidQuery({"cursor": [f"was made for the ordering {safe_text(','.join(labels))[:200]}, "
                                       f"not {','.join(expected)}; start again without a cursor."]})
    try:
        values = [_load_value(t, v) for t, v in zip(terms, raw_values, strict=True)]
    except (ValidationError, TypeError, ValueError, OverflowError, ArithmeticError):
        raise InvalidQuery({"cursor": ["is not a valid cursor."]}) from None
    return values, direction


def _is_scalar(value: Any) -> bool:
    """A value a cursor may hold: a number, a boolean, None, or text the database can take."""
    if isinstance(value, str):
        return text_problem(value) is None and len(value) <= 1000
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int)


# -- the WHERE clause ---------------------------------------------------------

def _equal(term: OrderTerm, value: Any) -> Q:
    return Q(**{f"{term.name}__isnull": True}) if value is None else Q(**{term.name: value})


def _strictly_after(term: OrderTerm, value: Any) -> Q | None:
    """Rows whose ``term`` comes strictly after ``value`` (None: no row can).

    Nulls sort last going up and first going down (see ``order_expression``).
    """
    if term.desc:
        if value is None:
            return Q(**{f"{term.name}__isnull": False})
        return Q(**{f"{term.name}__lt": value})
    if value is None:
        return None
    after = Q(**{f"{term.name}__gt": value})
    return after | Q(**{f"{term.name}__isnull": True}) if term.nullable else after


def after(terms: Sequence[OrderTerm], values: Sequence[Any]) -> Q:
    """Rows strictly after the position ``values`` in the ordering ``terms``.

    (a, b, pk) > (va, vb, vpk) expands to a > va OR (a = va AND b > vb) OR ...;
    the extra ``a >= va`` in front gives the database an index range to start from
    (an OR alone would make PostgreSQL scan from the first row).
    """
    clauses: Q | None = None
    prefix = Q()
    for term, value in zip(terms, values, strict=True):
        step = _strictly_after(term, value)
        if step is not None:
            clause = prefix & step
            clauses = clause if clauses is None else clauses | clause
        prefix &= _equal(term, value)
    if clauses is None:
        return Q(pk__in=[])
    first, first_value = terms[0], values[0]
    if not first.nullable and first_value is not None:
        bound = Q(**{f"{first.name}__lte" if first.desc else f"{first.name}__gte": first_value})
        return bound & clauses
    return clauses
