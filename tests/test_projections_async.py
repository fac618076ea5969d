"""Async projections: checkpoints saved with their writes, catch-up from any position,
poison events, and the gap-safe feed (two connections committing out of order on PostgreSQL
and on MariaDB)."""

from __future__ import annotations

import threading
import uuid

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections, transaction
from django.test import override_settings

from django_fluvius.delivery.dispatch import redrive
from django_fluvius.delivery.projections import APPLIED, BUSY, FAILED, IDLE, async_projections
from django_fluvius.events.feed import ORIGIN, Feed
from django_fluvius.models import Checkpoint, DeadLetter, Event
from tests import dispatch_handlers
from tests.dispatch_handlers import NoteActivityProjection
from tests.testapp.domain import NoteDomain
from tests.testapp.models import NoteActivity

from .dispatch_support import fluvius

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def projection():
    async_projections.register(NoteActivityProjection)
    yield NoteActivityProjection()
    async_projections.unregister(NoteActivityProjection.name)


@pytest.fixture
def no_dispatch():
    """Commands commit without waking the projection: the tests catch up by hand."""
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        yield


def create_note(title="n"):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("create-note", {"title": title}))


def edit_note(note_id, body):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("edit-note", {"body": body}, aggregate_id=note_id))


def activity():
    return {row.pk: (row.title, row.events, row.last_version) for row in NoteActivity.objects.all()}


@pytest.mark.django_db
def test_catch_up_from_zero_applies_every_event_once(projection, no_dispatch):
    a, b = create_note("a"), create_note("b")
    edit_note(a.aggregate_id, "x")
    last = edit_note(a.aggregate_id, "y").events[0].position
    NoteDomain().process_command(NoteDomain().create_command("create-folder", {"name": "f"}))  # not read
    assert projection.lag() == 4
    result = projection.catch_up()
    assert (result.status, result.applied) == (APPLIED, 4)
    assert activity() == {a.aggregate_id: ("a", 3, 3), b.aggregate_id: ("b", 1, 1)}
    cp = Checkpoint.objects.get(name=projection.name)
    assert cp.position >= last and cp.events_applied == 4 and cp.failures == 0
    assert projection.lag() == 0
    again = projection.catch_up()
    assert (again.status, again.applied) == (IDLE, 0)
    assert activity()[a.aggregate_id] == ("a", 3, 3), "nothing applied twice"


@pytest.mark.django_db
def test_catch_up_runs_in_batches_and_reports_progress(projection, no_dispatch):
    notes = [create_note(str(i)) for i in range(5)]
    seen = []
    with override_settings(FLUVIUS=fluvius(DISPATCH=None, PROJECTION_BATCH_SIZE=2)):
        result = projection.catch_up(progress=lambda total: seen.append(total.applied))
    assert result.applied == 5 and seen == [2, 4, 5]
    assert len(activity()) == len(notes)


@pytest.mark.django_db
def test_a_failing_batch_rolls_back_its_writes_and_keeps_the_checkpoint(projection, no_dispatch):
    a = create_note("a")
    edit_note(a.aggregate_id, "poison")
    create_note("b")
    result = projection.run_batch()
    assert result.status == FAILED and "cannot project" in str(result.error)
    assert activity() == {}, "the rows of the batch went with it"
    cp = Checkpoint.objects.get(name=projection.name)
    assert (cp.txid, cp.position, cp.events_applied) == (0, 0, 0)
    assert cp.failures == 1 and "cannot project" in cp.last_error


@pytest.mark.django_db
@override_settings(FLUVIUS=fluvius(DISPATCH=None, PROJECTION_MAX_RETRIES=2))
def test_a_poison_event_is_dead_lettered_after_the_last_try_and_the_rest_applied(projection, monkeypatch):
    a = create_note("a")
    poison = edit_note(a.aggregate_id, "poison").events[0]
    b = create_note("b")
    assert projection.catch_up().status == FAILED
    assert projection.catch_up().status == FAILED
    result = projection.catch_up()  # third try: event by event
    assert (result.status, result.applied, result.skipped) == (APPLIED, 2, 1)
    assert activity() == {a.aggregate_id: ("a", 1, 1), b.aggregate_id: ("b", 1, 1)}
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.handler, letter.position, letter.attempts) == (
        "projection", projection.name, poison.position, 3)
    cp = Checkpoint.objects.get(name=projection.name)
    assert cp.failures == 0 and cp.events_applied == 2

    # Once the projection copes, re-driving applies the skipped event.
    monkeypatch.setattr(NoteActivityProjection, "changed", NoteActivityProjection._count)
    assert redrive([letter]) == 1
    assert activity()[a.aggregate_id] == ("a", 2, 2)
    assert not DeadLetter.objects.exists()


@pytest.mark.django_db
@override_settings(FLUVIUS=fluvius(DISPATCH=None, PROJECTION_MAX_RETRIES=0))
def test_an_event_that_cannot_be_decoded_is_dead_lettered(projection):
    good = create_note("good")
    bad = Event.objects.create(namespace="test-notes", resource="note", aggregate_id=uuid.uuid4(), version=1,
                               evt_key="note-created", payload=["not", "an", "object"])
    result = projection.catch_up()
    assert result.skipped == 1 and good.aggregate_id in activity()
    letter = DeadLetter.objects.get()
    assert letter.position == bad.position and "EventDecodeError" in letter.error_type


@pytest.mark.django_db
def test_catch_up_from_any_position(projection, no_dispatch):
    first = create_note("first")
    second = create_note("second")
    third = create_note("third")
    projection.catch_up()
    assert len(activity()) == 3

    projection.reset(second.events[0].position - 1)  # empty, then read from "second" on
    assert activity() == {}
    projection.catch_up()
    assert set(activity()) == {second.aggregate_id, third.aggregate_id}

    projection.start_at(third.events[0].position)  # nothing emptied, only the next reads move
    edit_note(first.aggregate_id, "later")
    assert projection.catch_up().applied == 1
    assert activity()[first.aggregate_id] == ("", 1, 2)

    projection.reset()
    assert projection.catch_up().applied == 4
    assert activity()[first.aggregate_id] == ("first", 2, 2)


@pytest.mark.django_db
def test_projections_command(projection, no_dispatch, capsys):
    create_note("a")
    call_command("fluvius_projections", "list")
    assert f"{projection.name}" in capsys.readouterr().out
    call_command("fluvius_projections", "catch-up", projection.name)
    assert "applied 1 events" in capsys.readouterr().out and len(activity()) == 1
    call_command("fluvius_projections", "reset", projection.name, "--position", "0")
    assert activity() == {}
    call_command("fluvius_projections", "catch-up")
    assert len(activity()) == 1
    call_command("fluvius_projections", "start-at", projection.name, "--position", "999999")
    with pytest.raises(CommandError, match="No async projection is named 'nope'"):
        call_command("fluvius_projections", "catch-up", "nope")
    with pytest.raises(CommandError, match="exactly one"):
        call_command("fluvius_projections", "reset")


@pytest.mark.django_db(transaction=True)
def test_inline_dispatch_keeps_the_projection_current(projection):
    note = create_note("inline")
    assert activity() == {note.aggregate_id: ("inline", 1, 1)}
    edit_note(note.aggregate_id, "more")
    assert activity() == {note.aggregate_id: ("inline", 2, 2)}
    assert projection.lag() == 0


@pytest.mark.django_db
def test_the_feed_key_before_a_position(no_dispatch):
    feed = Feed()
    assert feed.key_before(0) == ORIGIN
    a = create_note("a").events[0]
    b = create_note("b").events[0]
    key = feed.key_before(a.position)
    later = feed.read(key, feed.bound())
    assert [e.position for e in later] == [b.position]
    assert feed.read(feed.key_before(b.position), feed.bound()) == []


# -- PostgreSQL: concurrent writers ----------------------------------------------------------


def _in_thread(target):
    errors = []

    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_committed_late_with_a_lower_position_is_never_skipped(projection, no_dispatch):
    inserted, release = threading.Event(), threading.Event()
    late = []

    def writer():
        with transaction.atomic():  # takes a position, then stays open
            late.append(create_note("late").events[0])
            inserted.set()
            assert release.wait(20)

    thread, errors = _in_thread(writer)
    assert inserted.wait(20)
    early = create_note("early").events[0]  # a higher position, committed first
    assert early.position > late[0].position

    # A reader going by positions would now pass `early`, then never see `late`.
    result = projection.catch_up()
    assert result.held, "a committed event waits above the feed's bound"
    assert activity() == {}, "not even `early`: the open transaction might still commit below it"

    release.set()
    thread.join(20)
    assert not errors
    result = projection.catch_up()
    assert result.applied == 2
    assert set(activity()) == {late[0].aggregate_id, early.aggregate_id}
    rows = NoteActivity.objects.order_by("last_position").values_list("last_position", flat=True)
    assert list(rows) == [late[0].position, early.position]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_on_mariadb_a_second_writer_cannot_commit_its_event_first_so_none_is_skipped(projection, no_dispatch):
    inserted, release, second_done = threading.Event(), threading.Event(), threading.Event()
    late, early = [], []

    def first_writer():
        with transaction.atomic():  # takes a position and a clock tick, then stays open
            late.append(create_note("late").events[0])
            inserted.set()
            assert release.wait(20)

    def second_writer():  # another connection, trying to commit its event first
        early.append(create_note("early").events[0])
        second_done.set()

    first, first_errors = _in_thread(first_writer)
    assert inserted.wait(20)
    second, second_errors = _in_thread(second_writer)
    # With AUTO_INCREMENT alone the second writer would commit a higher position now, and a
    # reader going by positions would pass it and never see `late`. The clock makes it wait.
    assert not second_done.wait(1.5), "the second event writer waits for the first one's commit"
    assert projection.catch_up().applied == 0 and activity() == {}

    release.set()
    first.join(20)
    second.join(20)
    assert not first_errors and not second_errors
    assert projection.catch_up().applied == 2
    stored = {e.aggregate_id: e for e in Event.objects.all()}
    late_row, early_row = stored[late[0].aggregate_id], stored[early[0].aggregate_id]
    assert late_row.txid < early_row.txid and late_row.position < early_row.position
    rows = NoteActivity.objects.order_by("last_position").values_list("last_position", flat=True)
    assert list(rows) == [late_row.position, early_row.position]


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_on_mariadb_raw_connections_committing_out_of_order_leave_no_gap_in_the_feed(projection, no_dispatch):
    """Two plain MySQLdb connections, outside the bus: the trigger orders them all the same."""
    import MySQLdb

    params = connection.get_connection_params()
    conns = [MySQLdb.connect(**params) for _ in range(2)]
    insert = ("INSERT INTO django_fluvius_event (namespace, resource, aggregate_id, version, evt_key,"
              " schema_version, payload, metadata, correlation_id, causation_id, `user`, tenant, created)"
              " VALUES ('test-notes', 'note', %s, 1, 'note-created', 1, %s, '{}', '', '', '', '', NOW(6))")
    ids = [uuid.uuid4().hex for _ in range(2)]
    try:
        a, b = conns
        a.autocommit(False)
        b.autocommit(False)
        a.cursor().execute(insert, (ids[0], '{"title": "a"}'))
        blocked = threading.Event()

        def b_writes():
            b.cursor().execute(insert, (ids[1], '{"title": "b"}'))
            b.commit()
            blocked.set()

        thread = threading.Thread(target=b_writes)
        thread.start()
        assert not blocked.wait(1.5), "b's insert waits for a's transaction"
        feed = Feed()
        assert feed.read(ORIGIN, feed.bound()) == []
        a.commit()
        thread.join(20)
        assert blocked.is_set()
        events = feed.read(ORIGIN, feed.bound())
        assert [e.aggregate_id.hex for e in events] == ids
        assert events[0].txid < events[1].txid
    finally:
        for c in conns:
            c.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_writer_in_another_database_does_not_hold_the_feed_back(projection, no_dispatch):
    import psycopg

    params = connection.get_connection_params()
    ours = psycopg.connect(**params)
    other = psycopg.connect(**{**params, "dbname": "postgres"})
    try:
        other.execute("SELECT pg_current_xact_id()")  # a transaction with an id, elsewhere
        note = create_note("through")
        assert projection.catch_up().applied == 1, "another database's transaction does not matter"

        ours.execute("SELECT pg_current_xact_id()")  # one in our database does, until it ends
        held = create_note("held")
        result = projection.catch_up()
        assert result.applied == 0 and result.held
        ours.rollback()
        assert projection.catch_up().applied == 1
        assert set(activity()) == {note.aggregate_id, held.aggregate_id}
    finally:
        ours.close()
        other.close()


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_one_worker_at_a_time_per_projection(projection, no_dispatch):
    create_note("x")
    projection.checkpoint()
    locked, release = threading.Event(), threading.Event()

    def holder():
        with transaction.atomic():
            Checkpoint.objects.select_for_update().get(name=projection.name)
            locked.set()
            assert release.wait(20)

    thread, errors = _in_thread(holder)
    assert locked.wait(20)
    assert projection.run_batch(wait=False).status == BUSY
    release.set()
    thread.join(20)
    assert not errors
    assert projection.catch_up(wait=False).applied == 1


def test_the_test_projection_is_not_registered_outside_its_tests():
    assert NoteActivityProjection.name not in async_projections
    assert dispatch_handlers.NAMESPACE == "test-notes"
