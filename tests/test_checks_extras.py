"""fluvius.E090: a setting that needs an optional extra which is not installed.

The real proof runs in ``scripts/wheel-check``: the wheel installed without extras,
``DISPATCH="celery"`` with a Redis broker, and ``manage.py check`` fails naming
``django-fluvius[redis]``. Here the suite (which has every extra installed) hides
one package at a time from ``installed()``.
"""

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_fluvius import checks as fluvius_checks
from django_fluvius.media import S3Storage

from .dispatch_support import fluvius


@pytest.fixture
def missing(monkeypatch):
    """Pretend the named packages are not installed."""
    hidden: set[str] = set()
    real = fluvius_checks.installed
    monkeypatch.setattr(fluvius_checks, "installed", lambda module: module not in hidden and real(module))
    return hidden


def e090() -> list[checks.CheckMessage]:
    return [m for m in fluvius_checks.check_extras() if m.id == "fluvius.E090"]


def test_celery_dispatch_on_redis_without_the_redis_client_names_the_extra(missing):
    missing.add("redis")
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery"), CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        [error] = e090()
        assert "CELERY_BROKER_URL" in error.msg and "'redis'" in error.msg
        assert error.hint == "pip install 'django-fluvius[redis]'"
        # `manage.py check` fails before any command can reach the broker.
        with pytest.raises(SystemCheckError, match=r"fluvius\.E090.*\n.*django-fluvius\[redis\]"):
            call_command("check")


def test_nothing_is_needed_when_the_package_is_there_or_not_used(missing):
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery"), CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        assert e090() == []  # redis is installed in the test environment
    missing.add("redis")
    with override_settings(FLUVIUS=fluvius(DISPATCH="inline"), CELERY_BROKER_URL="redis://127.0.0.1:6379/0"):
        assert e090() == []  # inline dispatch never talks to the broker
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery"), CELERY_BROKER_URL="amqp://127.0.0.1:5672//"):
        assert e090() == []  # amqp comes with Celery itself


def test_a_result_backend_and_a_celery_app_are_checked_too(missing):
    from celery import Celery

    missing.add("redis")
    app = Celery("extras-check", broker="rediss://127.0.0.1:6380/1", set_as_current=False)
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", CELERY_APP=app), CELERY_BROKER_URL=None,
                           CELERY_RESULT_BACKEND="redis://127.0.0.1:6379/2"):
        wheres = sorted(m.msg.split(" uses ")[0] for m in e090())
    assert wheres == ["CELERY_RESULT_BACKEND", "FLUVIUS['CELERY_APP'] broker_url"]


@pytest.mark.parametrize("media, storages", [
    (S3Storage(bucket="b"), None),
    ({"strategy": "s3", "bucket": "b"}, None),
    ("uploads", {"uploads": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "b"}}}),
], ids=["strategy", "mapping", "storages-alias"])
def test_s3_media_without_boto3_names_the_s3_extra(missing, settings, media, storages):
    missing.add("boto3")
    if storages:
        settings.STORAGES = {**settings.STORAGES, **storages}
    with override_settings(FLUVIUS=fluvius(MEDIA_STORAGE=media)):
        [error] = e090()
    assert "S3 media storage" in error.msg and error.hint == "pip install 'django-fluvius[s3]'"
