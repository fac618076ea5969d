"""Media storage strategies on local disk and over STORAGES aliases; content checks;
store_media; media references in commands and events; the MEDIA_* system checks."""

import hashlib
import io
import os
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import FileSystemStorage

from django_fluvius.exceptions import (
    AggregateNotFound,
    CommandValidationError,
    DomainError,
    EmptyMedia,
    InvalidMediaName,
    MediaTooLarge,
    MediaTypeMismatch,
    UnsupportedMediaType,
)
from django_fluvius.media import LocalStorage, MediaStorage, filetypes, media_storage, store_media
from django_fluvius.media.storage import build_strategy, check_media_settings, clean_filename
from django_fluvius.models import Event, MediaEntry
from tests.media_support import files_under, pdf, place_order, png

# The media fixtures (media_root, s3_endpoint, bucket, s3_media ...).
pytest_plugins = ["tests.media_fixtures"]

# -- the strategy interface on local disk ---------------------------------------


def test_local_put_streams_and_computes_size_and_sha256(tmp_path):
    storage = LocalStorage(path=tmp_path / "root")
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, an odd tail

    stored = storage.put(io.BytesIO(data), name="report.bin")

    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.storage == "local"
    assert stored.key.startswith("fluvius/") and stored.key.endswith("/report.bin")
    assert storage.exists(stored.key)
    with storage.open(stored.key) as f:
        assert f.read() == data
    meta = storage.metadata(stored.key)
    assert meta["size"] == len(data) and meta["modified"] is not None
    assert storage.url(stored.key).endswith(stored.key)
    # The stage was moved into place, not copied: nothing is left in .incoming.
    assert [p.name for p in files_under(tmp_path / "root")] == ["report.bin"]

    storage.delete(stored.key)
    assert not storage.exists(stored.key)


@pytest.mark.parametrize("make_stream", [
    lambda data: data,                                   # bytes
    lambda data: [data[:10], data[10:500], data[500:]],  # an iterable of chunks
    lambda data: io.BufferedReader(io.BytesIO(data)),    # a file object
], ids=["bytes", "iterable", "file"])
def test_put_takes_bytes_iterables_and_files(tmp_path, make_stream):
    storage = LocalStorage(path=tmp_path)
    data = os.urandom(1000)
    stored = storage.put(make_stream(data), key="a/b/c.bin")
    assert stored.key == "a/b/c.bin"
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == data


def test_put_over_max_size_stops_and_leaves_nothing(tmp_path):
    storage = LocalStorage(path=tmp_path / "root")
    read = []

    def endless():
        while True:
            read.append(1)
            yield b"x" * 1000

    with pytest.raises(MediaTooLarge):
        storage.put(endless(), name="big.bin", max_size=10_000)
    assert len(read) == 11  # stopped at the first chunk past the limit, not at the end
    assert files_under(tmp_path / "root") == []


@pytest.mark.parametrize("key", ["../../etc/passwd", "/etc/passwd", "a/../../b", "a\\..\\b", "a//b", "a/./b"])
def test_put_refuses_keys_leaving_the_root(tmp_path, key):
    storage = LocalStorage(path=tmp_path / "root")
    with pytest.raises(InvalidMediaName):
        storage.put(b"data", key=key)
    assert files_under(tmp_path) == []


def test_a_name_never_chooses_the_path(tmp_path):
    storage = LocalStorage(path=tmp_path / "root")
    stored = storage.put(b"data", name="../../etc/passwd")
    written = files_under(tmp_path)
    assert len(written) == 1
    assert written[0].is_relative_to(tmp_path / "root")
    assert written[0].name == "passwd"
    assert ".." not in stored.key


@pytest.mark.parametrize("raw,clean", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\x\\photo.png", "photo.png"),
    ("  re\x00port\n.pdf ", "report.pdf"),
    ("x" * 300 + ".pdf", "x" * 251 + ".pdf"),
])
def test_clean_filename(raw, clean):
    assert clean_filename(raw) == clean


@pytest.mark.parametrize("raw", ["", "..", ".", "/", "a/", "\x00\x01"])
def test_clean_filename_refuses_nothing_usable(raw):
    with pytest.raises(InvalidMediaName):
        clean_filename(raw)


# -- building strategies ----------------------------------------------------------


def test_default_alias_is_a_local_strategy_over_django_default_storage(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    strategy = media_storage()
    assert isinstance(strategy, LocalStorage)  # found through STRATEGY_FOR_BACKEND
    assert strategy.name == "default"
    stored = strategy.put(b"hello", name="hello.txt")
    assert (tmp_path / stored.key).read_bytes() == b"hello"


def test_any_storages_alias_works_through_the_generic_strategy(settings):
    settings.STORAGES = {**settings.STORAGES,
                         "scratch": {"BACKEND": "django.core.files.storage.InMemoryStorage"}}
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STORAGE": "scratch"}
    strategy = media_storage()
    assert type(strategy) is MediaStorage and strategy.name == "scratch"
    data = os.urandom(5000)
    stored = strategy.put(io.BytesIO(data), name="blob.bin")
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert strategy.exists(stored.key)
    assert strategy.open(stored.key).read() == data
    assert strategy.metadata(stored.key)["size"] == 5000


def test_strategy_from_a_dict(tmp_path):
    strategy = build_strategy({"strategy": "local", "path": str(tmp_path), "name": "uploads"})
    assert isinstance(strategy, LocalStorage) and strategy.name == "uploads"
    assert isinstance(strategy.storage, FileSystemStorage)


# Strategies named by dotted path in the tests below (never written to).
SHARED_UPLOADS = LocalStorage(path="/nonexistent/shared-uploads", name="shared")


def make_uploads():
    return LocalStorage(path="/nonexistent/made-uploads", name="made")


def test_strategy_from_a_dotted_path():
    assert build_strategy("tests.test_media_storage.SHARED_UPLOADS") is SHARED_UPLOADS
    assert build_strategy("tests.test_media_storage.make_uploads").name == "made"


@pytest.mark.parametrize("spec", ["nope", {"strategy": "ftp"}, {"path": "/x"}, 42, {"strategy": "local"},
                                  "no_such_module.uploads", "tests.test_media_storage.pdf"])
def test_bad_strategy_specs_are_refused(spec):
    with pytest.raises(ImproperlyConfigured):
        build_strategy(spec)


def test_entries_of_a_previous_storage_stay_readable(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "old": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STORAGE": LocalStorage(path=tmp_path / "new")}
    assert media_storage("old").name == "old"
    assert media_storage("old").storage.location == str(tmp_path)
    assert media_storage("local") is media_storage()


# -- content types ----------------------------------------------------------------


@pytest.mark.parametrize("declared,content,filename,expected", [
    ("image/png", png(), "a.png", "image/png"),
    ("image/jpg", b"\xff\xd8\xff\xe0" + b"\0" * 20, "a.jpg", "image/jpeg"),  # alias
    ("IMAGE/PNG; charset=x", png(), "a.png", "image/png"),
    ("application/pdf", pdf(), "a.pdf", "application/pdf"),
    ("text/plain", "héllo wörld\n".encode(), "a.txt", "text/plain"),
    ("text/csv", b"a,b\n1,2\n", "a.csv", "text/csv"),
    ("application/octet-stream", png(), "x", "image/png"),  # sniffed
    ("", b"a,b\n", "data.csv", "text/csv"),                  # text: the name's type
    (None, b"plain words", "notes", "text/plain"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     b"PK\x03\x04" + b"\0" * 30, "a.docx",
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("audio/flac", os.urandom(100).replace(b"\0", b"\1") + b"\0", "a.flac", "audio/flac"),  # unknown: kept
])
def test_verify_content_type_accepts_what_matches(declared, content, filename, expected):
    assert filetypes.verify_content_type(declared, content[:filetypes.HEAD_SIZE], filename) == expected


@pytest.mark.parametrize("declared,content", [
    ("image/png", pdf()),                       # a PDF declared as PNG
    ("image/png", b"just text"),                # text declared as PNG
    ("text/plain", png()),                      # a PNG declared as text
    ("text/plain", b"\x7fELF\x02\x01\x01" + b"\0" * 50),  # a program declared as text
    ("text/plain", b"abc\x00def"),              # NUL bytes are not text
    ("application/pdf", b"\xff\xfe\xfd\xfc"),   # unknown bytes are not a PDF
    ("audio/flac", png()),                      # unknown declared type, known other format
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", pdf()),
])
def test_verify_content_type_refuses_contradictions(declared, content):
    with pytest.raises(filetypes.ContentTypeError):
        filetypes.verify_content_type(declared, content, "x")


def test_type_allowed_patterns():
    assert filetypes.type_allowed("image/png", ["image/*"])
    assert not filetypes.type_allowed("text/plain", ["image/*", "application/pdf"])
    assert filetypes.type_allowed("anything/else", None)


# -- store_media --------------------------------------------------------------------



@pytest.mark.django_db
def test_store_media_records_an_entry_of_the_aggregate(media_root):
    order_id = place_order()
    data = png(10_000)

    entry, created = store_media(io.BytesIO(data), namespace="app-order", aggregate_id=order_id,
                                 filename="scan.png", content_type="image/png", user="42")

    assert created
    entry.refresh_from_db()
    assert (entry.namespace, entry.resource, entry.aggregate_id) == ("app-order", "order", order_id)
    assert (entry.filename, entry.content_type, entry.size) == ("scan.png", "image/png", 10_000)
    assert entry.sha256 == hashlib.sha256(data).hexdigest()
    assert (entry.storage, entry.uploaded_by) == ("local", "42")
    assert (media_root / entry.key).read_bytes() == data
    assert entry.key.startswith(f"fluvius/app-order/{order_id}/")


@pytest.mark.django_db
def test_store_media_deduplicates_per_aggregate(media_root):
    order_id, other_id = place_order(), place_order()
    data = png(5000)
    first, created = store_media(data, namespace="app-order", aggregate_id=order_id, filename="a.png")
    again, created_again = store_media(data, namespace="app-order", aggregate_id=order_id, filename="b.png")
    elsewhere, created_elsewhere = store_media(data, namespace="app-order", aggregate_id=other_id,
                                               filename="a.png")
    assert created and not created_again and created_elsewhere
    assert again.pk == first.pk and again.filename == "a.png"
    assert elsewhere.pk != first.pk
    assert MediaEntry.objects.count() == 2
    assert len(files_under(media_root)) == 2  # the duplicate was not stored again


@pytest.mark.django_db
@pytest.mark.parametrize("kwargs,error", [
    ({"content": b""}, EmptyMedia),
    ({"content": pdf(), "content_type": "image/png"}, MediaTypeMismatch),
    ({"content": b"PK\x03\x04" + b"\0" * 100, "content_type": "application/zip"}, UnsupportedMediaType),
    ({"content": png(3000), "max_size": 2000}, MediaTooLarge),
    ({"content": png(), "filename": ".."}, InvalidMediaName),
])
def test_store_media_refuses_bad_input_and_stores_nothing(media_root, kwargs, error):
    order_id = place_order()
    arguments = {"namespace": "app-order", "aggregate_id": order_id, "filename": "f.png", **kwargs}
    with pytest.raises(error) as caught:
        store_media(arguments.pop("content"), **arguments)
    assert 400 <= caught.value.status_code < 500
    assert caught.value.as_dict()["code"] == error.default_code or isinstance(caught.value, InvalidMediaName)
    assert MediaEntry.objects.count() == 0
    assert files_under(media_root) == []


@pytest.mark.django_db
def test_store_media_needs_an_existing_aggregate_of_the_namespace(media_root):
    order_id = place_order()
    with pytest.raises(AggregateNotFound):
        store_media(png(), namespace="app-order", aggregate_id=uuid.uuid4(), filename="a.png")
    with pytest.raises(AggregateNotFound):
        store_media(png(), namespace="app-user", aggregate_id=order_id, filename="a.png")
    assert files_under(media_root) == []


@pytest.mark.django_db
def test_a_failed_entry_write_removes_the_stored_bytes(media_root, monkeypatch):
    order_id = place_order()

    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(MediaEntry.objects, "using", lambda alias: type("M", (), {
        "create": broken, "filter": MediaEntry._default_manager.filter})())
    with pytest.raises(RuntimeError):
        store_media(png(), namespace="app-order", aggregate_id=order_id, filename="a.png")
    assert files_under(media_root) == []


# -- media in commands and events ---------------------------------------------------


@pytest.mark.django_db
def test_a_command_carries_the_media_metadata_never_its_bytes(media_root):
    from example_project.orders.domain import OrderDomain

    order_id = place_order()
    data = pdf(50_000)
    entry, _ = store_media(data, namespace="app-order", aggregate_id=order_id, filename="invoice.pdf",
                           content_type="application/pdf")
    domain = OrderDomain()

    result = domain.process_command(domain.create_command(
        "attach-document", {"document": str(entry.id), "note": "signed"}, aggregate_id=order_id))

    stored = Event.objects.get(aggregate_id=order_id, version=result.version)
    assert stored.payload["document"] == entry.as_ref()
    assert stored.payload["document"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(str(stored.payload)) < 1000  # metadata only
    assert result.state["documents"][0]["filename"] == "invoice.pdf"
    assert domain.statemgr.fetch("order", order_id).documents[0]["id"] == str(entry.id)


@pytest.mark.django_db
def test_a_command_refuses_unknown_or_foreign_media(media_root):
    from example_project.orders.domain import OrderDomain

    order_id, other_id = place_order(), place_order()
    foreign, _ = store_media(png(), namespace="app-order", aggregate_id=other_id, filename="a.png")
    domain = OrderDomain()
    with pytest.raises(CommandValidationError) as caught:
        domain.create_command("attach-document", {"document": str(uuid.uuid4())}, aggregate_id=order_id)
    assert "document" in caught.value.errors
    with pytest.raises(CommandValidationError):
        domain.create_command("attach-document", {"document": "not-a-uuid"}, aggregate_id=order_id)
    command = domain.create_command("attach-document", {"document": str(foreign.id)}, aggregate_id=order_id)
    with pytest.raises(DomainError):
        domain.process_command(command)
    assert Event.objects.filter(aggregate_id=order_id).count() == 1


# -- system checks -------------------------------------------------------------------


def test_checks_accept_the_defaults():
    assert check_media_settings() == []


@pytest.mark.parametrize("override,check_id", [
    ({"MEDIA_STORAGE": "no-such-alias"}, "fluvius.E060"),
    ({"MEDIA_STORAGE": {"strategy": "ftp"}}, "fluvius.E060"),
    ({"MEDIA_MAX_SIZE": 0}, "fluvius.E061"),
    ({"MEDIA_MAX_SIZE": "10MB"}, "fluvius.E061"),
    ({"MEDIA_ALLOWED_TYPES": "image/png"}, "fluvius.E062"),
    ({"MEDIA_ALLOWED_TYPES": ["png"]}, "fluvius.E062"),
    ({"MEDIA_URL_EXPIRES": 0}, "fluvius.E063"),
    ({"MEDIA_URL_EXPIRES": 8 * 24 * 3600}, "fluvius.E063"),
])
def test_checks_catch_bad_media_settings(settings, override, check_id):
    settings.FLUVIUS = {**settings.FLUVIUS, **override}
    assert [e.id for e in check_media_settings()] == [check_id]


def test_the_media_checks_run_with_manage_py_check(settings):
    from django.core import checks

    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_MAX_SIZE": -1}
    assert "fluvius.E061" in [e.id for e in checks.run_checks()]


@pytest.mark.django_db(transaction=True)
def test_concurrent_uploads_of_the_same_bytes_make_one_entry(media_root, monkeypatch):
    import threading

    from django.db import connections

    from django_fluvius.media import entries as media

    order_id = place_order()
    data = png(20_000)
    barrier = threading.Barrier(2, timeout=10)
    original = media.find_duplicate
    seen = threading.local()

    def racing_find_duplicate(*args):
        found = original(*args)
        if not getattr(seen, "waited", False):
            seen.waited = True
            barrier.wait()  # both uploads have looked for a duplicate before either records one
        return found

    monkeypatch.setattr(media, "find_duplicate", racing_find_duplicate)
    results, errors = [], []

    def upload():
        try:
            results.append(store_media(data, namespace="app-order", aggregate_id=order_id, filename="a.png"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=upload) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(created for _, created in results) == [False, True]
    assert results[0][0].pk == results[1][0].pk
    assert MediaEntry.objects.count() == 1
    assert len(files_under(media_root)) == 1  # the loser's copy was removed


@pytest.mark.django_db
def test_delete_entry_removes_the_bytes_and_the_entry(media_root):
    from django_fluvius.media import delete_entry, get_entry, open_entry

    order_id = place_order()
    entry, _ = store_media(b"some text", namespace="app-order", aggregate_id=order_id, filename="a.txt")
    with open_entry(get_entry(entry.id, aggregate_id=order_id)) as f:
        assert f.read() == b"some text"
    delete_entry(entry)
    assert MediaEntry.objects.count() == 0 and files_under(media_root) == []
