"""The inline delivery after a command's commit (issue 15): ``dispatch.deliver_committed``.

Two ways, each keeping every guarantee of the general relay round — each event once, in
feed order, a concurrent writer's late commit never skipped, a crash or a lost checkpoint
move costing a redelivery that the receipt turns into nothing:

- **locked** (PostgreSQL and MariaDB, one new event): one transaction — the checkpoint
  row locked, the event read, its receipt claimed and the checkpoint moved (one
  statement on PostgreSQL, two round trips on MariaDB), the handler, one durable commit
  (``delivery/locked.py``);
- **leased** (every database; PostgreSQL's backlogs): the lease and the feed's bound in
  one statement, the checkpoint moved in the last delivery's transaction, bookkeeping
  commits not waiting for the WAL flush on PostgreSQL.

The generic tests run both ways (``way``); the leased way is forced by emptying
``locked.VENDORS`` (SQLite takes it always).
"""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_fluvius.delivery import dispatch, locked, subscriptions
from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect

from .dispatch_support import fluvius

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "tests.inline.fast"


def create_notes(n, title="n"):
    domain = NoteDomain()
    return [domain.process_command(domain.create_command("create-note", {"title": f"{title} {i}"}))
            for i in range(n)]


def positions(results):
    return [r.events[0].position for r in results]


@pytest.fixture(params=["locked", "leased"])
def way(request, monkeypatch):
    """Which way ``deliver_committed`` takes: SQLite has no locked one."""
    if request.param == "locked" and connection.vendor not in locked.VENDORS:
        pytest.skip("SQLite takes the leased way")
    if request.param == "leased":
        monkeypatch.setattr(locked, "VENDORS", frozenset())
    return request.param


@pytest.fixture
def handler(way):
    """A handler on note-created recording what it saw (and an Effect row per delivery, in its transaction).

    ``handler.crash_on``: positions on which it raises a BaseException, as a process dying would.
    """
    seen: list[int] = []
    crash_on: set[int] = set()

    @event_handler(["note-created"], namespace="test-notes", name=NAME, registry=HandlerRegistry())
    def record(event):
        Effect.objects.create(handler=NAME, position=event.position, aggregate_id=event.aggregate_id,
                              version=event.version)
        seen.append(event.position)
        if event.position in crash_on:
            raise KeyboardInterrupt("the process dies here")

    handlers.register(record.handler_spec)
    record.seen, record.crash_on, record.way = seen, crash_on, way
    yield record
    handlers.unregister(NAME)


def effects():
    return list(Effect.objects.filter(handler=NAME).order_by("position").values_list("position", flat=True))


def checkpoint():
    return Checkpoint.objects.get(name=NAME)


def feed_key(position):
    event = Event.objects.get(position=position)
    return (event.txid or 0, event.position)


def test_each_event_is_delivered_once_in_feed_order_and_the_checkpoint_passes_it(handler):
    written = positions(create_notes(4))
    assert handler.seen == written
    assert effects() == written
    cp = checkpoint()
    assert cp.key >= feed_key(written[-1]) and cp.lease_owner == "", "moved past, the lease given up"
    assert set(HandlerReceipt.objects.filter(handler=NAME).values_list("status", flat=True)) == {"done"}
    assert dispatch.deliver_committed("default", [NAME]).handed_over == 0, "nothing twice"
    assert effects() == written


def test_a_backlog_longer_than_a_batch_is_delivered_in_order_across_batches(handler):
    create_notes(1, "first")  # the subscription starts
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        backlog = positions(create_notes(5, "backlog"))
    with override_settings(FLUVIUS=fluvius(RELAY_BATCH_SIZE=2)):
        result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 5 and not result.failed
    assert handler.seen[1:] == backlog
    assert checkpoint().key >= feed_key(backlog[-1]) and checkpoint().lease_owner == ""


def test_a_lost_checkpoint_move_redelivers_without_a_second_effect(handler):
    """What a server crash that lost the checkpoint's non-durable commit leaves behind."""
    (first,) = positions(create_notes(1, "first"))
    (second,) = positions(create_notes(1, "second"))
    Checkpoint.objects.filter(name=NAME).update(txid=feed_key(first)[0], position=first)  # the move lost
    result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 1, "offered again"
    assert handler.seen == [first, second] and effects() == [first, second], "its receipt made it a no-op"
    assert checkpoint().key >= feed_key(second)


