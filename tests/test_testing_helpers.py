"""The helpers users test their own domains with (django_fluvius.testing, the pytest plugin)."""

import datetime
import uuid

import pytest
from django.db import transaction
from django.test import TestCase

from django_fluvius import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    DomainError,
    event_handler,
)
from django_fluvius.delivery.handlers import handlers
from django_fluvius.events.upcasting import registry as upcasters
from django_fluvius.exceptions import WrongResource
from django_fluvius.models import CommandLog, Event
from django_fluvius.testing import (
    AggregateScenario,
    DispatchCapture,
    FluviusTestMixin,
    StoredScenario,
    assert_events,
    assert_no_projection,
    assert_projection,
    assert_projection_current,
    event,
    given,
)
from example_project.users.domain import UserDomain
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Note

created = event("note-created", title="T", body="", tags=[], priority=0, due=None, archived=False)


# -- in memory: no database at all (pytest-django refuses any query in these tests) --------


def test_pure_given_when_then_folds_events_and_runs_the_action():
    scenario = given(NoteDomain, created, event("note-edited", body="one"))
    assert isinstance(scenario, AggregateScenario) and not scenario.database
    assert scenario.version == 2 and scenario.state["edits"] == 1  # the @apply fold ran
    scenario.when("edit-note", body="two").then(event("note-edited", body="two"))
    scenario.then_state(body="two", edits=2, title="T")
    assert scenario.version == 3 and scenario.result.version == 3


def test_pure_create_command_and_chained_whens():
    scenario = given(UserDomain).when("create-user", name="Jo", email="jo@example.com")
    scenario.then(event("user-created", name="Jo", email="jo@example.com", active=True))
    scenario.when("rename-user", name="Joanna").then("user-renamed")  # an async action
    scenario.when("deactivate-user").then(event("user-deactivated", active=False))
    scenario.when("deactivate-user").then_error(DomainError, "already inactive", code="deactivate-user.user-is-already-inactive")
    assert scenario.version == 3  # the refused command added nothing


def test_pure_errors_are_the_ones_the_bus_raises():
    given(UserDomain).when("create-user", name="Jo", email="bad").then_error(DomainError, "Invalid email")
    given(UserDomain).when("create-user", name="Jo").then_error(CommandValidationError, fields=["email"])
    given(NoteDomain).when("edit-note", body="x").then_error(AggregateNotFound)
    given(NoteDomain, created).when("create-note", title="again").then_error(ConcurrencyConflict,
                                                                            code="already_exists")
    given(NoteDomain, created).when("edit-note", body="x", expected_version=7).then_error(
        ConcurrencyConflict, code="stale_version")
    folder = given(NoteDomain, event("folder-created", name="f"))
    assert folder.resource == "folder"
    folder.when("edit-note", body="x").then_error(WrongResource)


def test_pure_payload_compares_as_json_reads_it_back():
    due = datetime.date(2025, 1, 2)
    scenario = given(NoteDomain).when("create-note", title="T", due="2025-01-02")
    scenario.then(event("note-created", title="T", body="", tags=[], priority=0, due=due, archived=False))


def test_then_fails_with_a_readable_message():
    scenario = given(NoteDomain, created).when("edit-note", body="two")
    with pytest.raises(AssertionError, match=r"expected:\n  note-edited \{'body': 'three'\}\ngot:\n  "
                                             r"note-edited \{'body': 'two'\}"):
        scenario.then(event("note-edited", body="three"))
    with pytest.raises(AssertionError, match="the command succeeded"):
        scenario.then_error(DomainError)
    with pytest.raises(AssertionError, match="State differs on \\['body'\\]"):
        scenario.then_state(body="three")
    failed = given(UserDomain).when("create-user", name="Jo", email="bad")
    with pytest.raises(AssertionError, match="The command failed: DomainError: Invalid email"):
        failed.then("user-created")
    with pytest.raises(AssertionError, match="Expected ConcurrencyConflict, got DomainError"):
        failed.then_error(ConcurrencyConflict)
    with pytest.raises(AssertionError, match="does not match"):
        failed.then_error(DomainError, "something else")
    with pytest.raises(AssertionError, match="use given\\(..., database=True\\)"):
        scenario.then_projection(title="T")


def test_pure_given_events_pass_through_upcasters():
    def split(payload):
        payload = dict(payload)
        payload["title"] = payload.pop("name")
        return payload

    upcasters.register("note-created", 1, split, namespace="test-notes")
    try:
        old = event("note-created", name="Old title", body="", tags=[], priority=0, archived=False)
        scenario = given(NoteDomain, old.written_as(1))
        scenario.then_state(title="Old title")
        assert "name" not in scenario.state
        assert scenario.history[0].payload["name"] == "Old title"  # history stays as written
    finally:
        upcasters.unregister("note-created", 1, namespace="test-notes")


