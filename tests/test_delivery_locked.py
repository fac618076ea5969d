"""The locked way of inline delivery (``delivery/locked.py``): one transaction per new event.

PostgreSQL and MariaDB / MySQL. What sets it apart from the leased way
(tests/test_delivery_inline.py runs the shared guarantees both ways): its round trips,
its failures (the whole transaction rolls back), a busy row skipped without waiting,
and on PostgreSQL the server-wide ``xmin`` it bounds the feed by — held back by another
database's transaction, it hands over to the leased way.
"""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_fluvius.delivery import dispatch, locked
from django_fluvius.models import Checkpoint, DeadLetter, HandlerReceipt

from .dispatch_support import fluvius
from .test_delivery_inline import (
    NAME,
    _in_thread,
    checkpoint,
    create_notes,
    effects,
    feed_key,
    positions,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server_database]


@pytest.fixture
def handler():
    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
    from tests.testapp.models import Effect

    seen: list[int] = []
    fail_on: set[int] = set()
    hold: set[int] = set()  # positions whose delivery waits for ``release`` (a slow handler)
    holding, release = threading.Event(), threading.Event()

    @event_handler(["note-created"], namespace="test-notes", name=NAME, registry=HandlerRegistry())
    def record(event):
        Effect.objects.create(handler=NAME, position=event.position, aggregate_id=event.aggregate_id,
                              version=event.version)
        seen.append(event.position)
        if event.position in hold:
            holding.set()
            assert release.wait(20)
        if event.position in fail_on:
            raise ValueError(f"no luck with {event.position}")

    handlers.register(record.handler_spec)
    record.seen, record.fail_on, record.hold, record.holding, record.release = seen, fail_on, hold, holding, release
    yield record
    release.set()
    handlers.unregister(NAME)


def slow_delivery(handler, position):
    """A thread delivering ``position`` whose handler holds its transaction open until released."""
    handler.hold.add(position)
    thread, errors = _in_thread(lambda: dispatch.deliver_committed("default", [NAME]))
    assert handler.holding.wait(20), "the slow handler started"
    return thread, errors


def pending(n=1, title="pending"):
    """Notes committed with dispatch off: their delivery is the test's to run."""
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        return positions(create_notes(n, title))


def other_connection(dbname=None):
    """A connection of the test's own, outside Django (autocommit)."""
    settings = connection.settings_dict
    if connection.vendor == "mysql":
        import MySQLdb

        conn = MySQLdb.connect(host=settings["HOST"] or "127.0.0.1", port=int(settings["PORT"] or 3306),
                               user=settings["USER"] or "root", passwd=settings["PASSWORD"] or "",
                               db=dbname or settings["NAME"], autocommit=True)
        return contextlib.closing(conn)
    return psycopg.connect(host=settings["HOST"] or "127.0.0.1", port=settings["PORT"] or 5432,
                           user=settings["USER"] or None, dbname=dbname or settings["NAME"], autocommit=True)


def lock_checkpoint_row(other):
    """Hold the checkpoint row's lock in ``other``'s transaction, as a delivery in progress does."""
    cursor = other.cursor()
    if connection.vendor == "mysql":
        cursor.execute("START TRANSACTION")
        cursor.execute("SELECT 1 FROM django_fluvius_checkpoint WHERE name = %s FOR UPDATE", [NAME])
    else:
        cursor.execute("BEGIN")
        cursor.execute("SELECT 1 FROM django_fluvius_checkpoint WHERE name = %s FOR UPDATE", [NAME])
    return cursor


def fail_fast_on_locks():
    """A lock wait becomes an error within seconds (a regression fails instead of hanging)."""
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute("SET SESSION innodb_lock_wait_timeout = 5")
        else:
            cursor.execute("SET statement_timeout = 5000")


def test_one_new_event_costs_a_round_trip_or_two_and_the_effect_in_one_durable_transaction(handler):
    """PostgreSQL: one statement (lock, read, receipt, checkpoint). MariaDB: two round trips of a
    few statements each (begin, lock, read; then receipt and checkpoint)."""
    create_notes(1, "start")
    for _attempt in range(10):
        (note,) = pending()
        with CaptureQueriesContext(connection) as captured:
            assert dispatch.deliver_committed("default", [NAME]).handed_over == 1
        queries = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT")]
        if "lease_owner" not in queries[0] or "SKIP LOCKED" in queries[0]:
            break
        # PostgreSQL: another database's transaction held the xmin back (a shared server),
        # and the leased way delivered (tested below). Count the next one.
    ours, effect = queries[:-1], queries[-1]
    assert "testapp_effect" in effect, "the handler's own insert comes last"
    assert "FOR UPDATE SKIP LOCKED" in ours[0], "lock and read first"
    if connection.vendor == "mysql":
        assert len(ours) == 2, "\n".join(q[:80] for q in queries)
        assert ours[0].startswith("START TRANSACTION"), "the transaction begins with the first round trip"
        assert "INSERT INTO" in ours[1] and "UPDATE" in ours[1], "receipt and checkpoint: one round trip"
    else:
        assert len(ours) == 1, "\n".join(q[:80] for q in queries)
        assert "INSERT INTO" in ours[0] and "UPDATE" in ours[0], "read, receipt and checkpoint: one statement"
        assert [q["sql"] for q in captured.captured_queries].count("COMMIT") == 1, "one transaction"
    assert not any("set_config" in q for q in queries), "nothing relaxed: the effect commits durably"
    assert effects()[-1] == note
    assert HandlerReceipt.objects.get(handler=NAME, position=note).status == "done"
    cp = checkpoint()
    assert cp.key >= feed_key(note) and cp.lease_owner == "" and cp.lease_until is None, "no lease taken"


def test_a_failed_statement_rolls_everything_back_and_the_next_delivery_does_it(handler, monkeypatch):
    create_notes(1, "start")
    before = checkpoint().key
    (note,) = pending()
    real, calls = locked.lock_and_take, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(locked, "lock_and_take", failing)
    result = dispatch.deliver_committed("default", [NAME])
    assert result.failed == 1 and "the database went away" in result.errors[0]
    assert note not in effects() and checkpoint().key == before
    assert not HandlerReceipt.objects.filter(handler=NAME, position=note).exists()
    assert not DeadLetter.objects.filter(handler=NAME).exists(), "not the handler's fault"
    assert dispatch.deliver_committed("default", [NAME]).handed_over == 1
    assert effects()[-1:] == [note]


def test_a_failing_handler_is_tried_once_dead_lettered_and_passed(handler):
    create_notes(1, "start")
    (bad,) = pending(1, "bad")
    handler.fail_on.add(bad)
    dispatch.deliver_committed("default", [NAME])
    assert handler.seen.count(bad) == 1, "one try, as inline mode promises"
    assert bad not in effects(), "its effect rolled back"
    letter = DeadLetter.objects.get(handler=NAME, position=bad)
    assert "no luck" in letter.error_message and letter.attempts == 1
    assert HandlerReceipt.objects.get(handler=NAME, position=bad).status == "failed"
    assert checkpoint().key >= feed_key(bad) and checkpoint().lease_owner == "", "passed, the lease given back"
    (good,) = positions(create_notes(1, "good"))
    assert effects()[-1] == good and handler.seen.count(bad) == 1


def test_a_row_locked_by_another_delivery_is_skipped_without_waiting(handler):
    create_notes(1, "start")
    (note,) = pending()
    fail_fast_on_locks()
    with other_connection() as other:
        cursor = lock_checkpoint_row(other)
        started = time.monotonic()
        result = dispatch.deliver_committed("default", [NAME])
        assert time.monotonic() - started < 2, "skipped, not waited for"
        assert result.busy == 1 and result.handed_over == 0 and note not in effects()
        cursor.execute("ROLLBACK")
    # The busy_retry thread, woken by the busy delivery, delivers it once the row is free.
    assert dispatch.busy_retry.flush(10)
    assert effects()[-1] == note


def test_a_row_leased_by_another_relay_is_left_to_it(handler):
    create_notes(1, "start")
    (note,) = pending()
    assert dispatch.subscriptions.take_lease(NAME, "another relay", "default")
    result = dispatch.deliver_committed("default", [NAME])
    assert result.busy == 1 and note not in effects()
    assert dispatch.busy_retry.flush(10)  # its retry finds the lease taken too: nothing
    assert note not in effects()
    dispatch.subscriptions.release_lease(NAME, "another relay", "default")
    assert dispatch.deliver_committed("default", [NAME]).handed_over == 1


@pytest.mark.postgres
def test_a_transaction_in_another_database_holds_the_xmin_back_and_the_leased_way_delivers(handler):
    """The snapshot's xmin is server-wide; the leased way's horizon looks at this database only."""
    create_notes(1, "start")
    with other_connection("postgres") as other:
        with other.transaction():
            other.execute("SELECT pg_current_xact_id()")  # an open writing transaction, elsewhere
            (note,) = pending()
            with transaction.atomic():  # what the locked way alone sees (then rolled back)
                taken = locked.lock_and_take(NAME, "probe", "default", evt_keys=["note-created"],
                                             namespace="test-notes")
                transaction.set_rollback(True)
            assert taken.bound < feed_key(note) and not taken.events and taken.held, "held back below it"
            result = dispatch.deliver_committed("default", [NAME])
            assert result.handed_over == 1 and effects()[-1] == note, "delivered the leased way"
    assert checkpoint().key >= feed_key(note)


