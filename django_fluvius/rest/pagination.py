"""Pagination of resource lists: ``limit``/``offset`` and ``cursor`` (keyset).

(Placeholder until the query-surface work lands: DRF's LimitOffsetPagination.)
"""

from rest_framework.pagination import LimitOffsetPagination


class ResourcePagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 1000
