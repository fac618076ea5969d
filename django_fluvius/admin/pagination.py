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

from functools import cached_property
from typing import Any

from django.core.paginator import Paginator

from django_fluvius.read.counting import count_rows

DEFAULT_CAP = 10_000


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
        total, self.is_estimate = count_rows(queryset, self.cap)
        return total
