"""A streaming multipart/form-data parser for uploads, run through Django's own hook.

Django's ``MultiPartParser`` asks each upload handler first whether it wants to
parse the body itself (``FileUploadHandler.handle_raw_input``). The media upload
handler says yes and runs this parser, which reads the body in blocks of
``block_size`` (1 MiB) and finds the part delimiters with one ``bytes.find`` per
block, handing the file's bytes on as views of the block: no per-64 KiB Python
loop, and no copy of the data but the one that joins a block to the few bytes
kept from the one before. WSGI servers also read faster in large blocks.

What it accepts is what browsers and HTTP clients send (RFC 7578): parts
separated by ``--<boundary>``, each with a ``Content-Disposition: form-data;
name=...`` header (``filename`` or RFC 2231 ``filename*`` for files) and an
optional ``Content-Type``. Anything else is a 400 (``InvalidUpload``): a
truncated body, a missing or malformed delimiter, part headers over 8 KiB, a
``Content-Transfer-Encoding`` other than identity, too many parts. Plain fields
count against ``DATA_UPLOAD_MAX_MEMORY_SIZE`` as they do in Django.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import QueryDict
from django.utils.datastructures import MultiValueDict
from django.utils.http import parse_header_parameters

from django_fluvius.exceptions import InvalidUpload

CRLF = b"\r\n"
HEADERS_END = b"\r\n\r\n"
IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})


def sanitize_file_name(file_name: str) -> str | None:
    """What Django's parser makes of a part's file name (its last path part, printable)."""
    file_name = html.unescape(file_name)
    file_name = file_name.rsplit("/")[-1].rsplit("\\")[-1]
    file_name = "".join(ch for ch in file_name if ch.isprintable())
    return None if file_name in {"", ".", ".."} else file_name


class StreamingMultipartParser:
    """Parses one multipart body from ``stream``; file parts go to ``on_file``.

    ``on_file(field_name, file_name, content_type, charset)`` returns a sink with
    ``write(view)`` and ``finish() -> uploaded file or None``; a ``file_name`` that
    sanitizes to nothing (``..``) is given as ``""`` (the handler decides). A part
    with an empty file name (a file input left empty) is skipped, as Django does.
    """

    block_size = 1024 * 1024
    max_header_size = 8 * 1024
    max_parts = 100

    def __init__(self, stream: Any, boundary: bytes, *, encoding: str | None = None):
        self.stream = stream
        self.delimiter = b"--" + boundary
        # Inside the body a delimiter always follows a line break.
        self.separator = CRLF + self.delimiter
        self.encoding = encoding or settings.DEFAULT_CHARSET
        self.buffer = b""
        self.pos = 0
        self.dropped = 0  # bytes of the body before ``buffer`` (consumed and let go)
        self.eof = False

    # -- reading --

    def _more(self) -> bool:
        """Append one block to what is left unread; False at the end of the body."""
        if self.eof:
            return False
        block = self.stream.read(self.block_size)
        if not block:
            self.eof = True
            return False
        self.dropped += self.pos
        self.buffer = self.buffer[self.pos:] + block
        self.pos = 0
        return True

    def _expect(self, size: int) -> bytes:
        while len(self.buffer) - self.pos < size:
            if not self._more():
                raise InvalidUpload("The multipart body ends too early.", code="invalid_multipart")
        data = self.buffer[self.pos:self.pos + size]
        self.pos += size
        return data

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        """The bytes before ``marker`` (consumed with it), at most ``limit`` of them."""
        while True:
            found = self.buffer.find(marker, self.pos)
            if found >= 0:
                if found - self.pos > limit:
                    break
                data = self.buffer[self.pos:found]
                self.pos = found + len(marker)
                return data
            if len(self.buffer) - self.pos > limit + len(marker) or not self._more():
                break
        raise InvalidUpload("The multipart body is malformed: a part's headers are missing or too long.",
                            code="invalid_multipart")

    def _stream_until_separator(self, emit: Callable[[memoryview], None]) -> None:
        """Hand on the part's data up to the next delimiter, block by block."""
        keep = len(self.separator) - 1
        while True:
            view = memoryview(self.buffer)
            found = self.buffer.find(self.separator, self.pos)
            if found >= 0:
                if found > self.pos:
                    emit(view[self.pos:found])
                self.pos = found + len(self.separator)
                return
            safe = len(self.buffer) - keep
            if safe > self.pos:
                emit(view[self.pos:safe])
                self.pos = safe
            if not self._more():
                raise InvalidUpload("The multipart body ends in the middle of a part.",
                                    code="invalid_multipart")

    # -- parsing --

    def _skip_preamble(self) -> None:
        while True:
            found = self.buffer.find(self.delimiter, self.pos)
            at_start = found == 0 and self.dropped == 0
            if found >= 0 and (at_start or (found >= 2 and self.buffer[found - 2:found] == CRLF)):
                self.pos = found + len(self.delimiter)
                return
            if found >= 0:  # the boundary's text inside the preamble: not a delimiter
                self.pos = found + 1
                continue
            # Keep what could be the start of a delimiter and the line break before it.
            self.pos = max(self.pos, len(self.buffer) - len(self.delimiter) - 2)
            if not self._more():
                raise InvalidUpload("The body has no multipart delimiter.", code="invalid_multipart")

    def _headers(self) -> dict[str, str]:
        raw = self._read_until(HEADERS_END, self.max_header_size)
        headers: dict[str, str] = {}
        for line in raw.split(CRLF):
            name, colon, value = line.partition(b":")
            if not colon:
                raise InvalidUpload("The multipart body has a malformed part header.", code="invalid_multipart")
            headers[name.strip().decode("latin-1").lower()] = value.strip().decode("utf-8", "replace")
        return headers

    def parse(self, on_file: Callable[..., Any]) -> tuple[QueryDict, MultiValueDict]:
        post = QueryDict(mutable=True, encoding=self.encoding)
        files: MultiValueDict[str, Any] = MultiValueDict()
        field_bytes = 0
        memory_limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        self._skip_preamble()
        for _ in range(self.max_parts + 1):
            ending = self._expect(2)
            if ending == b"--":
                post._mutable = False
                return post, files
            if ending != CRLF:
                raise InvalidUpload("The multipart body has a malformed delimiter.", code="invalid_multipart")
            headers = self._headers()
            kind, disposition = _parse(headers.get("content-disposition", ""))
            name = (disposition.get("name") or "").strip()
            if kind != "form-data" or not name:
                raise InvalidUpload("A multipart part has no form-data name.", code="invalid_multipart")
            encoding = headers.get("content-transfer-encoding", "").strip().lower()
            if encoding not in IDENTITY_ENCODINGS:
                raise InvalidUpload(f"Content-Transfer-Encoding {encoding!r} is not accepted.",
                                    code="invalid_multipart")
            if "filename" in disposition and not disposition["filename"]:
                # A file input left empty: browsers send the part with no name and no bytes.
                self._stream_until_separator(lambda view: None)
            elif "filename" in disposition:
                content_type, params = _parse(headers.get("content-type", ""))
                sink = on_file(name, sanitize_file_name(disposition["filename"]) or "", content_type,
                               params.get("charset"))
                self._stream_until_separator(sink.write)
                uploaded = sink.finish()
                if uploaded is not None:
                    files.appendlist(name, uploaded)
            else:
                value = bytearray()

                def collect(view: memoryview, value: bytearray = value) -> None:
                    nonlocal field_bytes
                    field_bytes += len(view)
                    if memory_limit is not None and field_bytes > memory_limit:
                        raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
                    value += view

                self._stream_until_separator(collect)
                post.appendlist(name, value.decode(self.encoding, "replace"))
        raise InvalidUpload(f"The multipart body has more than {self.max_parts} parts.", code="invalid_multipart")


def _parse(value: str) -> tuple[str, dict[str, str]]:
    try:
        return parse_header_parameters(value)
    except ValueError as exc:
        raise InvalidUpload(f"A multipart header is malformed: {exc}", code="invalid_multipart") from None