def test_a_backlog_is_delivered_in_order_one_transaction_per_event_without_a_lease(handler):
    create_notes(1, "start")
    backlog = pending(3, "backlog")
    with CaptureQueriesContext(connection) as captured:
        result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 3 and not result.failed
    assert effects()[-3:] == backlog and handler.seen[-3:] == backlog
    ours = [q["sql"] for q in captured.captured_queries if "SKIP LOCKED" in q["sql"]]
    assert len(ours) == 3, "one locked take per event (the last one reads no other after it)"
    assert not any(q["sql"].startswith("UPDATE") and "lease_owner" in q["sql"].split("WHERE")[0]
                   for q in captured.captured_queries), "no lease taken"
    assert checkpoint().key >= feed_key(backlog[-1]) and checkpoint().lease_owner == ""
    assert {r.status for r in HandlerReceipt.objects.filter(handler=NAME, position__in=backlog)} == {"done"}


def test_a_failure_inside_a_backlog_is_dead_lettered_and_the_rest_delivered(handler):
    create_notes(1, "start")
    first, bad, last = pending(3, "backlog")
    handler.fail_on.add(bad)
    result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 3
    assert effects()[-2:] == [first, last] and handler.seen.count(bad) == 1
    assert DeadLetter.objects.filter(handler=NAME, position=bad).count() == 1
    assert checkpoint().key >= feed_key(last) and checkpoint().lease_owner == ""


def test_an_event_skipped_while_another_delivery_runs_is_delivered_without_another_commit(handler):
    """The skipping process's busy_retry thread waits for the row, then delivers it."""
    create_notes(1, "start")
    (slow,) = pending(1, "slow")
    thread, errors = slow_delivery(handler, slow)
    (fast,) = positions(create_notes(1, "fast"))  # its delivery finds the row locked: busy
    assert fast not in effects()
    handler.release.set()
    thread.join(20)
    assert not errors
    assert dispatch.busy_retry.flush(10), "the retry ended"
    assert effects()[-2:] == [slow, fast], "delivered, with no other commit of its keys"


def test_a_running_delivery_does_not_hold_up_other_commands(handler):
    """MariaDB: reading the feed clock in a SET statement locked it until the handler's commit."""
    create_notes(1, "start")
    (slow,) = pending(1, "slow")
    fail_fast_on_locks()
    thread, errors = slow_delivery(handler, slow)
    try:
        started = time.monotonic()
        pending(1, "meanwhile")  # writes an event (on MariaDB: ticks the feed clock)
        assert time.monotonic() - started < 2, "did not wait for the slow handler"
    finally:
        handler.release.set()
        thread.join(20)
    assert not errors


def test_a_checkpoint_gone_with_a_rolled_back_transaction_is_made_again_the_leased_way(handler):
    """The same statement tells a missing row from a busy one: no statement more when busy."""
    create_notes(1, "start")
    (note,) = pending()
    Checkpoint.objects.filter(name=NAME).delete()  # as a rolled-back first transaction leaves it
    result = dispatch.deliver_committed("default", [NAME], hint=note - 1)
    assert result.handed_over == 1 and not result.busy
    assert effects()[-1] == note and Checkpoint.objects.filter(name=NAME).exists()


def test_a_delivery_finding_nothing_new_commits_and_keeps_the_prepared_statements(handler):
    """PostgreSQL: a rollback on psycopg 3 deallocates every prepared statement of the connection
    (the bus's write statement too, planned again after it); a delivery that finds its event
    delivered already ends with COMMIT, and what it prepared stays."""
    if connection.vendor != "postgresql":
        pytest.skip("psycopg 3's prepared statements")
    from tests.pg_trace import protocol_trace, simple_queries

    create_notes(1, "start")
    (note,) = pending()
    assert dispatch.deliver_committed("default", [NAME]).handed_over == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        prepared = cursor.fetchone()[0]
    with protocol_trace() as sent:
        result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 0 and result.busy == 0
    assert simple_queries(sent) == ["BEGIN", "COMMIT"], sent
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        assert cursor.fetchone()[0] == prepared > 0
    assert effects()[-1] == note
    assert handler.seen.count(note) == 1
