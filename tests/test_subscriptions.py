"""Subscriptions (issue 14): handlers and async projections keep a checkpoint on the feed.

In-process, on SQLite and PostgreSQL: where a subscription starts, the relay's
leadership, operations (``fluvius_subscriptions``, ``fluvius_relay``), the checks,
a retry while the broker is down, and the outbox migration. Real Celery workers:
test_subscriptions_celery.py.
"""

from __future__ import annotations

import threading

import pytest
from django.core import checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from django_fluvius.delivery import dispatch
from django_fluvius.delivery.checks import check_starts, check_undeclared_subscriptions
from django_fluvius.delivery.dispatch import Attempt, CeleryDispatcher, deliver_pending, run_attempt
from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
from django_fluvius.delivery.projections import AsyncProjection, async_projections, on
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect

from .dispatch_support import fluvius

pytestmark = pytest.mark.django_db(transaction=True)


def create_notes(n, title="n"):
    domain = NoteDomain()
    return [domain.process_command(domain.create_command("create-note", {"title": f"{title} {i}"}))
            for i in range(n)]


@pytest.fixture
def declare():
    """Declare handlers for one test (and forget them after)."""
    names: list[str] = []

    def add(name, start="now", keys=("note-created",), **options):
        seen: list[int] = []

        @event_handler(list(keys), namespace="test-notes", name=name, start=start, registry=HandlerRegistry(),
                       **options)
        def handler(event):
            seen.append(event.position)
            Effect.objects.create(handler=name, position=event.position, aggregate_id=event.aggregate_id,
                                  version=event.version)

        handlers.register(handler.handler_spec)
        names.append(name)
        return seen

    yield add
    for name in names:
        handlers.unregister(name)


def positions(events):
    return [r.events[0].position for r in events]


# -- where a subscription starts ---------------------------------------------------------------


def test_a_handler_declared_with_start_beginning_after_1000_events_gets_all_1000(declare):
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        before = create_notes(1000)
    seen = declare("tests.sub.history", start="beginning")
    result = deliver_pending()
    assert sorted(seen) == positions(before)
    assert result.handed_over >= 1000
    assert Effect.objects.filter(handler="tests.sub.history").count() == 1000
    assert deliver_pending().handed_over == 0, "caught up: nothing twice"


def test_start_now_skips_the_past_and_a_position_starts_after_it(declare):
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        old = create_notes(5)
    now = declare("tests.sub.now")  # start="now": the default for handlers
    after = declare("tests.sub.after", start=positions(old)[2])
    new = create_notes(2, "new")  # inline: the commit creates and runs the subscriptions
    assert now == positions(new), "start=now: only what commits once it is deployed"
    assert sorted(after) == positions(old)[3:] + positions(new)


def test_a_subscription_known_only_to_another_process_still_gets_events_this_one_writes(declare):
    (first,) = create_notes(1)
    event = Event.objects.get(position=first.events[0].position)
    key = {"txid": event.txid or 0, "position": event.position}
    # "Another process" declared tests.sub.elsewhere: it exists in the database, led by nobody here.
    Checkpoint.objects.create(name="tests.sub.elsewhere", kind="handler", **key,
                              sent_txid=key["txid"], sent_position=key["position"])
    written = create_notes(3, "by old code")  # this process does not know the handler
    seen = declare("tests.sub.elsewhere")  # ... the new code's relay does
    call_command("fluvius_relay", verbosity=0)
    assert seen == positions(written)


# -- one leader per subscription -----------------------------------------------------------------


class Recording(CeleryDispatcher):
    """A Celery dispatcher whose broker is a list (what was handed over, by whom)."""

    sent: list[tuple[str, int]] = []
    lock = threading.Lock()

    def publish(self, spec, attempts, using):
        with self.lock:
            self.sent.extend((a.handler, a.position) for a in attempts)


