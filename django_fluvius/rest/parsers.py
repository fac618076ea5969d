"""Request parsing of the REST face: DRF's parsers, made safe against hostile bodies.

- ``JSONParser``: DRF's, but a body nested deeper than Python's recursion limit
  (``[`` x 100,000) is a 400 ``ParseError``; DRF's lets the ``RecursionError``
  through, a 500 on every command endpoint. Nesting below that limit but past
  ``FLUVIUS['MAX_PAYLOAD_DEPTH']`` is refused by ``payload.check_payload``.
- ``read_chunked_body``: a body sent with ``Transfer-Encoding: chunked`` has no
  ``Content-Length``, and Django reads such a body as empty (a command answered
  "field required"). Under a server that decodes chunked input (gunicorn, uvicorn),
  the body is read here, up to ``DATA_UPLOAD_MAX_MEMORY_SIZE``. Only where the server
  says its input ends with the body (``wsgi.input_terminated``, set by gunicorn,
  uWSGI, mod_wsgi, Werkzeug): elsewhere (``runserver``) a read would wait for a
  body end that never comes, and the raw socket would hand over the chunk framing.
"""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from django_fluvius.exceptions import RequestTooLarge


class JSONParser(parsers.JSONParser):
    """DRF's ``JSONParser``; nesting past the recursion limit is a 400, not a 500."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply.") from None


def safe_parsers(found: list[Any]) -> list[Any]:
    """``found`` with DRF's own ``JSONParser`` swapped for ours (a project's subclass stays)."""
    return [JSONParser() if type(parser) is parsers.JSONParser else parser for parser in found]


def read_chunked_body(request: Any) -> None:
    """Give a chunked body without ``Content-Length`` a length, so Django and DRF read it.

    Only the WSGI server can decode chunked framing; ``wsgi.input`` then yields the
    body and ends at its end. A body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413.
    """
    meta = request.META
    if meta.get("CONTENT_LENGTH") or "chunked" not in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    if meta.get("CONTENT_TYPE", "").startswith("multipart/"):
        return  # uploads stream through Django's upload handlers
    stream = meta.get("wsgi.input")
    if stream is None or not meta.get("wsgi.input_terminated"):
        return
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    body = stream.read() if limit is None else stream.read(limit + 1)
    if limit is not None and len(body) > limit:
        raise RequestTooLarge(f"The chunked request body has more than the {limit} bytes this server "
                              f"accepts (DATA_UPLOAD_MAX_MEMORY_SIZE).")
    meta["CONTENT_LENGTH"] = str(len(body))
    request._stream = io.BytesIO(body)
    request._read_started = False
