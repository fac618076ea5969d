"""What a file is, judged from its first bytes, not from what the client says.

An upload declares a content type (the multipart part's ``Content-Type``), but
anyone can declare anything. ``verify_content_type`` reads the head of the
content (``HEAD_SIZE`` bytes) and checks the declaration against it through two
tables: ``SIGNATURES`` (magic bytes of binary formats) and ``CONTAINERS``
(formats that are a known container inside, such as Office documents in a ZIP).
Text formats have no magic bytes; their content must be UTF-8 (or ASCII) text
without NUL bytes.

No libmagic: the table is small, kept here, and easy to extend::

    from django_fluvius import filetypes
    filetypes.SIGNATURES.append(filetypes.Signature("audio/flac", ((0, b"fLaC"),)))
"""

from __future__ import annotations

import codecs
import fnmatch
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass

# Bytes of the content that are sniffed (the head is kept while the upload streams).
HEAD_SIZE = 8192

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"


@dataclass(frozen=True)
class Signature:
    """A binary format: the content type and the bytes found at given offsets."""

    content_type: str
    marks: tuple[tuple[int, bytes], ...]

    def matches(self, head: bytes) -> bool:
        return all(head[offset:offset + len(mark)] == mark for offset, mark in self.marks)


SIGNATURES: list[Signature] = [
    Signature("image/png", ((0, b"\x89PNG\r\n\x1a\n"),)),
    Signature("image/jpeg", ((0, b"\xff\xd8\xff"),)),
    Signature("image/gif", ((0, b"GIF87a"),)),
    Signature("image/gif", ((0, b"GIF89a"),)),
    Signature("image/webp", ((0, b"RIFF"), (8, b"WEBP"))),
    Signature("image/tiff", ((0, b"II*\x00"),)),
    Signature("image/tiff", ((0, b"MM\x00*"),)),
    Signature("image/bmp", ((0, b"BM"), (6, b"\x00\x00\x00\x00"))),
    Signature("image/x-icon", ((0, b"\x00\x00\x01\x00"),)),
    Signature("application/pdf", ((0, b"%PDF-"),)),
    Signature("application/zip", ((0, b"PK\x03\x04"),)),
    Signature("application/zip", ((0, b"PK\x05\x06"),)),
    Signature("application/gzip", ((0, b"\x1f\x8b\x08"),)),
    Signature("application/x-7z-compressed", ((0, b"7z\xbc\xaf\x27\x1c"),)),
    Signature("application/x-rar-compressed", ((0, b"Rar!\x1a\x07"),)),
    Signature("audio/mpeg", ((0, b"ID3"),)),
    Signature("audio/ogg", ((0, b"OggS"),)),
    Signature("audio/wav", ((0, b"RIFF"), (8, b"WAVE"))),
    Signature("video/webm", ((0, b"\x1a\x45\xdf\xa3"),)),
    Signature("video/mp4", ((4, b"ftypisom"),)),
    Signature("video/mp4", ((4, b"ftypmp4"),)),
    Signature("video/mp4", ((4, b"ftypMSNV"),)),
    Signature("video/quicktime", ((4, b"ftypqt"),)),
    # Programs: never what a client means to upload as a document or an image.
    Signature("application/x-executable", ((0, b"\x7fELF"),)),
    Signature("application/x-msdownload", ((0, b"MZ"),)),
    Signature("application/x-mach-binary", ((0, b"\xcf\xfa\xed\xfe"),)),
    Signature("application/java-vm", ((0, b"\xca\xfe\xba\xbe"),)),
]

# Declared type -> the format its content really is.
CONTAINERS: dict[str, str] = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "application/zip",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "application/zip",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "application/zip",
    "application/vnd.oasis.opendocument.text": "application/zip",
    "application/vnd.oasis.opendocument.spreadsheet": "application/zip",
    "application/epub+zip": "application/zip",
    "application/java-archive": "application/zip",
}

# Other names clients use for the same type.
ALIASES: dict[str, str] = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "image/vnd.microsoft.icon": "image/x-icon",
    "application/x-pdf": "application/pdf",
    "application/x-zip-compressed": "application/zip",
    "application/x-gzip": "application/gzip",
    "audio/mp3": "audio/mpeg",
    "audio/x-wav": "audio/wav",
    "text/x-csv": "text/csv",
    "application/csv": "text/csv",
}

# Types whose content is text (besides text/*): checked as text, no magic bytes.
TEXT_TYPES = frozenset({"application/json", "application/xml", "application/x-ndjson"})


class ContentTypeError(ValueError):
    """The content is not what its declared type says (``sniffed`` is what it is)."""

    def __init__(self, message: str, *, declared: str, sniffed: str):
        super().__init__(message)
        self.declared = declared
        self.sniffed = sniffed


def normalize(content_type: str | None) -> str:
    """``Image/JPG; charset=x`` -> ``image/jpeg``; empty for nothing."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    return ALIASES.get(base, base)


def is_text_type(content_type: str) -> bool:
    return content_type.startswith("text/") or content_type in TEXT_TYPES


def looks_like_text(head: bytes) -> bool:
    """UTF-8 text without NUL bytes (a character cut at the end of the head is fine)."""
    if b"\x00" in head:
        return False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        decoder.decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def sniff(head: bytes) -> str:
    """The type the content's first bytes show: a signature's, text, or octet-stream."""
    for signature in SIGNATURES:
        if signature.matches(head):
            return signature.content_type
    if head and looks_like_text(head):
        return TEXT
    return OCTET_STREAM


def _known_binary(content_type: str) -> bool:
    return any(s.content_type == content_type for s in SIGNATURES)


def verify_content_type(declared: str | None, head: bytes, filename: str = "") -> str:
    """The content type to record for content starting with ``head``.

    - A declared binary type with a signature must match it (``image/png`` must
      start like a PNG); a container type must be its container (a .docx a ZIP).
    - A declared text type must be text (and no known binary format).
    - No declaration, or ``application/octet-stream``: the sniffed type; for
      text, the type the file name suggests when that is a text type (``.csv``).
    - A declared type this module cannot check is kept, unless the content is a
      format it does know (a PNG declared as ``audio/flac`` is refused).

    Raises ``ContentTypeError`` when the content contradicts the declaration.
    """
    sniffed = sniff(head)
    wanted = normalize(declared)
    if not wanted or wanted == OCTET_STREAM:
        if sniffed == TEXT:
            guessed = normalize(mimetypes.guess_type(filename)[0]) if filename else ""
            return guessed if guessed and is_text_type(guessed) else TEXT
        return sniffed
    expected = CONTAINERS.get(wanted, wanted)
    if is_text_type(wanted):
        ok = sniffed == TEXT
    elif _known_binary(expected):
        ok = sniffed == expected
    else:
        # Nothing to check the declaration against: refuse only a known other format.
        ok = sniffed in (OCTET_STREAM, TEXT)
    if not ok:
        shown = "text" if sniffed == TEXT else ("unrecognised binary data" if sniffed == OCTET_STREAM
                                                 else sniffed)
        raise ContentTypeError(f"The content is {shown}, not {wanted} as declared.",
                               declared=wanted, sniffed=sniffed)
    return wanted


def type_allowed(content_type: str, allowed: Iterable[str] | None) -> bool:
    """Whether ``content_type`` is in ``allowed`` (patterns such as ``image/*``); None allows all."""
    if allowed is None:
        return True
    return any(fnmatch.fnmatchcase(content_type, normalize(pattern)) for pattern in allowed)
