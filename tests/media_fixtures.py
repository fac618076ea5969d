"""Fixtures of the media tests (load with ``pytest_plugins = ["tests.media_fixtures"]``):
storage roots, and a real S3-compatible server (moto in server mode) on loopback."""

import subprocess
import uuid

import pytest

from tests.media_support import S3_CREDENTIALS, free_port, start_moto


@pytest.fixture
def media_root(tmp_path, settings):
    """Uploads go to a LocalStorage under a fresh directory (inside ``tmp_path/root``)."""
    from django_fluvius.media import LocalStorage

    root = tmp_path / "root"
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STORAGE": LocalStorage(path=root)}
    return root


@pytest.fixture(scope="session")
def s3_endpoint():
    """The URL of a moto S3 server started for this test session (stopped at its end)."""
    port = free_port()
    process = start_moto(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def s3_client(s3_endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


@pytest.fixture
def bucket(s3_client):
    """A new, empty bucket."""
    name = f"fluvius-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_media(settings, s3_endpoint, bucket):
    """Uploads go to an S3Storage over the moto server's fresh bucket."""
    from django_fluvius.media import S3Storage

    strategy = S3Storage(bucket=bucket, endpoint_url=s3_endpoint, **S3_CREDENTIALS)
    settings.FLUVIUS = {**settings.FLUVIUS, "MEDIA_STORAGE": strategy}
    return strategy
