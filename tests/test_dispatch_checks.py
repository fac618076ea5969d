"""System checks of handlers, async projections and dispatch settings (fluvius.E040-E049),
and the loading of FLUVIUS['HANDLERS'] / ['PROJECTIONS'] entries."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_fluvius import loading
from django_fluvius.delivery.checks import check_dispatch_settings, check_handlers
from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.delivery.projections import AsyncProjection, async_projections, on

from .dispatch_support import fluvius


def ids(messages):
    return sorted(m.id for m in messages)


@pytest.fixture
def temporary():
    """Register handlers / projections for one test only."""
    names, projections = [], []
    yield names, projections
    for name in names:
        handlers.unregister(name)
    for name in projections:
        async_projections.unregister(name)


@pytest.fixture
def reloaded():
    """Load the handler modules again after the test changed FLUVIUS."""
    yield
    loading.load_domains()
    loading.load_handler_modules()


def test_the_project_as_shipped_has_no_dispatch_problems():
    assert check_handlers() == [] and check_dispatch_settings() == []


def test_a_handler_listening_to_an_unknown_event_key_is_an_error(temporary):
    @event_handler("note-creatd", namespace="test-notes", name="tests.typo")
    def typo(event):
        pass

    @event_handler("user-created", namespace="no-such-domain", name="tests.nowhere")
    def nowhere(event):
        pass

    @event_handler(["order-paid", "*"], name="tests.fine")  # any namespace, and the wildcard
    def fine(event):
        pass

    temporary[0].extend(["tests.typo", "tests.nowhere", "tests.fine"])
    messages = check_handlers()
    assert ids(messages) == ["fluvius.E041", "fluvius.E042"]
    typo_msg = next(m for m in messages if m.id == "fluvius.E041")
    assert "'note-creatd'" in typo_msg.msg and "tests.typo" in typo_msg.msg
    assert "no-such-domain" in next(m for m in messages if m.id == "fluvius.E042").msg
    with pytest.raises(SystemCheckError, match="fluvius.E041"):
        call_command("check")


def test_an_async_projection_reading_unknown_keys_is_an_error(temporary):
    class Wrong(AsyncProjection):
        name = "tests.wrong"

        @on("order-payed")
        def paid(self, event):
            pass

    class Elsewhere(AsyncProjection):
        name = "tests.elsewhere"
        namespace = "nowhere"
        evt_keys = ["order-paid"]

    temporary[1].extend(["tests.wrong", "tests.elsewhere"])
    assert ids(check_handlers()) == ["fluvius.E043", "fluvius.E044"]


@override_settings(FLUVIUS=fluvius(DISPATCH="kafka", RELAY="carrier", RELAY_BATCH_SIZE=0, RETRY_BACKOFF="soon",
                                   HANDLER_MAX_RETRIES=2.5))
def test_bad_dispatch_settings_are_errors():
    messages = check_dispatch_settings()
    assert ids(messages) == ["fluvius.E045", "fluvius.E048", "fluvius.E049", "fluvius.E049", "fluvius.E049"]
    assert any("RELAY_BATCH_SIZE" in m.msg for m in messages)


@override_settings(FLUVIUS=fluvius(DISPATCH="celery", CELERY_APP="no.such.celery_app"))
def test_a_celery_app_that_does_not_import_is_an_error():
    assert ids(check_dispatch_settings()) == ["fluvius.E046"]


@override_settings(FLUVIUS=fluvius(DISPATCH="celery", CELERY_APP="example_project.celery.app"))
def test_the_example_celery_app_passes():
    assert check_dispatch_settings() == []


def test_handler_entries_that_do_not_import_are_reported_not_raised(reloaded):
    entries = [
        "tests.no_such_module",                       # a module that is not there
        "tests.dispatch_handlers.no_such_function",   # a function that is not there
        "tests.dispatch_handlers.not_a_handler",      # there, but not an @event_handler
        "tests.dispatch_handlers.record",             # a handler function: fine
    ]
    with override_settings(FLUVIUS=fluvius(HANDLERS=entries, PROJECTIONS=["tests.nope"])):
        loading.load_domains()
        loading.load_handler_modules()
        problems = [(check_id, msg) for check_id, msg, _ in loading.load_problems]
    assert [c for c, _ in problems] == ["fluvius.E006", "fluvius.E006", "fluvius.E040", "fluvius.E047"]
    assert "tests.no_such_module" in problems[0][1]
    assert "no_such_function" in problems[1][1]
    assert "not_a_handler" in problems[2][1] and "@event_handler" in problems[2][1]


def test_a_module_that_raises_on_import_is_reported(tmp_path, monkeypatch, reloaded):
    (tmp_path / "broken_handlers_h5.py").write_text("raise RuntimeError('half-written module')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with override_settings(FLUVIUS=fluvius(HANDLERS=["broken_handlers_h5"])):
        loading.load_domains()
        loading.load_handler_modules()
        problems = list(loading.load_problems)
    assert problems[0][0] == "fluvius.E006" and "half-written module" in problems[0][1]


def test_a_projection_without_events_is_refused():
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="handles no event"):
        class Empty(AsyncProjection):
            name = "tests.empty"


def test_two_projections_cannot_share_a_name(temporary):
    class First(AsyncProjection):
        name = "tests.same"
        evt_keys = ["note-created"]

    temporary[1].append("tests.same")
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="already registered"):
        class Second(AsyncProjection):
            name = "tests.same"
            evt_keys = ["note-edited"]

    assert async_projections.get("tests.same") is First


def test_two_handlers_cannot_share_a_name():
    from django.core.exceptions import ImproperlyConfigured

    registry = HandlerRegistry()

    @event_handler("note-created", name="dup", registry=registry)
    def one(event):
        pass

    with pytest.raises(ImproperlyConfigured, match="already registered"):
        @event_handler("note-created", name="dup", registry=registry)
        def two(event):
            pass
