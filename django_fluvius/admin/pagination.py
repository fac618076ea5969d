"""A paginator that never counts a big table row by row.

Django's admin asks its paginator for ``count`` on every list page. On a table
of millions of events an exact ``COUNT(*)`` is the slowest part of the page, so
``EstimatedCountPaginator`` counts exactly only up to ``cap`` rows (a
``LIMIT``-ed subquery, cheap whatever the table size) and past that asks the
database for an estimate: PostgreSQL's statistics (``pg_class.reltuples`` for
the whole table, the planner's row estimate for a filtered list), or the
position range elsewhere. ``is_estimate`` tells the template to say "about".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cached_property
from typing import Any

from django.core.paginator import Paginator
from django.db import connections

DEFAULT_CAP = 10_000


def _postgresql_estimate(queryset) -> int | None:
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


def _range_estimate(queryset) -> int | None:
    """Without statistics: an unfiltered table's primary-key span (events' positions are dense)."""
    if queryset.query.has_filters():
        return None
    pk = queryset.model._meta.pk
    if pk.get_internal_type() not in ("AutoField", "BigAutoField"):
        return None
    first = queryset.order_by("pk").values_list("pk", flat=True).first()
    last = queryset.order_by("-pk").values_list("pk", flat=True).first()
    return (last - first + 1) if first is not None else 0


ESTIMATORS: dict[str, Callable] = {
    "postgresql": _postgresql_estimate,
}


class EstimatedCountPaginator(Paginator):
    cap = DEFAULT_CAP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_estimate = False

    @cached_property
    def count(self) -> int:
        queryset: Any = self.object_list
        if not hasattr(queryset, "query"):
            return super().count
        exact = queryset.order_by()[: self.cap + 1].count()
        if exact <= self.cap:
            return exact
        estimator = ESTIMATORS.get(connections[queryset.db].vendor, _range_estimate)
        estimate = estimator(queryset)
        if estimate is None:
            # No way to estimate this filtered list here (SQLite): count it.
            return queryset.count()
        self.is_estimate = True
        return max(estimate, self.cap + 1)
