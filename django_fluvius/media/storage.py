"""Media storage strategies: one interface over any Django storage.

One interface over any Django storage, chosen with ``FLUVIUS['MEDIA_STORAGE']``::

    from django_fluvius.media import LocalStorage, S3Storage

    FLUVIUS = {"MEDIA_STORAGE": LocalStorage(path="/srv/uploads")}
    FLUVIUS = {"MEDIA_STORAGE": S3Storage(bucket="my-bucket")}
    FLUVIUS = {"MEDIA_STORAGE": "default"}        # an alias of Django's STORAGES
    FLUVIUS = {"MEDIA_STORAGE": "myproject.storage.uploads"}  # a strategy's dotted path

Every strategy offers ``put`` (from a stream; size and SHA-256 computed while the
bytes stream), ``open``, ``url`` (signed and short-lived on S3), ``delete``,
``exists`` and ``metadata``. The rest of the code never asks which one it has.

Bytes reach a storage in two steps: ``stage()`` writes them to a temporary file
as they arrive (counting, hashing and keeping the first bytes for the content
check) and ``commit()`` hands the finished file to the storage (a rename on local
disk). The REST upload handler feeds a stage chunk by chunk, so an upload is
never held in memory whole, and a refused upload never reaches the storage.

Invariant: a storage only ever receives a finished, fully counted and hashed
file under a key made here (``key_name``/``check_key``: no client-chosen path
reaches a storage). Files bound to aggregates (``MediaEntry``) are
``media/entries.py``.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import socket
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import (
    ConfigurationError,
    InvalidMediaName,
    MediaTooLarge,
)
from django_fluvius.media import filetypes

_UNSET_AGE: Any = object()
# Bytes read from a stream (and written to a stage) at a time.
CHUNK_SIZE = 256 * 1024
# First part of every key the strategies make (so media share a storage with other files).
KEY_PREFIX = "fluvius"

# -- staging -----------------------------------------------------------------


@dataclass(frozen=True)
class StoredMedia:
    """What ``put``/``commit`` stored: where, how big, and the SHA-256 of the bytes."""

    storage: str
    key: str
    size: int
    sha256: str
    content_type: str | None = None


class StagedMedia:
    """Bytes on their way into a storage, in a temporary file.

    ``write`` counts and hashes every chunk and keeps the first bytes (``head``)
    for the content check; past ``max_size`` it raises ``MediaTooLarge`` at once,
    so an over-size stream is not read to its end. ``discard`` removes the file
    (done by ``commit`` users in ``finally``; a no-op once a storage took it).

    The file is named ``.upload-<pid>@<host>-<random>.part``: a process killed
    mid-upload (gunicorn's timeout, SIGKILL, the OOM killer) runs no ``finally``,
    and its stage would stay for ever, up to ``MEDIA_MAX_SIZE`` each. The name says
    whose it is, so ``sweep_stages`` can remove the stages of dead processes on this
    host at once, and any stage left unwritten past ``MEDIA_STAGE_MAX_AGE``.
    """

    def __init__(self, directory: str | None = None, *, max_size: int | None = None):
        if directory:
            os.makedirs(directory, exist_ok=True)
        fd, self.path = tempfile.mkstemp(prefix=f"{STAGE_PREFIX}{os.getpid()}@{_HOST}-", suffix=STAGE_SUFFIX,
                                         dir=directory)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self.max_size = max_size
        self.size = 0
        self._head = bytearray()
        self._hash = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        size = self.size + len(chunk)
        if self.max_size is not None and size > self.max_size:
            raise MediaTooLarge(f"The file is larger than {self.max_size} bytes, the most accepted.",
                                max_size=self.max_size)
        if len(self._head) < filetypes.HEAD_SIZE:
            self._head += chunk[: filetypes.HEAD_SIZE - len(self._head)]
        self._hash.update(chunk)
        self.file.write(chunk)
        self.size = size

    @property
    def head(self) -> bytes:
        return bytes(self._head)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def discard(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def as_file(self, content_type: str | None = None) -> StagedFile:
        self.close()
        return StagedFile(self, content_type)

    def __enter__(self) -> StagedMedia:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.discard()


class StagedFile(File):
    """A finished stage as Django's storages take it: ``temporary_file_path()`` lets
    ``FileSystemStorage`` move it into place instead of copying it."""

    def __init__(self, staged: StagedMedia, content_type: str | None = None):
        super().__init__(open(staged.path, "rb"), name=os.path.basename(staged.path))  # noqa: SIM115
        self.staged = staged
        self.content_type = content_type
        self.size = staged.size

    def temporary_file_path(self) -> str:
        return self.staged.path


# -- stages a dead process left behind ------------------------------------------

STAGE_PREFIX = ".upload-"
STAGE_SUFFIX = ".part"
# This host, as a stage's name holds it (a shared staging directory may serve several).
_HOST = re.sub(r"[^A-Za-z0-9.]+", "_", socket.gethostname())[:60] or "host"
_STAGE_NAME = re.compile(r"^\.upload-(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9._]+)-)?.*\.part$")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def stale_stage(path: str, *, max_age: float | None, now: float) -> bool:
    """Whether a stage file is a leftover: its process (on this host) is gone, or it has
    not been written for ``max_age`` seconds."""
    match = _STAGE_NAME.match(os.path.basename(path))
    if match is None:
        return False
    if match["pid"] and match["host"] == _HOST and int(match["pid"]) != os.getpid() \
            and _process_gone(int(match["pid"])):
        return True
    if max_age is None:
        return False
    try:
        return now - os.stat(path).st_mtime > max_age
    except FileNotFoundError:
        return False


def sweep_stages(directory: str | None = None, *, max_age: float | None = _UNSET_AGE,
                 dry_run: bool = False) -> list[str]:
    """Remove leftover stages (see ``StagedMedia``) from ``directory`` (default: the
    configured strategy's staging directory); return their paths.

    Run at each process's start (``apps.py``), by the ``fluvius.sweep_uploads`` task
    (Celery beat) and by ``manage.py fluvius_sweep_uploads``.
    """
    if directory is None:
        directory = media_storage().staging_dir() or tempfile.gettempdir()
    if max_age is _UNSET_AGE:
        max_age = fluvius_settings.MEDIA_STAGE_MAX_AGE
    now = time.time()
    removed = []
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for name in names:
        if not (name.startswith(STAGE_PREFIX) and name.endswith(STAGE_SUFFIX)):
            continue
        path = os.path.join(directory, name)
        if stale_stage(path, max_age=max_age, now=now):
            if not dry_run:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
            removed.append(path)
    return removed


def iter_chunks(stream: Any, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Chunks of a file-like object (``read``), of ``bytes``, or of an iterable of bytes."""
    if isinstance(stream, bytes | bytearray | memoryview):
        yield bytes(stream)
        return
    read = getattr(stream, "read", None)
    if callable(read):
        while chunk := read(chunk_size):
            yield chunk
        return
    yield from stream


# -- names and keys ----------------------------------------------------------

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def clean_filename(name: Any) -> str:
    """The name to show for an upload: its last path part, printable, at most 255 characters.

    Like Django's multipart parser, only the last part of ``../../etc/passwd``
    (``passwd``) is kept: a name never chooses where bytes are written (keys do,
    see ``make_key``). Nothing usable left (``..``, ``/``, blanks) is refused.
    """
    text = unicodedata.normalize("NFC", str(name or ""))
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    if text in ("", ".", ".."):
        raise InvalidMediaName(f"{str(name)[:100]!r} is not a usable file name.",
                               errors={"filename": ["Give a file name (not a path)."]})
    if len(text) > 255:
        stem, ext = os.path.splitext(text)
        ext = ext[:20]
        text = stem[: 255 - len(ext)] + ext
    return text


def key_name(filename: str) -> str:
    """An ASCII name for keys and paths: ``Résumé (1).pdf`` -> ``Resume_1_.pdf``."""
    ascii_name = unicodedata.normalize("NFKD", filename).encode("ascii", "ignore").decode()
    safe = _KEY_UNSAFE.sub("_", ascii_name).lstrip("._")
    stem, ext = os.path.splitext(safe)
    return (stem[:80] + ext[:20]) or "file"


def check_key(key: str) -> str:
    """A storage key as given by a caller: relative, no ``..``, no backslash, no NUL."""
    if not isinstance(key, str) or not key or "\x00" in key or "\\" in key or key.startswith("/"):
        raise InvalidMediaName(f"{str(key)[:100]!r} is not a usable storage key.", code="invalid_key")
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise InvalidMediaName(f"{key[:100]!r} is not a usable storage key (empty, '.' or '..' part).",
                               code="invalid_key")
    return key


# -- strategies ----------------------------------------------------------------


class MediaStorage:
    """A storage strategy: one Django storage behind the media interface.

    Subclasses adapt what differs (``LocalStorage`` stages next to the files so
    a commit is a rename; ``S3Storage`` signs URLs and streams reads). ``name``
    is recorded on each ``MediaEntry`` to find the strategy again.
    """

    # Whether ``url()`` gives a signed, short-lived URL a client may fetch directly.
    signed_urls = False

    def __init__(self, storage: Storage | None = None, *, name: str = "storage",
                 prefix: str = KEY_PREFIX):
        if storage is None:
            raise ImproperlyConfigured(f"{type(self).__name__} needs a storage.")
        self.storage = storage
        self.name = name
        self.prefix = prefix.strip("/")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} over {type(self.storage).__name__}>"

    # -- writing --

    def staging_dir(self) -> str | None:
        """Where stages are written: Django's ``FILE_UPLOAD_TEMP_DIR`` (None: the system's)."""
        return settings.FILE_UPLOAD_TEMP_DIR

    def stage(self, *, max_size: int | None = None) -> StagedMedia:
        return StagedMedia(self.staging_dir(), max_size=max_size)

    def make_key(self, filename: str = "", *parts: Any) -> str:
        """A new key: ``<prefix>/<parts...>/<random hex>/<ascii name>``; never chosen by a client."""
        segments = [self.prefix, *(key_name(str(p)) for p in parts), uuid.uuid4().hex,
                    key_name(filename) if filename else "file"]
        return "/".join(s for s in segments if s)

    def commit(self, staged: StagedMedia, key: str, *, content_type: str | None = None) -> StoredMedia:
        """Hand a finished stage to the storage under ``key`` (it may pick a free variant)."""
        check_key(key)
        file = staged.as_file(content_type)
        try:
            saved = self.storage.save(key, file)
        except SuspiciousOperation as exc:
            raise InvalidMediaName(f"The key {key[:100]!r} is outside the storage.",
                                   code="invalid_key") from exc
        finally:
            file.close()
        return StoredMedia(self.name, saved, staged.size, staged.sha256, content_type)

    def put(self, stream: Any, *, name: str = "", key: str | None = None,
            content_type: str | None = None, max_size: int | None = None) -> StoredMedia:
        """Store a stream (file-like, bytes or iterable of bytes); size and SHA-256 on the way."""
        if key is not None:
            check_key(key)
        with self.stage(max_size=max_size) as staged:
            for chunk in iter_chunks(stream):
                staged.write(chunk)
            return self.commit(staged, key or self.make_key(clean_filename(name) if name else ""),
                               content_type=content_type)

    # -- reading --

    def open(self, key: str) -> Any:
        """A binary file-like object to read (``FileNotFoundError`` if there is none)."""
        return self.storage.open(key, "rb")

    def url(self, key: str, *, expires: int | None = None, filename: str | None = None,
            content_type: str | None = None) -> str:
        """Where a client can fetch the bytes (the storage's URL; signed on S3)."""
        return self.storage.url(key)

    def exists(self, key: str) -> bool:
        return self.storage.exists(key)

    def delete(self, key: str) -> None:
        self.storage.delete(key)

    def metadata(self, key: str) -> dict[str, Any]:
        """What the storage knows of the object: key, size, modified time, content type."""
        try:
            modified = self.storage.get_modified_time(key)
        except (NotImplementedError, AttributeError):
            modified = None
        return {
            "key": key,
            "size": self.storage.size(key),
            "modified": modified,
            "content_type": mimetypes.guess_type(key)[0],
        }


class LocalStorage(MediaStorage):
    """Files on local disk, through Django's ``FileSystemStorage``.

    ``LocalStorage(path="/srv/uploads")``. Stages are written under
    ``<path>/.incoming/`` so that committing one is a rename on the same disk.
    """

    storage: FileSystemStorage

    def __init__(self, path: str | os.PathLike | None = None, *, base_url: str | None = None,
                 storage: Storage | None = None, name: str = "local", prefix: str = KEY_PREFIX,
                 **options: Any):
        if storage is None:
            if path is None:
                raise ImproperlyConfigured("LocalStorage needs path= (the directory files go to).")
            storage = FileSystemStorage(location=os.fspath(path), base_url=base_url, **options)
        super().__init__(storage, name=name, prefix=prefix)

    @property
    def root(self) -> str:
        return os.path.abspath(self.storage.location)

    def staging_dir(self) -> str:
        return os.path.join(self.root, ".incoming")


class S3Storage(MediaStorage):
    """Objects in an S3 bucket, through django-storages' ``S3Storage``.

    ``S3Storage(bucket="my-bucket", endpoint_url=..., region_name=...)``; other
    keyword arguments are django-storages' options. ``url()`` is a presigned GET
    valid ``FLUVIUS['MEDIA_URL_EXPIRES']`` seconds; ``open()`` streams the object
    (django-storages' own ``open`` would download it whole first).
    """

    signed_urls = True
    # django-storages' S3Storage (untyped): bucket_name, connection, url(parameters=, expire=)...
    storage: Any
    # Parts of 8 MiB, two in flight: what one upload may hold in memory.
    transfer_options: Mapping[str, Any] = {"multipart_chunksize": 8 * 1024 * 1024, "max_concurrency": 2}

    def __init__(self, bucket: str | None = None, *, storage: Storage | None = None, name: str = "s3",
                 prefix: str = KEY_PREFIX, **options: Any):
        if storage is None:
            from boto3.s3.transfer import TransferConfig
            from storages.backends.s3 import S3Storage as Backend

            if not bucket:
                raise ImproperlyConfigured("S3Storage needs bucket= (the bucket's name).")
            options.setdefault("transfer_config", TransferConfig(**self.transfer_options))
            # SigV4: what every AWS region accepts (presigned URLs default to SigV2 otherwise).
            options.setdefault("signature_version", "s3v4")
            storage = Backend(bucket_name=bucket, **options)
        super().__init__(storage, name=name, prefix=prefix)

    def _object_name(self, key: str) -> str:
        from storages.utils import clean_name

        return self.storage._normalize_name(clean_name(key))

    def _client(self) -> Any:
        return self.storage.connection.meta.client

    def open(self, key: str) -> Any:
        from botocore.exceptions import ClientError

        try:
            response = self._client().get_object(Bucket=self.storage.bucket_name, Key=self._object_name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"No object {key!r} in the bucket.") from None
            raise
        return response["Body"]

    def url(self, key: str, *, expires: int | None = None, filename: str | None = None,
            content_type: str | None = None) -> str:
        parameters: dict[str, str] = {}
        if filename:
            parameters["ResponseContentDisposition"] = content_disposition(filename)
        if content_type:
            parameters["ResponseContentType"] = content_type
        seconds = expires if expires is not None else fluvius_settings.MEDIA_URL_EXPIRES
        return self.storage.url(key, parameters=parameters, expire=int(seconds))

    def metadata(self, key: str) -> dict[str, Any]:
        from botocore.exceptions import ClientError

        try:
            head = self._client().head_object(Bucket=self.storage.bucket_name, Key=self._object_name(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"No object {key!r} in the bucket.") from None
            raise
        return {
            "key": key,
            "size": head["ContentLength"],
            "modified": head.get("LastModified"),
            "content_type": head.get("ContentType"),
            "etag": head.get("ETag", "").strip('"'),
        }


def content_disposition(filename: str, disposition: str = "attachment") -> str:
    """A Content-Disposition value any client reads, for any file name."""
    from django.utils.http import content_disposition_header

    return content_disposition_header(disposition == "attachment", filename) or disposition


# Strategy names of FLUVIUS['MEDIA_STORAGE'] = {"strategy": ...}.
STRATEGIES: dict[str, type[MediaStorage]] = {
    "local": LocalStorage,
    "s3": S3Storage,
    "storage": MediaStorage,
}

# The strategy of a Django storage backend, by its class's dotted path (looked up
# along the MRO; dotted paths so boto3 need not be installed to build the table).
STRATEGY_FOR_BACKEND: dict[str, str] = {
    "django.core.files.storage.filesystem.FileSystemStorage": "local",
    "storages.backends.s3.S3Storage": "s3",
}


def strategy_for_backend(storage: Storage, *, name: str) -> MediaStorage:
    """Wrap a Django storage in the strategy that fits its class (``MediaStorage`` if none)."""
    for klass in type(storage).__mro__:
        kind = STRATEGY_FOR_BACKEND.get(f"{klass.__module__}.{klass.__qualname__}")
        if kind is not None:
            return STRATEGIES[kind](storage=storage, name=name)
    return MediaStorage(storage, name=name)


def _from_alias(alias: str) -> MediaStorage:
    if alias not in storages.backends:
        known = ", ".join(sorted(storages.backends)) or "none"
        raise ImproperlyConfigured(f"{alias!r} is not an alias of STORAGES (known: {known}).")
    return strategy_for_backend(storages[alias], name=alias)


def _from_string(value: str) -> MediaStorage:
    """An alias of ``STORAGES``; else the dotted path of a strategy (or of a callable making one)."""
    if value in storages.backends or "." not in value:
        return _from_alias(value)
    try:
        found = import_string(value)
    except ImportError as exc:
        raise ImproperlyConfigured(f"{value!r} is neither an alias of STORAGES nor importable: {exc}") from exc
    strategy = found if isinstance(found, MediaStorage) else found() if callable(found) else found
    if not isinstance(strategy, MediaStorage):
        raise ImproperlyConfigured(f"{value!r} is not a media storage strategy.")
    return strategy


def _from_mapping(spec: Mapping[str, Any]) -> MediaStorage:
    options = dict(spec)
    kind = options.pop("strategy", None)
    strategy = STRATEGIES.get(kind)
    if strategy is None:
        raise ImproperlyConfigured(
            f"Unknown media strategy {kind!r}; use one of {', '.join(sorted(STRATEGIES))}.")
    return strategy(**options)


BUILDERS: dict[type, Callable[[Any], MediaStorage]] = {
    str: _from_string,
    dict: _from_mapping,
    MediaStorage: lambda strategy: strategy,
}


def build_strategy(spec: Any) -> MediaStorage:
    """A strategy from a ``MEDIA_STORAGE`` value: alias or dotted path, mapping, or strategy."""
    for klass in type(spec).__mro__:
        builder = BUILDERS.get(klass)
        if builder is not None:
            return builder(spec)
    if isinstance(spec, Mapping):
        return _from_mapping(spec)
    raise ImproperlyConfigured(
        f"FLUVIUS['MEDIA_STORAGE'] is {spec!r}: give an alias of STORAGES, a strategy "
        f"(LocalStorage(path=...), S3Storage(bucket=...)), its dotted path, or a dict with 'strategy'.")


_strategies: dict[str | None, MediaStorage] = {}


def media_storage(name: str | None = None) -> MediaStorage:
    """The configured strategy, or the one an entry's ``storage`` names.

    A name that is not the configured strategy's is looked up in Django's
    ``STORAGES`` (entries written before a change of setting stay readable).
    """
    if None not in _strategies:
        _strategies[None] = build_strategy(fluvius_settings.MEDIA_STORAGE)
    configured = _strategies[None]
    if name is None or name == configured.name:
        return configured
    if name not in _strategies:
        try:
            _strategies[name] = _from_alias(name)
        except ImproperlyConfigured as exc:
            raise ConfigurationError(f"Media storage {name!r} is not configured any more: {exc}") from exc
    return _strategies[name]


def _reset_strategies(*, setting: str, **kwargs: Any) -> None:
    if setting in ("FLUVIUS", "STORAGES", "MEDIA_ROOT", "MEDIA_URL", "FILE_UPLOAD_TEMP_DIR"):
        _strategies.clear()


setting_changed.connect(_reset_strategies)


# -- system checks -------------------------------------------------------------


def check_media_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """System checks fluvius.E060-E063: the MEDIA_* settings.

    | id           | problem                                                        |
    |--------------|----------------------------------------------------------------|
    | fluvius.E060 | ``MEDIA_STORAGE`` cannot be built (unknown alias or strategy)  |
    | fluvius.E061 | ``MEDIA_MAX_SIZE`` is not None or a number of bytes > 0        |
    | fluvius.E062 | ``MEDIA_ALLOWED_TYPES`` is not None or a list of type patterns |
    | fluvius.E063 | ``MEDIA_URL_EXPIRES`` is not 1..604800 seconds (S3's limit)    |
    """
    from django.core import checks

    errors = []
    try:
        build_strategy(fluvius_settings.MEDIA_STORAGE)
    except (ImproperlyConfigured, ImportError, TypeError, ValueError) as exc:
        errors.append(checks.Error(
            f"FLUVIUS['MEDIA_STORAGE'] cannot be used: {exc}",
            hint="Give an alias of STORAGES, LocalStorage(path=...), S3Storage(bucket=...) or "
                 "{'strategy': 'local' | 's3' | 'storage', ...} (S3 needs the s3 extra: boto3).",
            id="fluvius.E060",
        ))
    size = fluvius_settings.MEDIA_MAX_SIZE
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        errors.append(checks.Error(f"FLUVIUS['MEDIA_MAX_SIZE'] is {size!r}.",
                                   hint="Give a number of bytes > 0, or None for no limit.",
                                   id="fluvius.E061"))
    allowed = fluvius_settings.MEDIA_ALLOWED_TYPES
    pattern = re.compile(r"^[a-z0-9*][a-z0-9!#$&^_.+*-]*/[a-z0-9*][a-z0-9!#$&^_.+*-]*$")
    if allowed is not None and (isinstance(allowed, str) or not isinstance(allowed, list | tuple | set)
                                or not all(isinstance(t, str) and pattern.match(t.lower()) for t in allowed)):
        errors.append(checks.Error(f"FLUVIUS['MEDIA_ALLOWED_TYPES'] is {allowed!r}.",
                                   hint="Give a list of content types such as 'image/png' or 'image/*', "
                                        "or None to allow every type.",
                                   id="fluvius.E062"))
    expires = fluvius_settings.MEDIA_URL_EXPIRES
    if isinstance(expires, bool) or not isinstance(expires, int) or not 1 <= expires <= 604800:
        errors.append(checks.Error(f"FLUVIUS['MEDIA_URL_EXPIRES'] is {expires!r}.",
                                   hint="Give seconds from 1 to 604800 (7 days, the most S3 signs).",
                                   id="fluvius.E063"))
    return errors
