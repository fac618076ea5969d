"""Filtering, ordering and search of resource lists from query parameters.

(Placeholder until the query-surface work lands: exact-match filters only.)
"""

from __future__ import annotations

from typing import Any


class ResourceFilterBackend:
    """A DRF filter backend: ``field=``, ``field__op=``, ``ordering=``, ``search=``."""

    reserved = {"limit", "offset", "cursor", "ordering", "search", "format", "page", "count"}

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        filters = {k: v for k, v in request.query_params.items() if k not in self.reserved}
        return queryset.filter(**filters) if filters else queryset
