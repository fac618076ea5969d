"""Pagination of resource lists: ``page``/``page_size``, ``limit``/``offset`` and ``cursor``.

- ``?page=3&page_size=20``: DRF's page-number style (``page_size`` defaults to the
  resource's ``default_limit``); a page past the end is empty, never page 1 again.
- ``?limit=20&offset=40``: a page by position (DRF's ``LimitOffsetPagination`` shape).
- ``?cursor=`` (empty to start) and then the ``next`` / ``previous`` links: keyset
  pages, stable while rows are inserted and as fast deep in a table as at its start.

The body is ``{"count", "count_estimated", "next", "previous", "results"}``. ``count``
is exact up to ``FLUVIUS['EXACT_COUNT_LIMIT']`` rows and PostgreSQL's estimate past
it (``count_estimated`` says which; ``counting.py``), so a list never runs a full
``COUNT(*)`` of a big table; ``?count=false`` leaves it out. Limits are bounded by
the resource's query surface (``default_limit``, ``max_limit``); a bad page, limit,
offset or cursor is a 400, like any other bad parameter.
"""

from __future__ import annotations

from typing import Any

from rest_framework.pagination import BasePagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

from django_fluvius.conf import fluvius_settings
from django_fluvius.read.counting import count_rows
from django_fluvius.rest.filters import builder_for, view_surface


class ResourcePagination(BasePagination):
    limit_query_param = "limit"
    offset_query_param = "offset"
    cursor_query_param = "cursor"
    count_query_param = "count"
    page_query_param = "page"
    page_size_query_param = "page_size"
    # None: keyset when the request has ?cursor, else limit/offset; "cursor": always keyset.
    style: str | None = None

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        self.request = request
        self.builder = builder_for(request, view, queryset)
        params = request.query_params
        self.cursor_mode = self.style == "cursor" or self.cursor_query_param in params
        self.page_mode = not self.cursor_mode and (self.page_query_param in params
                                                   or self.page_size_query_param in params)
        self.page = self.builder.page(count=False)
        self.count: int | None = None
        self.count_estimated = False
        if self.counts(params):
            self.count, self.count_estimated = count_rows(self.builder.filtered(),
                                                          int(fluvius_settings.EXACT_COUNT_LIMIT))
        return self.page.items

    def counts(self, params: Any) -> bool:
        """Whether to count (``?count=false`` skips it; the value was checked by the surface)."""
        return str(params.get(self.count_query_param, "true")).strip().lower() not in ("false", "0", "no", "off")

    def get_paginated_response(self, data: Any) -> Response:
        body: dict[str, Any] = {}
        if self.count is not None:
            body["count"] = self.count
            body["count_estimated"] = self.count_estimated
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
        if self.page_mode:
            return replace_query_param(url, self.page_query_param, self.page_number() + 1)
        return replace_query_param(url, self.offset_query_param, (page.offset or 0) + page.limit)

    def page_number(self) -> int:
        return (self.page.offset or 0) // self.page.limit + 1

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
        if self.page_mode:
            number = self.page_number() - 1
            if number <= 1:
                return remove_query_param(url, self.page_query_param)
            return replace_query_param(url, self.page_query_param, number)
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
            "styles": {"page-number": f"{self.page_query_param}=N&{self.page_size_query_param}=N",
                       "limit-offset": f"{self.limit_query_param}=N&{self.offset_query_param}=N",
                       "cursor": f"{self.cursor_query_param}= to start, then the next/previous links"},
            "count": (f"exact up to {fluvius_settings.EXACT_COUNT_LIMIT} rows, estimated past it "
                      f"(count_estimated); {self.count_query_param}=false leaves it out"),
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
            {"name": self.page_query_param, "required": False, "in": "query",
             "description": "Page number (from 1), with page_size.", "schema": {"type": "integer", "minimum": 1}},
            {"name": self.page_size_query_param, "required": False, "in": "query",
             "description": "Rows per page (page-number style).", "schema": dict(limit)},
            {"name": self.limit_query_param, "required": False, "in": "query",
             "description": "Rows per page.", "schema": limit},
            {"name": self.offset_query_param, "required": False, "in": "query",
             "description": "Rows to skip (limit/offset pages).", "schema": offset},
            {"name": self.cursor_query_param, "required": False, "in": "query",
             "description": "Keyset page: empty to start, then the cursor of a next/previous link.",
             "schema": {"type": "string"}},
            {"name": self.count_query_param, "required": False, "in": "query",
             "description": "false leaves the count out.", "schema": {"type": "boolean"}},
        ]

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "count": {"type": "integer", "description": "Rows in the list (absent with count=false)."},
                "count_estimated": {"type": "boolean",
                                    "description": "true when count is PostgreSQL's estimate."},
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }
