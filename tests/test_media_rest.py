"""Media over HTTP on local disk: streaming uploads, downloads with the aggregate's
permissions, and every kind of bad input answered with a JSON 4xx, nothing stored."""

import hashlib
import io
import tracemalloc
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.http.multipartparser import MultiPartParser
from django.urls import include, path
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.permissions import IsAuthenticated
from rest_framework.test import APIClient

from django_fluvius.media import LocalStorage
from django_fluvius.models import Event, MediaEntry
from django_fluvius.rest import DomainRouter
from django_fluvius.rest.media import MediaUploadHandler, StagedUpload
from django_fluvius.rest.views import ResourceViewSet
from example_project.orders.domain import OrderDomain
from tests.media_support import files_under, pdf, place_order, png

# The media fixtures (media_root, s3_endpoint, bucket, s3_media ...).
pytest_plugins = ["tests.media_fixtures"]


def customer_of(user) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_OID, user.get_username())


class OwnOrders(ResourceViewSet):
    """Orders a signed-in user may read: their own (row scoping, as a project would do it)."""

    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        return super().get_queryset().filter(customer_id=customer_of(self.request.user))


open_router = DomainRouter()
open_router.register(OrderDomain)
scoped_router = DomainRouter()
scoped_router.register(OrderDomain, resource_viewset=OwnOrders)

urlpatterns = [
    path("api/", include((open_router.urls, "open"))),
    path("scoped/", include((scoped_router.urls, "scoped"))),
]

pytestmark = [pytest.mark.urls("tests.test_media_rest"), pytest.mark.django_db]


@pytest.fixture
def api():
    """A signed-in client: uploads need a user who may change the order (the default policy)."""
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user("uploader", password="pw"))
    return client


@pytest.fixture
def order_id(media_root):
    return place_order()


def media_url(order_id, prefix="api"):
    return f"/{prefix}/app-order/order/{order_id}/media/"


def multipart(*parts, boundary="fluvius-test-boundary"):
    """A multipart/form-data body from (field, filename or None, content type or None, bytes)."""
    chunks = []
    for field, filename, content_type, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if content_type:
            head += f"Content-Type: {content_type}\r\n"
        chunks.append(head.encode() + b"\r\n" + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def upload(api, url, data, filename="file.png", content_type="image/png", **extra):
    body, ctype = multipart(("file", filename, content_type, data))
    return api.generic("POST", url, body, content_type=ctype, **extra)


def nothing_stored(root):
    return files_under(root) == [] and MediaEntry.objects.count() == 0


# -- the happy path ------------------------------------------------------------------


def test_upload_returns_the_entry_and_stores_the_bytes(api, order_id, media_root):
    user = get_user_model().objects.create_user("ann", password="pw")
    api.force_authenticate(user)
    data = png(300_000)

    response = upload(api, media_url(order_id), data, filename="scan.png")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["filename"] == "scan.png" and body["content_type"] == "image/png"
    assert body["size"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["aggregate_id"] == str(order_id) and body["namespace"] == "app-order"
    assert body["resource"] == "order" and body["duplicate"] is False
    assert body["uploaded_by"] == str(user.pk)
    assert response["Location"] == body["download_url"]
    entry = MediaEntry.objects.get(pk=body["id"])
    assert (media_root / entry.key).read_bytes() == data
    assert [p.relative_to(media_root).as_posix() for p in files_under(media_root)] == [entry.key]


def test_list_retrieve_and_download(api, order_id):
    data = pdf(120_000)
    created = upload(api, media_url(order_id), data, filename="Facture été.pdf",
                     content_type="application/pdf").json()

    listed = api.get(media_url(order_id)).json()
    assert [e["id"] for e in listed["results"]] == [created["id"]]
    item = api.get(f"{media_url(order_id)}{created['id']}/")
    assert item.status_code == 200 and item.json()["sha256"] == created["sha256"]

    download = api.get(created["download_url"], HTTP_ACCEPT="application/pdf")
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == data
    assert download["Content-Type"] == "application/pdf"
    assert download["Content-Length"] == str(len(data))
    assert download["Content-Disposition"].startswith("attachment;")
    assert "filename*=utf-8''Facture%20%C3%A9t%C3%A9.pdf" in download["Content-Disposition"]
    assert download["X-Content-Type-Options"] == "nosniff"
    assert download["ETag"] == f'"{created["sha256"]}"'
    again = api.get(created["download_url"], HTTP_IF_NONE_MATCH=download["ETag"])
    assert again.status_code == 304


def test_a_duplicate_upload_returns_the_existing_entry(api, order_id, media_root):
    data = png(10_000)
    first = upload(api, media_url(order_id), data, filename="a.png")
    second = upload(api, media_url(order_id), data, filename="copy.png")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["duplicate"] is True and second.json()["filename"] == "a.png"
    assert MediaEntry.objects.count() == 1 and len(files_under(media_root)) == 1


def test_octet_stream_uploads_get_the_type_of_their_content(api, order_id):
    response = upload(api, media_url(order_id), png(), filename="photo", content_type="application/octet-stream")
    assert response.status_code == 201 and response.json()["content_type"] == "image/png"


def test_a_command_refers_to_uploaded_media_by_id(api, order_id):
    entry = upload(api, media_url(order_id), pdf(), filename="po.pdf", content_type="application/pdf").json()

    response = api.post(f"/api/app-order/attach-document/{order_id}/", {"document": entry["id"]}, format="json")

    assert response.status_code == 200, response.content
    payload = response.json()["events"][0]["payload"]["document"]
    assert payload == {k: entry[k] for k in ("id", "filename", "content_type", "size", "sha256",
                                             "namespace", "aggregate_id")}
    other = place_order()
    foreign = upload(api, media_url(other), png(), filename="x.png").json()
    refused = api.post(f"/api/app-order/attach-document/{order_id}/", {"document": foreign["id"]}, format="json")
    assert refused.status_code == 422 and refused.json()["code"] == "foreign_media"
    unknown = api.post(f"/api/app-order/attach-document/{order_id}/", {"document": str(uuid.uuid4())},
                       format="json")
    assert unknown.status_code == 400 and "document" in unknown.json()["errors"]
    assert Event.objects.filter(aggregate_id=order_id).count() == 2


# -- bad input: a JSON 4xx, nothing stored --------------------------------------------


def assert_refused(response, status, code, root):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["message"]
    assert nothing_stored(root)
    return body


def test_empty_file(api, order_id, media_root):
    body = assert_refused(upload(api, media_url(order_id), b""), 400, "empty_file", media_root)
    assert "file" in body["errors"]


@pytest.mark.parametrize("declared,data,code", [
    ("image/png", pdf(), "media_type_mismatch"),              # a PDF declared as PNG
    ("image/png", b"<html><script>alert(1)</script>", "media_type_mismatch"),
    ("text/plain", png(), "media_type_mismatch"),             # a PNG declared as text
    ("application/pdf", b"\x7fELF\x02\x01\x01" + bytes(200), "media_type_mismatch"),
    ("application/zip", b"PK\x03\x04" + bytes(200), "unsupported_media_type"),  # not allowed
    ("application/octet-stream", b"\x7fELF\x02\x01\x01" + bytes(200), "unsupported_media_type"),
    ("not a type", png(), "unsupported_media_type"),
])
def test_wrong_or_refused_types(api, order_id, media_root, declared, data, code):
    body = assert_refused(upload(api, media_url(order_id), data, content_type=declared), 415, code, media_root)
    assert body["message"]


def test_allowed_types_come_from_settings(api, order_id, media_root, settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_ALLOWED_TYPES": ["application/pdf"]}
    assert_refused(upload(api, media_url(order_id), png()), 415, "unsupported_media_type", media_root)
    assert upload(api, media_url(order_id), pdf(), content_type="application/pdf").status_code == 201


def test_path_traversal_in_the_file_name_writes_inside_the_root(api, order_id, media_root, tmp_path):
    response = upload(api, media_url(order_id), b"root:x:0:0\n", filename="../../etc/passwd",
                      content_type="text/plain")
    assert response.status_code == 201, response.content
    assert response.json()["filename"] == "passwd"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) == 1 and written[0].is_relative_to(media_root)
    assert not (tmp_path / "etc").exists()


@pytest.mark.parametrize("filename", ["..", "/", "..\\..\\"])
def test_a_file_name_with_nothing_left_is_refused(api, order_id, media_root, filename):
    # Django's parser drops a file part whose name sanitizes to nothing: no file was sent.
    body = assert_refused(upload(api, media_url(order_id), b"text", filename=filename, content_type="text/plain"),
                          400, "invalid_upload", media_root)
    assert "file" in body["errors"]


def test_an_empty_file_input_is_no_file(api, order_id, media_root):
    body = assert_refused(upload(api, media_url(order_id), b"", filename="", content_type="application/octet-stream"),
                          400, "invalid_upload", media_root)
    assert "file" in body["errors"]


def test_over_size_is_refused_while_streaming(api, order_id, media_root, settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_MAX_SIZE": 100_000}
    assert upload(api, media_url(order_id), png(100_000)).status_code == 201
    MediaEntry.objects.all().delete()
    for p in files_under(media_root):
        p.unlink()
    # Declared length within the multipart allowance: stopped by the upload handler.
    body = assert_refused(upload(api, media_url(order_id), png(100_001)), 413, "file_too_large", media_root)
    assert "100000" in body["message"] and body["details"]["max_size"] == 100_000


def test_over_size_is_refused_before_reading_the_body(api, order_id, media_root, settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_MAX_SIZE": 100_000}
    body = assert_refused(upload(api, media_url(order_id), png(400_000)), 413, "file_too_large", media_root)
    assert body["message"].startswith("The request has")


@pytest.mark.parametrize("parts,field", [
    ((), "file"),                                                           # no file at all
    ((("file", None, None, b"not a file"),), "file"),                       # a plain field
    ((("file", "a.png", "image/png", png()), ("note", None, None, b"x")), "note"),  # extra field
    ((("photo", "a.png", "image/png", png()),), "photo"),                   # another file field
    ((("file", "a.png", "image/png", png()), ("file", "b.png", "image/png", png(seed=b"2"))), "file"),
])
def test_malformed_uploads(api, order_id, media_root, parts, field):
    body, ctype = multipart(*parts)
    response = api.generic("POST", media_url(order_id), body, content_type=ctype)
    result = assert_refused(response, 400, "invalid_upload", media_root)
    assert field in result["errors"]


def test_a_json_body_is_not_an_upload(api, order_id, media_root):
    response = api.post(media_url(order_id), {"file": "aGVsbG8="}, format="json")
    assert_refused(response, 415, "unsupported_media_type", media_root)


def test_a_broken_multipart_body_is_a_400(api, order_id, media_root):
    response = api.generic("POST", media_url(order_id), b"--x\r\nnonsense",
                           content_type="multipart/form-data; boundary=x")
    assert response.status_code == 400 and response.json()["code"]
    assert nothing_stored(media_root)


@pytest.mark.parametrize("url", [
    "/api/app-order/order/not-a-uuid/media/",
    f"/api/app-order/order/{uuid.uuid4()}/media/",
])
def test_unknown_aggregates_are_404(api, media_root, url):
    assert_refused(upload(api, url, png()), 404, "not_found" if "not-a" not in url else "invalid_aggregate_id",
                   media_root)
    assert api.get(url).status_code == 404


def test_unknown_media_is_404(api, order_id):
    assert api.get(f"{media_url(order_id)}{uuid.uuid4()}/").json()["code"] == "media_not_found"
    assert api.get(f"{media_url(order_id)}nope/download/").json()["code"] == "invalid_media_id"


def test_media_is_reached_only_through_its_own_aggregate(api, order_id):
    entry = upload(api, media_url(order_id), png()).json()
    other = place_order()
    assert api.get(f"{media_url(other)}{entry['id']}/").status_code == 404
    assert api.get(f"{media_url(other)}{entry['id']}/download/").status_code == 404
    assert api.get(media_url(other)).json()["results"] == []


def test_missing_bytes_are_a_404_not_a_500(api, order_id, media_root):
    entry = upload(api, media_url(order_id), png()).json()
    for p in files_under(media_root):
        p.unlink()
    response = api.get(entry["download_url"])
    assert response.status_code == 404 and response.json()["code"] == "media_content_missing"


# -- permissions: those of the aggregate ---------------------------------------------


@pytest.fixture
def owner_and_stranger():
    users = get_user_model().objects
    return users.create_user("owner", password="pw"), users.create_user("stranger", password="pw")


def test_only_who_can_read_the_aggregate_reaches_its_media(api, media_root, owner_and_stranger):
    owner, stranger = owner_and_stranger
    order_id = place_order(customer_of(owner))
    base = media_url(order_id, prefix="scoped")

    api.force_authenticate(owner)
    entry = upload(api, base, png()).json()
    assert api.get(entry["download_url"]).status_code == 200
    assert entry["download_url"].startswith("/scoped/")

    api.force_authenticate(stranger)
    assert api.get(f"/scoped/app-order/order/{order_id}/").status_code == 404  # the resource itself
    for response in (api.get(base), api.get(f"{base}{entry['id']}/"), api.get(entry["download_url"]),
                     upload(api, base, png(seed=b"other"))):
        assert response.status_code == 404, response.content
        assert response.json()["code"] == "not_found"

    api.force_authenticate(None)
    for response in (api.get(entry["download_url"]), upload(api, base, png(seed=b"anon"))):
        assert response.status_code in (401, 403)
    assert MediaEntry.objects.count() == 1 and len(files_under(media_root)) == 1


def test_a_refused_csrf_check_leaves_no_stage_behind(media_root, owner_and_stranger):
    owner, _ = owner_and_stranger
    order_id = place_order(customer_of(owner))
    client = APIClient(enforce_csrf_checks=True)
    client.login(username="owner", password="pw")
    response = upload(client, media_url(order_id, prefix="scoped"), png())
    assert response.status_code == 403 and "CSRF" in response.json()["message"]
    assert nothing_stored(media_root)


# -- streaming -------------------------------------------------------------------------


def test_the_upload_handler_streams_without_holding_the_file(tmp_path):
    size = 24 * 1024 * 1024
    data = png(size)
    body, ctype = multipart(("file", "big.png", "image/png", data))
    stream = io.BytesIO(body)
    handler = MediaUploadHandler(storage=LocalStorage(path=tmp_path), max_size=None)
    meta = {"CONTENT_TYPE": ctype, "CONTENT_LENGTH": str(len(body))}

    tracemalloc.start()
    try:
        _, files = MultiPartParser(meta, stream, [handler], "utf-8").parse()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    upload_ = files["file"]
    assert isinstance(upload_, StagedUpload)
    assert upload_.staged.size == size and upload_.staged.sha256 == hashlib.sha256(data).hexdigest()
    assert upload_.staged.head == data[:8192]
    # A few 1 MiB blocks of the body at a time, whatever the file's size.
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while parsing a {size} byte upload"
    upload_.close()
    assert files_under(tmp_path) == []


# -- fuzzing the upload with real aggregates: never a 500 ----------------------------------

VALID_BODY, VALID_TYPE = multipart(("file", "a.png", "image/png", png(3000, seed=b"fuzz")))


@st.composite
def mangled_uploads(draw):
    """A valid upload body, cut, spliced with noise or with bytes flipped; or noise alone."""
    body = bytearray(VALID_BODY)
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["cut", "flip", "insert", "noise"]))
        at = draw(st.integers(0, max(0, len(body) - 1)))
        if action == "cut":
            del body[at:]
        elif action == "flip" and body:
            body[at] = draw(st.integers(0, 255))
        elif action == "insert":
            body[at:at] = draw(st.binary(max_size=64))
        else:
            body = bytearray(draw(st.binary(max_size=300)))
    content_type = draw(st.sampled_from([VALID_TYPE, "multipart/form-data", "multipart/form-data; boundary=",
                                         "multipart/form-data; boundary=x", "text/plain", "",
                                         VALID_TYPE + "; charset=utf-8"]))
    return bytes(body), content_type


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(upload_=mangled_uploads())
def test_mangled_uploads_never_answer_500(api, order_id, media_root, upload_):
    body, content_type = upload_
    response = api.generic("POST", media_url(order_id), body, content_type=content_type)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code >= 400:
        assert response.json()["code"]
    else:
        entry = MediaEntry.objects.get(pk=response.json()["id"])
        assert (media_root / entry.key).is_file()
    assert not (media_root / ".incoming").exists() or not any((media_root / ".incoming").iterdir())
