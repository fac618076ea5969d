"""Pagination of resource lists: ``limit``/``offset`` and ``cursor`` (keyset).

- ``?limit=20&offset=40``: a page by position (DRF's ``LimitOffsetPagination`` shape).
- ``?cursor=`` (empty to start) and then the ``next`` / ``previous`` links: keyset
  pages, stable while rows are inserted and as fast deep in a table as at its start.
- ``?count=true``: add the total ``count`` (it costs a ``COUNT(*)``, so it is opt-in).

The body is ``{"count"?, "next", "previous", "results"}``. Limits are bounded by
the resource's query surface (``default_limit``, ``max_limit``); a bad limit,
offset or cursor is a 400, like any other bad parameter.
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from django_fluvius.rest.filters import builder_for, view_surface


class ResourcePagination(BasePagination):
    limit_query_param = "limit"
    offset_query_param = "offset"
    cursor_query_param = "cursor"
    count_query_param = "count"
    # None: keyset when the request has ?cursor, else limit/offset; "cursor": always keyset.
    style: str | None = None

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        self.request = request
        self.builder = builder_for(request, view, queryset)
        self.cursor_mode = self.style == "cursor" or self.cursor_query_param in request.query_params
        self.page = self.builder.page()
        return self.page.items

    def get_paginated_response(self, data: Any) -> Response:
        body: dict[str, Any] = {}
        if self.page.count is not None:
            body["count"] = self.page.count
        body["next"] = self.get_next_link()
        body["previous"] = self.get_previous_link()
        body["results"] = data
        return Response(body)

    def get_next_link(self) -> str | None:
        page = self.page
        if page.next_cursor is None:
            return None
        url = self.request.build_absolute_uri()
        if self.cursor_mode:
            url = remove_query_param(url, self.offset_query_param)
            return replace_query_param(url, self.cursor_query_param, page.next_cursor)
        return replace_query_param(url, self.offset_query_param, (page.offset or 0) + page.limit)

    def get_previous_link(self) -> str | None:
        page = self.page
        url = self.request.build_absolute_uri()
        if self.cursor_mode:
            if page.previous_cursor is None:
                return None
            url = remove_query_param(url, self.offset_query_param)
            return replace_query_param(url, self.cursor_query_param, page.previous_cursor)
        offset = page.offset or 0
        if offset <= 0:
            return None
        back = max(0, offset - page.limit)
        if back == 0:
            return remove_query_param(url, self.offset_query_param)
        return replace_query_param(url, self.offset_query_param, back)

    def describe(self, view: Any) -> dict[str, Any]:
        """Pagination of the view's resource, for ``_meta``."""
        surface = view_surface(view)
        return {"pagination": {
            "default_limit": surface.default_limit,
            "max_limit": surface.max_limit,
            "max_offset": surface.max_offset,
            "styles": {"limit-offset": f"{self.limit_query_param}=N&{self.offset_query_param}=N",
                       "cursor": f"{self.cursor_query_param}= to start, then the next/previous links"},
            "count": f"{self.count_query_param}=true adds the total",
        }}

    # drf-spectacular / DRF schema generation.
    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        try:
            surface = view_surface(view)
            max_limit: int | None = surface.max_limit
            max_offset: int | None = surface.max_offset
        except LookupError:
            max_limit = max_offset = None
        limit = {"type": "integer", "minimum": 1}
        offset = {"type": "integer", "minimum": 0}
        if max_limit is not None:
            limit["maximum"], offset["maximum"] = max_limit, max_offset
        return [
            {"name": self.limit_query_param, "required": False, "in": "query",
             "description": "Rows per page.", "schema": limit},
            {"name": self.offset_query_param, "required": False, "in": "query",
             "description": "Rows to skip (limit/offset pages).", "schema": offset},
            {"name": self.cursor_query_param, "required": False, "in": "query",
             "description": "Keyset page: empty to start, then the cursor of a next/previous link.",
             "schema": {"type": "string"}},
            {"name": self.count_query_param, "required": False, "in": "query",
             "description": "true adds the total count.", "schema": {"type": "boolean"}},
        ]

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "description": "Only with count=true."},
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }
