"""The S3 strategy against a real S3-compatible server: moto in server mode, started by
the tests as a process of its own on 127.0.0.1 (tests/media_support.py), no patched client."""

import hashlib
import io
import os
import uuid
from urllib.parse import parse_qs, urlparse

import pytest
import requests
from rest_framework.test import APIClient

from django_fluvius.exceptions import InvalidMediaName, MediaTooLarge
from django_fluvius.media import S3Storage, media_storage, store_media
from django_fluvius.models import MediaEntry
from tests.media_support import S3_CREDENTIALS, bucket_keys, pdf, place_order, png

# The media fixtures (media_root, s3_endpoint, bucket, s3_media ...).
pytest_plugins = ["tests.media_fixtures"]


@pytest.fixture
def strategy(s3_endpoint, bucket):
    return S3Storage(bucket=bucket, endpoint_url=s3_endpoint, **S3_CREDENTIALS)


# -- the strategy interface ------------------------------------------------------------


def test_put_open_exists_metadata_delete(strategy, s3_client, bucket):
    data = os.urandom(9 * 1024 * 1024 + 3)  # over the 8 MiB part size: a multipart upload

    stored = strategy.put(io.BytesIO(data), name="archive.bin", content_type="application/octet-stream")

    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.storage == "s3"
    assert bucket_keys(s3_client, bucket) == [stored.key]
    assert s3_client.get_object(Bucket=bucket, Key=stored.key)["Body"].read() == data
    assert strategy.exists(stored.key)
    meta = strategy.metadata(stored.key)
    assert meta["size"] == len(data) and meta["content_type"] == "application/octet-stream"
    assert meta["modified"] is not None
    body = strategy.open(stored.key)
    try:
        first = body.read(1024)
        assert first == data[:1024]
        assert first + body.read() == data
    finally:
        body.close()

    strategy.delete(stored.key)
    assert not strategy.exists(stored.key)
    assert bucket_keys(s3_client, bucket) == []
    with pytest.raises(FileNotFoundError):
        strategy.open(stored.key)
    with pytest.raises(FileNotFoundError):
        strategy.metadata(stored.key)


def test_signed_url_is_short_lived_and_fetches_the_bytes(strategy):
    data = png(5000)
    stored = strategy.put(data, name="photo.png", content_type="image/png")

    url = strategy.url(stored.key, expires=60, filename="My photo.png", content_type="image/png")

    query = parse_qs(urlparse(url).query)
    assert query["X-Amz-Expires"] == ["60"] and "X-Amz-Signature" in query
    response = requests.get(url, timeout=10)
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Type"] == "image/png"
    assert response.headers["Content-Disposition"] == 'attachment; filename="My photo.png"'
    # The signature covers the key: another key with it is refused.
    forged = url.replace(stored.key.rsplit("/", 1)[1], "other.png")
    assert requests.get(forged, timeout=10).status_code == 403


def test_default_expiry_comes_from_settings(strategy, settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_URL_EXPIRES": 42}
    stored = strategy.put(b"x", name="x.txt")
    assert parse_qs(urlparse(strategy.url(stored.key)).query)["X-Amz-Expires"] == ["42"]


def test_over_size_and_bad_keys_store_nothing(strategy, s3_client, bucket):
    with pytest.raises(MediaTooLarge):
        strategy.put(io.BytesIO(os.urandom(300_000)), name="big.bin", max_size=100_000)
    for key in ("../escape.txt", "/abs.txt", "a/../../b.txt"):
        with pytest.raises(InvalidMediaName):
            strategy.put(b"x", key=key)
    assert bucket_keys(s3_client, bucket) == []


def test_a_storages_alias_of_s3_gets_the_s3_strategy(settings, s3_endpoint, bucket):
    settings.STORAGES = {**settings.STORAGES, "media": {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {"bucket_name": bucket, "endpoint_url": s3_endpoint, **S3_CREDENTIALS},
    }}
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STORAGE": "media"}
    found = media_storage()
    assert isinstance(found, S3Storage) and found.name == "media" and found.signed_urls
    stored = found.put(b"hello", name="hello.txt")
    assert requests.get(found.url(stored.key), timeout=10).content == b"hello"


# -- entries and REST over S3 ------------------------------------------------------------




@pytest.mark.django_db
def test_store_media_on_s3_deduplicates_and_refuses_bad_input(s3_media, s3_client, bucket):
    order_id = place_order()
    data = pdf(30_000)
    entry, created = store_media(data, namespace="app-order", aggregate_id=order_id, filename="a.pdf",
                                 content_type="application/pdf")
    again, created_again = store_media(data, namespace="app-order", aggregate_id=order_id, filename="b.pdf")
    assert created and not created_again and again.pk == entry.pk
    assert entry.storage == "s3"
    assert bucket_keys(s3_client, bucket) == [entry.key]
    head = s3_client.head_object(Bucket=bucket, Key=entry.key)
    assert head["ContentType"] == "application/pdf" and head["ContentLength"] == len(data)
    with pytest.raises(Exception) as caught:
        store_media(png(), namespace="app-order", aggregate_id=order_id, filename="c.png",
                    content_type="application/pdf")
    assert caught.value.status_code == 415
    assert bucket_keys(s3_client, bucket) == [entry.key]


def upload(api, url, data, filename, content_type):
    boundary = "s3-test-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return api.generic("POST", url, body, content_type=f"multipart/form-data; boundary={boundary}")


@pytest.mark.django_db
@pytest.mark.urls("tests.test_rest_urls")
def test_rest_upload_to_s3_and_download_by_signed_redirect(s3_media, s3_client, bucket, settings):
    order_id = place_order()
    api = signed_in_client()
    data = png(700_000)

    response = upload(api, f"/api/app-order/order/{order_id}/media/", data, "scan.png", "image/png")

    assert response.status_code == 201, response.content
    entry = MediaEntry.objects.get(pk=response.json()["id"])
    assert bucket_keys(s3_client, bucket) == [entry.key]
    assert s3_client.get_object(Bucket=bucket, Key=entry.key)["Body"].read() == data

    download = api.get(response.json()["download_url"])
    assert download.status_code == 302
    assert download.json()["url"] == download["Location"]
    assert download.json()["expires_in"] == settings.FLUVIUS.get("MEDIA_URL_EXPIRES", 300)
    fetched = requests.get(download["Location"], timeout=10)
    assert fetched.status_code == 200 and fetched.content == data
    assert 'filename="scan.png"' in fetched.headers["Content-Disposition"]

    # Without signed URLs the bytes stream through the application.
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_SIGNED_URLS": False}
    streamed = api.get(response.json()["download_url"])
    assert streamed.status_code == 200
    assert b"".join(streamed.streaming_content) == data
    assert streamed["Content-Type"] == "image/png"


@pytest.mark.django_db
@pytest.mark.urls("tests.test_rest_urls")
@pytest.mark.parametrize("data,declared,status", [
    (b"", "image/png", 400),
    (pdf(), "image/png", 415),
    (png(200_001), "image/png", 413),
])
def test_rest_bad_uploads_leave_the_bucket_empty(s3_media, s3_client, bucket, settings, data, declared, status):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_MAX_SIZE": 200_000}
    order_id = place_order()
    response = upload(signed_in_client(), f"/api/app-order/order/{order_id}/media/", data, "f.png", declared)
    assert response.status_code == status and response.json()["code"]
    assert bucket_keys(s3_client, bucket) == []
    assert MediaEntry.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.urls("tests.test_rest_urls")
def test_rest_download_of_a_vanished_object_is_a_404(s3_media, s3_client, bucket, settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_SIGNED_URLS": False}
    order_id = place_order()
    api = signed_in_client()
    created = upload(api, f"/api/app-order/order/{order_id}/media/", png(), "a.png", "image/png").json()
    s3_client.delete_object(Bucket=bucket, Key=MediaEntry.objects.get(pk=created["id"]).key)
    response = api.get(created["download_url"])
    assert response.status_code == 404 and response.json()["code"] == "media_content_missing"


def test_unknown_bucket_errors_are_not_swallowed(s3_endpoint):
    strategy = S3Storage(bucket=f"missing-{uuid.uuid4().hex[:8]}", endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    with pytest.raises(Exception) as caught:
        strategy.put(b"x", name="x.txt")
    assert not isinstance(caught.value, FileNotFoundError)


def signed_in_client():
    """Uploads need a signed-in user (the default upload policy)."""
    from django.contrib.auth import get_user_model

    client = APIClient()
    user, _ = get_user_model().objects.get_or_create(username="s3-uploader")
    client.force_authenticate(user)
    return client