def test_assert_events_accepts_keys_and_specs():
    scenario = given(NoteDomain, created).when("archive")
    assert_events(scenario.events, "note-archived")
    assert_events(scenario.events, event("note-archived", archived=True))
    with pytest.raises(AssertionError):
        assert_events(scenario.events, "note-archived", "note-archived")


# -- through the database and the real bus ------------------------------------------------


@pytest.mark.django_db
def test_stored_given_writes_the_stream_and_the_projection():
    scenario = given(NoteDomain, created, event("note-edited", body="b"), database=True)
    assert isinstance(scenario, StoredScenario)
    stored = list(Event.objects.filter(aggregate_id=scenario.aggregate_id).values_list("version", "evt_key"))
    assert stored == [(1, "note-created"), (2, "note-edited")]
    note = Note.objects.get(pk=scenario.aggregate_id)
    assert (note.title, note.body, note.version) == ("T", "b", 2)
    scenario.then_projection_current()


@pytest.mark.django_db
def test_stored_when_goes_through_the_bus():
    scenario = given(NoteDomain, created, database=True).when("edit-note", body="new")
    scenario.then(event("note-edited", body="new")).then_state(body="new", edits=1)
    scenario.then_projection(body="new", version=2)
    assert Event.objects.filter(aggregate_id=scenario.aggregate_id).count() == 2
    log = CommandLog.objects.get(aggregate_id=scenario.aggregate_id)
    assert (log.command, log.status) == ("edit-note", "done")
    scenario.when("archive").then("note-archived").then_projection(archived=True)
    scenario.when("archive").then_error(DomainError, "already archived")
    assert CommandLog.objects.filter(aggregate_id=scenario.aggregate_id, status="rejected").count() == 1
    scenario.then_projection_current()


@pytest.mark.django_db
def test_stored_then_error_checks_that_nothing_was_stored():
    scenario = given(UserDomain, database=True).when("create-user", name="Jo", email="bad")
    scenario.then_error(DomainError)
    assert not Event.objects.filter(aggregate_id=scenario.aggregate_id).exists()
    scenario.then_no_projection()
    # And the check bites: pretend the stream moved while the command was refused.
    scenario._version_before = -1
    with pytest.raises(AssertionError, match="changed the stream"):
        scenario.then_error(DomainError)


@pytest.mark.django_db
def test_projection_assertions():
    scenario = given(UserDomain, database=True).when("create-user", name="Jo", email="jo@example.com")
    row = assert_projection(UserDomain, scenario.aggregate_id, name="Jo", active=True)
    assert row.email == "jo@example.com"
    assert_projection(UserDomain(), scenario.aggregate_id, "user", version="1")  # converted per field
    with pytest.raises(AssertionError, match="name: expected 'Bo', got 'Jo'"):
        assert_projection(UserDomain, scenario.aggregate_id, name="Bo")
    with pytest.raises(AssertionError, match="has no field 'nickname'"):
        assert_projection(UserDomain, scenario.aggregate_id, nickname="J")
    with pytest.raises(AssertionError, match="No app_user.User row"):
        assert_projection(UserDomain, uuid.uuid4(), "user", name="Jo")
    with pytest.raises(AssertionError, match="has a row"):
        assert_no_projection(UserDomain, scenario.aggregate_id)
    assert_projection_current(UserDomain, scenario.aggregate_id)
    from example_project.users.models import User

    User.objects.filter(pk=scenario.aggregate_id).update(name="tampered")
    with pytest.raises(AssertionError, match="drifted from its events"):
        assert_projection_current(UserDomain, scenario.aggregate_id)


# -- dispatch capture -----------------------------------------------------------------------


@pytest.fixture
def welcome_handler():
    seen = []

    @event_handler("user-created", name="tests.welcome_probe")
    def welcome(evt):
        seen.append((evt.evt_key, evt.payload["email"]))

    yield seen
    handlers.unregister("tests.welcome_probe")


def create_user(email="jo@example.com"):
    domain = UserDomain()
    return domain.process_command(domain.create_command("create-user", {"name": "Jo", "email": email}))


@pytest.mark.django_db
def test_without_the_fixture_handlers_wait_for_a_commit_that_never_comes(welcome_handler):
    create_user()
    assert welcome_handler == []