def test_two_relays_at_once_hand_each_event_over_once_per_subscription(declare):
    declare("tests.sub.a")
    declare("tests.sub.b")
    create_notes(1)  # the subscriptions start
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY_BATCH_SIZE=7)):
        with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
            events = positions(create_notes(120))
        Recording.sent = []
        errors: list[BaseException] = []
        start = threading.Barrier(2)

        def relay():
            try:
                start.wait()
                for _ in range(5):
                    deliver_pending(dispatcher=Recording())
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=relay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors
    for name in ("tests.sub.a", "tests.sub.b"):
        handed = [p for n, p in Recording.sent if n == name]
        assert sorted(handed) == events, f"{name}: each event handed over exactly once"
    pending = HandlerReceipt.objects.filter(status="pending")
    assert pending.count() == 240, "pending until a worker settles them"
    cp = Checkpoint.objects.get(name="tests.sub.a")
    assert cp.sent_position == events[-1] and cp.position < events[0], "the checkpoint waits for settlement"


def test_the_checkpoint_moves_only_past_settled_deliveries_and_lost_ones_are_handed_over_again(declare):
    declare("tests.sub.lossy")
    create_notes(1)
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        events = positions(create_notes(4))
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", REDELIVER_AFTER=0.0)):
        Recording.sent = []
        deliver_pending(dispatcher=Recording())
        assert [p for _, p in Recording.sent] == events
        # A worker settles the first two; the broker loses the other two.
        for position in events[:2]:
            assert run_attempt(Attempt("tests.sub.lossy", position), schedule=lambda *a: None) == "done"
        Recording.sent = []
        deliver_pending(dispatcher=Recording())
        assert Checkpoint.objects.get(name="tests.sub.lossy").position == events[2] - 1
        assert sorted(p for _, p in Recording.sent) == events[2:], "not settled by their due time: again"
        for position in events[2:]:
            run_attempt(Attempt("tests.sub.lossy", position), schedule=lambda *a: None)
        deliver_pending(dispatcher=Recording())
    assert Checkpoint.objects.get(name="tests.sub.lossy").position >= events[-1]
    assert Effect.objects.filter(handler="tests.sub.lossy").count() == 5


def test_a_retry_while_the_broker_is_down_waits_with_the_handlers_error(declare, tmp_path):
    calls = []

    @event_handler("note-created", namespace="test-notes", name="tests.sub.flaky", max_retries=3,
                   registry=HandlerRegistry())
    def flaky(event):
        calls.append(event.position)
        if len(calls) == 1:
            raise ValueError("the handler's own error")
        Effect.objects.create(handler="flaky", position=event.position, aggregate_id=event.aggregate_id,
                              version=event.version)

    handlers.register(flaky.handler_spec)
    try:
        with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
            (note,) = create_notes(1)
        position = note.events[0].position
        dispatch.mark_pending([(flaky.handler_spec, position)])

        def broker_down(attempt, countdown):
            raise ConnectionError("Error 111 connecting to the broker")

        with override_settings(FLUVIUS=fluvius(RETRY_BACKOFF=0.0, RETRY_JITTER=False)):
            assert run_attempt(Attempt("tests.sub.flaky", position), schedule=broker_down) == "failed"
        assert not DeadLetter.objects.exists(), "not dead-lettered at try 1 of 4"
        receipt = HandlerReceipt.objects.get(handler="tests.sub.flaky", position=position)
        assert receipt.status == "pending" and receipt.attempts == 2
        assert "ValueError: the handler's own error" in receipt.last_error
        assert "broker" not in receipt.last_error
        # The broker is back: the relay hands the delivery over again, at try 2.
        with override_settings(FLUVIUS=fluvius(DISPATCH="celery")):
            Recording.sent = []
            txid = Event.objects.get(position=position).txid or 0  # handed over up to this event
            Checkpoint.objects.create(name="tests.sub.flaky", kind="handler", txid=txid, position=position - 1,
                                      sent_txid=txid, sent_position=position)
            deliver_pending(names=["tests.sub.flaky"], dispatcher=Recording())
        assert Recording.sent == [("tests.sub.flaky", position)]
        assert run_attempt(Attempt("tests.sub.flaky", position, 2), schedule=broker_down) == "done"
        assert HandlerReceipt.objects.get(handler="tests.sub.flaky", position=position).status == "done"
        assert Effect.objects.filter(handler="flaky").count() == 1
    finally:
        handlers.unregister("tests.sub.flaky")