def test_a_crash_between_a_handler_commit_and_the_checkpoint_move_costs_no_second_effect(handler):
    create_notes(1, "start")
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        a, b = positions(create_notes(2, "pair"))
    handler.crash_on.add(b)  # a's transaction commits; b's dies
    with pytest.raises(KeyboardInterrupt):
        dispatch.deliver_committed("default", [NAME])
    # Leased: the checkpoint rides with the batch's last delivery (b's), so it stays before a.
    # Locked: each event's transaction moves it past that event only, so it passed a.
    assert checkpoint().key < feed_key(b), "the checkpoint never passed b"
    assert checkpoint().lease_owner == "", "no lease left behind"
    assert effects()[-1:] == [a]
    handler.crash_on.clear()
    result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == (2 if handler.way == "leased" else 1) and not result.failed
    assert effects()[-2:] == [a, b], "a done once (offered again, its receipt found, when leased); b done"
    assert checkpoint().key >= feed_key(b)


def test_a_failed_checkpoint_move_rolls_the_delivery_back_and_dead_letters_nothing(handler, monkeypatch):
    if handler.way == "locked":
        pytest.skip("the leased way's checkpoint move (the locked way's: test_delivery_locked.py)")
    create_notes(1, "start")
    real = subscriptions.save_checkpoint
    calls = []

    def failing(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise OperationalError("the database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(subscriptions, "save_checkpoint", failing)
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        (note,) = positions(create_notes(1, "unlucky"))
    result = dispatch.deliver_committed("default", [NAME])
    assert result.failed == 1 and "BookkeepingFailed" in result.errors[0]
    assert note not in effects(), "the effect rolled back with the checkpoint move"
    assert not HandlerReceipt.objects.filter(handler=NAME, position=note).exists()
    assert not DeadLetter.objects.filter(handler=NAME).exists(), "not the handler's fault"
    assert checkpoint().lease_owner == ""
    result = dispatch.deliver_committed("default", [NAME])
    assert result.handed_over == 1 and not result.failed
    assert effects()[-1:] == [note]


def test_the_leased_way_costs_a_few_statements(handler):
    """Lease + bound, read, receipt, the handler's own insert, checkpoint (+ the lease given up).

    MariaDB has no UPDATE ... RETURNING (the lease, then the checkpoint with the bound)
    and claims a receipt in two statements.
    """
    if handler.way == "locked":
        pytest.skip("the locked way's count: test_delivery_locked.py")
    create_notes(1, "start")
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        create_notes(1, "counted")
    with CaptureQueriesContext(connection) as captured:
        assert dispatch.deliver_committed("default", [NAME]).handed_over == 1
    # Transaction control (SQLite's BEGIN IMMEDIATE, COMMIT) is not a statement of ours.
    statements = [q["sql"] for q in captured.captured_queries
                  if q["sql"].split()[0] not in ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE")]
    assert len(statements) == (7 if connection.vendor == "mysql" else 5), "\n".join(s[:70] for s in statements)
    if connection.vendor == "postgresql":
        assert "set_config('synchronous_commit', 'off', true)" in statements[0], "the lease's commit is relaxed"
        assert "set_config" not in statements[-1], "the checkpoint commits with the effect, durably"


def test_inside_a_transaction_bookkeeping_is_as_durable_as_it(handler):
    create_notes(1, "start")
    with transaction.atomic():
        assert dispatch.sql.relax_commit_sql(connection) == ""
        assert subscriptions.save_checkpoint(NAME, "nobody", "default") is False, "not the leader: no move"
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                assert cursor.fetchone()[0] == "on"


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
def test_a_concurrent_writers_late_commit_is_not_skipped_by_the_fast_path(handler):
    create_notes(1, "start")
    inserted, release = threading.Event(), threading.Event()
    late = []

    def writer():
        with transaction.atomic():  # takes a lower position and transaction id, then stays open
            late.append(create_notes(1, "late")[0].events[0].position)
            inserted.set()
            assert release.wait(20)
        # committed: its own inline delivery runs here, in this thread

    thread, errors = _in_thread(writer)
    assert inserted.wait(20)
    (early,) = positions(create_notes(1, "early"))  # committed first, its delivery runs now
    assert early > late[0]
    assert handler.seen[1:] == [], "early waits above the bound: the open transaction may commit below it"
    release.set()
    thread.join(20)
    assert not errors
    assert handler.seen[1:] == [late[0], early], "both, once each, in feed (commit) order"
    assert effects()[1:] == sorted([late[0], early])
    assert checkpoint().key >= max(feed_key(late[0]), feed_key(early))