def test_fluvius_dispatch_runs_handlers_inline_and_records_events(fluvius_dispatch, welcome_handler):
    result = create_user()
    assert welcome_handler == [("user-created", "jo@example.com")]  # ran before the test ended
    assert fluvius_dispatch.keys == ["user-created"]
    assert fluvius_dispatch.events[0].aggregate_id == result.aggregate_id
    fluvius_dispatch.assert_dispatched(event("user-created", name="Jo", email="jo@example.com", active=True))
    assert len(fluvius_dispatch) == 0  # assert_dispatched forgets what it checked
    domain = UserDomain()
    domain.process_command(domain.create_command("deactivate-user", aggregate_id=result.aggregate_id))
    assert [e.evt_key for e in fluvius_dispatch.of("user-deactivated")] == ["user-deactivated"]


def test_fluvius_dispatch_forces_inline_dispatch(db, settings, welcome_handler):
    settings.FLUVIUS = {**settings.FLUVIUS, "DISPATCH": None}
    with DispatchCapture() as dispatched:
        create_user()
        assert dispatched.keys == ["user-created"]
    assert welcome_handler == [("user-created", "jo@example.com")]
    create_user("again@example.com")  # off again: dispatch is None and nothing runs
    assert welcome_handler == [("user-created", "jo@example.com")]


def test_commands_inside_your_own_atomic_block_wait_for_flush(fluvius_dispatch, welcome_handler):
    with transaction.atomic():
        create_user()
        assert welcome_handler == []  # not committed yet
    assert welcome_handler == []
    assert fluvius_dispatch.flush() >= 1
    assert welcome_handler == [("user-created", "jo@example.com")]
    assert fluvius_dispatch.flush() == 0  # each callback runs once


def test_flush_refuses_inside_an_uncommitted_block(fluvius_dispatch):
    with transaction.atomic():
        with pytest.raises(RuntimeError, match="has not committed yet"):
            fluvius_dispatch.flush()


def test_captures_nest_and_never_run_a_callback_twice(fluvius_dispatch, welcome_handler):
    create_user("first@example.com")
    with DispatchCapture() as inner:
        create_user("second@example.com")
    assert inner.keys == ["user-created"]  # only what happened while it was on
    assert fluvius_dispatch.keys == ["user-created", "user-created"]
    assert [email for _, email in welcome_handler] == ["first@example.com", "second@example.com"]


def test_rolled_back_commands_dispatch_nothing(fluvius_dispatch, welcome_handler):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            create_user()
            raise RuntimeError("roll back")
    fluvius_dispatch.flush()
    assert welcome_handler == [] and fluvius_dispatch.events == []


@pytest.mark.django_db(transaction=True)
def test_fluvius_dispatch_with_real_commits(fluvius_dispatch, welcome_handler):
    create_user()
    assert welcome_handler == [("user-created", "jo@example.com")]
    assert fluvius_dispatch.keys == ["user-created"]


def test_fluvius_given_fixture_uses_the_database(fluvius_given):
    scenario = fluvius_given(NoteDomain, created).when("edit-note", body="x")
    assert isinstance(scenario, StoredScenario)
    scenario.then("note-edited").then_projection(body="x")


def test_the_plugin_is_registered_through_its_entry_point(request):
    plugin = request.config.pluginmanager.get_plugin("fluvius")
    assert plugin is not None and plugin.__name__ == "django_fluvius.testing.pytest_plugin"


# -- unittest style ---------------------------------------------------------------------------


class MixinTests(FluviusTestMixin, TestCase):
    def setUp(self):
        super().setUp()
        self.seen = []
        event_handler("user-created", name="tests.mixin_probe")(lambda evt: self.seen.append(evt.evt_key))
        self.addCleanup(handlers.unregister, "tests.mixin_probe")

    def test_given_when_then_and_dispatch(self):
        scenario = self.given(UserDomain).when("create-user", name="Jo", email="jo@example.com")
        scenario.then("user-created")
        self.assertEqual(self.seen, ["user-created"])
        self.assertDispatched(event("user-created", name="Jo", email="jo@example.com", active=True))
        self.assertProjection(UserDomain, scenario.aggregate_id, name="Jo")
        self.assertProjectionCurrent(UserDomain, scenario.aggregate_id)
        self.assertNoProjection(UserDomain, uuid.uuid4(), "user")

    def test_domain_with_a_user_context(self):
        from django.contrib.auth.models import User

        user = User.objects.create(username="ann")
        domain = self.domain(UserDomain, user=user)
        result = domain.process_command(domain.create_command("create-user", {"name": "A", "email": "a@x.io"}))
        self.assertEvents(result.events, "user-created")
        self.assertEqual(result.events[0].metadata["user"], str(user.pk))
        self.assertEqual(self.dispatched.events[0].metadata["username"], "ann")


class MixinWithoutCaptureTests(FluviusTestMixin, TestCase):
    capture_dispatch = False

    def test_no_capture_when_turned_off(self):
        self.assertFalse(hasattr(self, "dispatched"))
        self.given(NoteDomain, created).when("edit-note", body="x").then("note-edited")