# -- operations -------------------------------------------------------------------------------------


def test_fluvius_subscriptions_lists_and_resets(declare, capsys):
    seen = declare("tests.sub.ops")
    first = create_notes(3)
    Checkpoint.objects.create(name="tests.sub.removed", kind="handler")
    call_command("fluvius_subscriptions", "list")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("tests.sub.ops"))
    assert "handler" in line and line.split()[2] == str(positions(first)[-1]) and line.split()[4] == "0"
    removed = next(x for x in out.splitlines() if x.startswith("tests.sub.removed"))
    assert "UNDECLARED" in removed and removed.split()[4] == str(Event.objects.count())

    Effect.objects.all().delete()
    HandlerReceipt.objects.all().delete()
    call_command("fluvius_subscriptions", "reset", "tests.sub.ops", "--to", str(positions(first)[0]), verbosity=0)
    call_command("fluvius_relay", verbosity=0)
    assert seen[-2:] == positions(first)[1:]
    call_command("fluvius_subscriptions", "reset", "tests.sub.ops", "--to", "now", verbosity=0)
    assert Checkpoint.objects.get(name="tests.sub.ops").position == positions(first)[-1]


def test_resetting_an_unknown_subscription_or_to_nowhere_is_a_command_error(declare):
    with pytest.raises(CommandError, match="No subscription is named 'tests.nope'"):
        call_command("fluvius_subscriptions", "reset", "tests.nope", "--to", "beginning")
    declare("tests.sub.known")
    with pytest.raises(CommandError, match="not 'yesterday'"):
        call_command("fluvius_subscriptions", "reset", "tests.sub.known", "--to", "yesterday")
    with pytest.raises(CommandError, match="subscription name and --to"):
        call_command("fluvius_subscriptions", "reset", "tests.sub.known")
    head = create_notes(1)[0].events[0].position
    with pytest.raises(CommandError, match=f"No event has position {head + 100} yet"):
        call_command("fluvius_subscriptions", "reset", "tests.sub.known", "--to", str(head + 100))


def test_the_list_marks_what_is_not_delivered(declare, capsys):
    """The list says why a subscription shows no lag: a bad start (fluvius.E055), or no
    checkpoint yet. (The command runs no system checks: it must answer while one fails.)"""
    from django_fluvius.management.commands.fluvius_subscriptions import Command

    assert Command.requires_system_checks == []
    declare("tests.sub.bad", start="yesterday")
    declare("tests.sub.fresh")
    call_command("fluvius_subscriptions", "list")
    out = capsys.readouterr().out.splitlines()
    bad = next(x for x in out if x.startswith("tests.sub.bad"))
    assert "NOT DELIVERED" in bad and "yesterday" in bad and "fluvius.E055" in bad
    fresh = next(x for x in out if x.startswith("tests.sub.fresh"))
    assert "NOT STARTED" in fresh


def test_an_async_projection_is_a_subscription_that_starts_at_the_beginning(capsys):
    class Count(AsyncProjection, register=False):
        name = "tests.sub.count"
        namespace = "test-notes"
        applied: list[int] = []

        @on("note-created")
        def created(self, event):
            Count.applied.append(event.position)

    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        old = create_notes(3)
    async_projections.register(Count)
    try:
        create_notes(1)  # inline: catches the projection up from the beginning
        assert Count.applied[:3] == positions(old) and len(Count.applied) == 4
        call_command("fluvius_subscriptions", "list")
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("tests.sub.count"))
        assert "projection" in line and line.split()[4] == "0"
    finally:
        async_projections.unregister(Count.name)


