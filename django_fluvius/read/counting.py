"""Counting rows without a full ``COUNT(*)`` of a big table.

``count_rows(queryset, exact_up_to)`` counts exactly up to ``exact_up_to`` rows (a
``LIMIT``-ed subquery: cheap whatever the table's size) and past that asks the
database for an estimate: PostgreSQL's statistics (``pg_class.reltuples`` for a
whole table, the planner's row estimate for a filtered one), or an unfiltered
table's primary-key span elsewhere. It says whether the figure is an estimate, so
the admin can write "about" and the REST lists ``"count_estimated": true``.
Where nothing can estimate (a filtered list on SQLite) it counts exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.db import connections


def _postgresql_estimate(queryset: Any) -> int | None:
    connection = connections[queryset.db]
    if not queryset.query.has_filters():
        table = queryset.model._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table])
            row = cursor.fetchone()
        # -1 (or 0) means "never analyzed": fall through to the planner.
        if row and row[0] and row[0] > 0:
            return int(row[0])
    plan = json.loads(queryset.order_by().values("pk").explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def _range_estimate(queryset: Any) -> int | None:
    """Without statistics: an unfiltered table's primary-key span (events' positions are dense)."""
    if queryset.query.has_filters():
        return None
    pk = queryset.model._meta.pk
    if pk.get_internal_type() not in ("AutoField", "BigAutoField"):
        return None
    first = queryset.order_by("pk").values_list("pk", flat=True).first()
    last = queryset.order_by("-pk").values_list("pk", flat=True).first()
    return (last - first + 1) if first is not None else 0


# database vendor -> estimator(queryset) -> rows or None; others use _range_estimate.
ESTIMATORS: dict[str, Callable[[Any], int | None]] = {
    "postgresql": _postgresql_estimate,
}


def count_rows(queryset: Any, exact_up_to: int) -> tuple[int, bool]:
    """``(count, is_estimate)``: exact up to ``exact_up_to`` rows, an estimate past it."""
    exact = queryset.order_by()[: exact_up_to + 1].count()
    if exact <= exact_up_to:
        return exact, False
    estimator = ESTIMATORS.get(connections[queryset.db].vendor, _range_estimate)
    estimate = estimator(queryset)
    if estimate is None:
        return queryset.count(), False
    return max(estimate, exact_up_to + 1), True