# -- checks -----------------------------------------------------------------------------------------


def test_a_bad_start_is_a_check_error_and_is_never_delivered(declare, caplog):
    @event_handler("note-created", namespace="test-notes", name="tests.sub.bad", start="yesterday",
                   registry=HandlerRegistry())
    def bad(event):
        raise AssertionError("never runs")

    handlers.register(bad.handler_spec)
    try:
        errors = [m for m in check_starts() if m.id == "fluvius.E055"]
        assert len(errors) == 1 and "tests.sub.bad" in errors[0].msg and "'yesterday'" in errors[0].msg
        assert errors[0].level == checks.ERROR
        create_notes(1)
        assert not Checkpoint.objects.filter(name="tests.sub.bad").exists()
        assert "tests.sub.bad is not delivered" in caplog.text
    finally:
        handlers.unregister("tests.sub.bad")
    assert [m for m in check_starts() if m.id == "fluvius.E055"] == []


def test_a_subscription_no_code_declares_is_a_warning_naming_it(declare):
    declare("tests.sub.present")
    create_notes(1)
    Checkpoint.objects.create(name="tests.sub.gone", kind="handler")
    assert check_undeclared_subscriptions() == [], "a database check: only with databases"
    warnings = check_undeclared_subscriptions(databases=["default"])
    assert [w.id for w in warnings] == ["fluvius.W056"]
    assert "'tests.sub.gone'" in warnings[0].msg and "events wait" in warnings[0].msg
    assert "nothing is delivered" in warnings[0].msg
    deliver_pending()
    assert Checkpoint.objects.get(name="tests.sub.gone").position == 0, "nothing delivered to nobody"


# -- the outbox migration -----------------------------------------------------------------------------


def test_the_migration_turns_outbox_rows_into_checkpoints_before_the_outbox(declare):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    declare("tests.sub.migrated")
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        done, left = create_notes(2)
    executor = MigrationExecutor(connection)
    executor.migrate([("django_fluvius", "0003_idempotency_tenant")])
    try:
        old_apps = executor.loader.project_state([("django_fluvius", "0003_idempotency_tenant")]).apps
        outbox = old_apps.get_model("django_fluvius", "Outbox")
        outbox.objects.create(aggregate_id=left.aggregate_id, version=1, namespace="test-notes",
                              evt_key="note-created")
        Checkpoint_ = old_apps.get_model("django_fluvius", "Checkpoint")
        assert not Checkpoint_.objects.exists()
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())
    cp = Checkpoint.objects.get(name="tests.sub.migrated")
    assert cp.kind == "handler" and cp.position == left.events[0].position - 1
    call_command("fluvius_relay", verbosity=0)
    assert list(Effect.objects.filter(handler="tests.sub.migrated").values_list("position", flat=True)) == [
        left.events[0].position]
    assert "django_fluvius_outbox" not in connection.introspection.table_names()


# -- long-running relays: LISTEN/NOTIFY and the poll ----------------------------------------------


def test_a_long_running_relay_wakes_on_notify_or_polls(declare):
    """fluvius_relay --loop's loop: on PostgreSQL a NOTIFY wakes it long before its poll."""
    import time as clock

    seen = declare("tests.sub.served")
    create_notes(1)  # the subscription starts
    listening = connections["default"].vendor == "postgresql"
    stop = threading.Event()
    rounds = []
    thread = threading.Thread(target=dispatch.serve, kwargs={
        "listen": listening, "poll": 30.0 if listening else 0.2, "stop": stop,
        "on_round": rounds.append})
    thread.start()
    try:
        deadline = clock.monotonic() + 10
        while not rounds and clock.monotonic() < deadline:
            clock.sleep(0.05)
        clock.sleep(0.3)  # listening now
        with override_settings(FLUVIUS=fluvius(DISPATCH=None)):  # a writer that delivers nothing itself
            (note,) = create_notes(1, "served")
        started = clock.monotonic()
        if listening:
            dispatch.notify("default")  # what a writer's relay thread sends after its commit
        while note.events[0].position not in seen and clock.monotonic() < started + 10:
            clock.sleep(0.01)
        assert note.events[0].position in seen
        if listening:
            assert clock.monotonic() - started < 5, "woken by NOTIFY, not by the 30 s poll"
    finally:
        stop.set()
        if listening:
            dispatch.notify("default")
        thread.join(35)
    assert not thread.is_alive()


def test_a_relay_round_costs_a_few_statements_whatever_the_number_of_subscriptions(declare):
    """The round's questions are asked once for all subscriptions; only one with new events
    of its keys is led, read, handed over and settled (the mark with the checkpoint)."""
    from django.test.utils import CaptureQueriesContext

    for i in range(8):
        declare(f"tests.sub.quiet{i}", keys=("note-archived",))  # never written here
    declare("tests.sub.busy")
    create_notes(1)  # the subscriptions start
    connection = connections["default"]
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery")):
        Recording.sent = []
        deliver_pending(dispatcher=Recording())
        with CaptureQueriesContext(connection) as idle:
            deliver_pending(dispatcher=Recording())
        with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
            (note,) = create_notes(1, "counted")
        with CaptureQueriesContext(connection) as busy:
            deliver_pending(dispatcher=Recording())
    assert Recording.sent == [("tests.sub.busy", note.events[0].position)]
    # bound, checkpoints (+ overdue), which subscriptions have work: nothing else.
    assert len(idle.captured_queries) == 3, [q["sql"] for q in idle.captured_queries]
    # + lease and checkpoint read, keys, pending receipts, checkpoint and mark (and the lease given up);
    # MariaDB has no UPDATE ... RETURNING: the lease and the checkpoint read are two statements there,
    # and its receipts' insert finds the pending ones with a second one.
    expected = 9 if connection.vendor == "mysql" else 7
    assert len(busy.captured_queries) == expected, [q["sql"] for q in busy.captured_queries]
    cp = Checkpoint.objects.get(name="tests.sub.busy")
    assert cp.sent_position == note.events[0].position and cp.position < note.events[0].position
    assert cp.lease_owner == "", "the settling write gave the lease up"


@pytest.mark.postgres
def test_the_relay_thread_announces_each_lone_commit_at_once_not_after_its_linger(declare):
    """A NOTIFY waits neither for RELAY_LINGER nor for a previous round: only for the
    short RELAY_NOTIFY_INTERVAL, and commits closer together share one."""
    import time as clock

    wrapper = connections["default"]
    listener = wrapper.get_new_connection(wrapper.get_connection_params())
    listener.autocommit = True
    listener.execute(f"LISTEN {dispatch.CHANNEL}")
    heard = []
    try:
        with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="notify", RELAY_LINGER=30.0,
                                               RELAY_NOTIFY_INTERVAL=0.05)):
            for i in range(3):
                create_notes(1, f"lone {i}")
                sent = clock.monotonic()
                for _ in listener.notifies(timeout=5, stop_after=1):
                    heard.append(clock.monotonic() - sent)
                clock.sleep(0.2)
            burst = len(heard)
            create_notes(20, "burst")
            assert dispatch.relay.flush(10)
            clock.sleep(0.2)
            later = sum(1 for _ in listener.notifies(timeout=0.5))
    finally:
        listener.close()
    assert burst == 3 and max(heard) < 2.0, f"each lone commit announced at once: {heard}"
    assert 1 <= later < 20, f"a burst of 20 commits shares NOTIFYs ({later})"
