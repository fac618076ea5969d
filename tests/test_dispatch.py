"""Inline dispatch through subscriptions (issues 5 and 14), on SQLite and PostgreSQL.

Celery workers are tested in test_celery.py; here everything runs in-process.
"""

from __future__ import annotations

import uuid

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import override_settings

from django_fluvius import DomainError
from django_fluvius.delivery import dispatch as dispatch_module
from django_fluvius.delivery.dispatch import (
    DONE,
    DUPLICATE,
    FAILED,
    WAIT,
    Attempt,
    CeleryDispatcher,
    deliver,
    deliver_pending,
    get_dispatcher,
    load_event,
    mark_pending,
    retry_delay,
    run_attempt,
)
from django_fluvius.delivery.handlers import handlers
from django_fluvius.models import Checkpoint, CommandLog, DeadLetter, Event, HandlerReceipt
from example_project.orders.domain import OrderDomain
from example_project.orders.models import Order
from example_project.users.domain import UserDomain
from tests import dispatch_handlers
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect

from .dispatch_support import fluvius


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUVIUS_TEST_SCRATCH", str(tmp_path))
    return tmp_path


@pytest.fixture
def test_handlers(scratch):
    dispatch_handlers.install()
    yield dispatch_handlers
    dispatch_handlers.uninstall()


def create_note(title="a note", **payload):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("create-note", {"title": title, **payload}))


def edit_note(note_id, body):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("edit-note", {"body": body}, aggregate_id=note_id))


def effects(handler=None):
    qs = Effect.objects.all()
    if handler:
        qs = qs.filter(handler=handler)
    return list(qs.order_by("id").values_list("handler", "position"))


# -- the command path writes nothing for delivery -------------------------------------------


@pytest.mark.django_db
def test_the_command_transaction_writes_only_the_event_projection_and_log(test_handlers,
                                                                            django_capture_on_commit_callbacks):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    create_note("first")  # a process creates its subscriptions once, before its first events
    assert Checkpoint.objects.filter(name="tests.record", kind="handler").exists()
    with django_capture_on_commit_callbacks(execute=False) as callbacks, \
            CaptureQueriesContext(connection) as queries:
        create_note("kept")
    # (PostgreSQL writes the command in one WITH ... INSERT statement.)
    written = [q["sql"] for q in queries.captured_queries
               if any(word in q["sql"].upper() for word in ("INSERT ", "UPDATE ", "DELETE "))]
    tables = {"django_fluvius_event", "django_fluvius_commandlog", "testapp_note"}
    assert written and all(any(t in sql for t in tables) for sql in written), written
    assert not any("receipt" in sql or "checkpoint" in sql for sql in written)
    assert callbacks, "delivery waits for the commit"
    assert not Effect.objects.exists(), "nothing runs before the commit"


@pytest.mark.django_db
def test_a_rejected_command_delivers_nothing(test_handlers, django_capture_on_commit_callbacks):
    note = create_note("x")
    domain = NoteDomain()
    with django_capture_on_commit_callbacks(execute=True):
        domain.process_command(domain.create_command("archive", {}, aggregate_id=note.aggregate_id))
        with pytest.raises(DomainError):
            domain.process_command(domain.create_command("archive", {}, aggregate_id=note.aggregate_id))
    assert CommandLog.objects.filter(status=CommandLog.Status.REJECTED).count() == 1
    assert Event.objects.filter(evt_key="note-archived").count() == 1


@pytest.mark.django_db
@override_settings(FLUVIUS=fluvius(DISPATCH=None))
def test_dispatch_off_runs_nothing_and_moves_no_checkpoint(test_handlers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        create_note("quiet")
    assert not Effect.objects.exists()
    assert not Checkpoint.objects.exists()


@override_settings(FLUVIUS=fluvius(DISPATCH="carrier-pigeon"))
def test_an_unknown_dispatch_mode_is_refused():
    with pytest.raises(ValueError, match="carrier-pigeon"):
        get_dispatcher()


# -- inline dispatch -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_inline_runs_every_handler_once_after_commit(test_handlers):
    result = create_note("hello")
    position = result.events[0].position
    assert sorted(effects()) == [("ordered", position), ("other", position), ("record", position)]
    assert set(HandlerReceipt.objects.values_list("handler", "position", "status")) == {
        ("tests.record", position, "done"), ("tests.other", position, "done"),
        ("tests.ordered", position, "done")}
    cp = Checkpoint.objects.get(name="tests.record")
    assert cp.kind == "handler" and cp.position >= position, "the subscription settled the event"


@pytest.mark.django_db(transaction=True)
def test_inline_runs_async_handlers(test_handlers):
    note = create_note("to archive")
    domain = NoteDomain()
    result = domain.process_command(domain.create_command("archive", {}, aggregate_id=note.aggregate_id))
    assert effects("async") == [("async", result.events[0].position)]


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_of_the_same_event_has_no_effect(test_handlers):
    result = create_note("once")
    event = load_event(result.events[0].position)
    spec = handlers.get("tests.record")
    assert deliver(spec, event).outcome == DUPLICATE
    assert deliver(spec, event).outcome == DUPLICATE
    # The subscription offered the same event again (reset to the beginning) changes nothing.
    call_command("fluvius_subscriptions", "reset", "tests.record", "--to", "beginning", verbosity=0)
    assert deliver_pending(names=["tests.record"]).handed_over == 1
    assert effects("record") == [("record", event.position)]


@pytest.mark.django_db(transaction=True)
def test_a_failing_handler_rolls_back_its_receipt_with_its_effect(test_handlers):
    result = create_note("poison")
    position = result.events[0].position
    # The receipt rolled back with the effect; what is left says the delivery was dead-lettered.
    assert HandlerReceipt.objects.get(handler="tests.record", position=position).status == "failed"
    assert not Effect.objects.filter(handler="record").exists()


@pytest.mark.django_db(transaction=True)
def test_a_poison_event_is_dead_lettered_and_everything_else_goes_on(test_handlers, caplog):
    poison = create_note("poison")
    after = create_note("fine")
    position = poison.events[0].position
    letter = DeadLetter.objects.get()
    assert (letter.kind, letter.handler, letter.position, letter.evt_key) == (
        "handler", "tests.record", position, "note-created")
    assert letter.aggregate_id == poison.aggregate_id and letter.version == 1
    assert letter.error_type == "builtins.RuntimeError" and "poison event" in letter.error_message
    assert "RuntimeError" in letter.traceback
    assert "Dead letter" in caplog.text and "tests.record" in caplog.text
    # The other handlers of the poison event ran, and the next event went through.
    assert ("other", position) in effects()
    assert ("record", after.events[0].position) in effects()
    assert HandlerReceipt.objects.get(handler="tests.record", position=position).status == "failed"
    assert Checkpoint.objects.get(name="tests.record").position >= after.events[0].position, \
        "a dead letter is settled: the checkpoint moves past it"


@pytest.mark.django_db(transaction=True)
def test_the_relay_delivers_what_a_crash_after_commit_left_behind(test_handlers, monkeypatch):
    create_note("before")  # the subscriptions start here
    Effect.objects.all().delete()
    # Commit, but lose the on-commit delivery (as if the process died right after COMMIT).
    monkeypatch.setattr(dispatch_module, "committed", lambda *args: None)
    first = create_note("left behind")
    monkeypatch.undo()
    assert not Effect.objects.exists()
    assert Checkpoint.objects.get(name="tests.record").position < first.events[0].position
    call_command("fluvius_relay", verbosity=0)
    position = first.events[0].position
    assert sorted(effects()) == [("ordered", position), ("other", position), ("record", position)]


# -- ordering ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_ordered_handler_waits_for_the_previous_version(test_handlers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        note = create_note("in order")
        edit_note(note.aggregate_id, "second")
    first, second = Event.objects.filter(aggregate_id=note.aggregate_id).order_by("version")
    spec = handlers.get("tests.ordered")
    # Version 1 is handed over and not handled yet (pending): version 2 must wait for it.
    mark_pending([(spec, first.position), (spec, second.position)])
    result = deliver(spec, second)
    assert (result.outcome, result.blocked_by) == (WAIT, first.position)
    assert deliver(spec, first).outcome == DONE
    assert deliver(spec, second).outcome == DONE
    assert list(Effect.objects.filter(handler="ordered").order_by("id").values_list("version", flat=True)) == [1, 2]
    # An unordered handler never waits.
    assert deliver(handlers.get("tests.record"), second).outcome == DONE


@pytest.mark.django_db
def test_an_ordered_handler_does_not_wait_for_events_it_never_got(test_handlers,
                                                                   django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        note = create_note("old")
        edit_note(note.aggregate_id, "new")
    # Version 1 came before this handler's subscription: no receipt, nothing to wait for.
    second = Event.objects.get(aggregate_id=note.aggregate_id, version=2)
    assert deliver(handlers.get("tests.ordered"), second).outcome == DONE


@pytest.mark.django_db
def test_an_ordered_handler_waits_behind_a_dead_letter_until_it_is_discarded(
        test_handlers, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        note = create_note("x")
        edit_note(note.aggregate_id, "y")
    first, second = Event.objects.filter(aggregate_id=note.aggregate_id).order_by("version")
    dispatch_module.dead_letter(DeadLetter.Kind.HANDLER, "tests.ordered", first, attempts=4, message="boom")
    spec = handlers.get("tests.ordered")
    assert deliver(spec, second).outcome == WAIT
    call_command("fluvius_deadletters", "discard", "--all", verbosity=0)
    assert HandlerReceipt.objects.get(handler="tests.ordered", position=first.position).status == "discarded"
    assert deliver(spec, second).outcome == DONE


# -- retries and dead letters ----------------------------------------------------------------


@override_settings(FLUVIUS=fluvius(RETRY_BACKOFF=1.0, RETRY_BACKOFF_MAX=10.0, RETRY_JITTER=False))
def test_retry_delays_grow_exponentially_up_to_the_cap():
    assert [retry_delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


@override_settings(FLUVIUS=fluvius(RETRY_BACKOFF=4.0, RETRY_JITTER=True))
def test_retry_jitter_keeps_at_least_half_the_delay():
    delays = [retry_delay(3) for _ in range(200)]
    assert all(8.0 <= d <= 16.0 for d in delays) and len(set(delays)) > 1


@pytest.mark.django_db(transaction=True)
@override_settings(FLUVIUS=fluvius(RETRY_BACKOFF=2.0, RETRY_JITTER=False))
def test_run_attempt_schedules_retries_with_backoff_then_dead_letters(test_handlers, scratch):
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        note = create_note("poison")
    position = note.events[0].position
    scheduled = []

    def schedule(attempt, countdown):
        scheduled.append((attempt.attempt, countdown))

    item = Attempt("tests.record", position)
    while True:  # what the Celery task does with each scheduled try
        assert run_attempt(item, schedule=schedule) == FAILED
        if not scheduled or scheduled[-1][0] == item.attempt:
            break
        item = Attempt("tests.record", position, scheduled[-1][0])
    # tests.record has max_retries=3: 4 tries, waits of 2, 4, 8 seconds between them.
    assert scheduled == [(2, 2.0), (3, 4.0), (4, 8.0)]
    assert dispatch_handlers.tries(position) == 4
    assert DeadLetter.objects.get().attempts == 4


@pytest.mark.django_db(transaction=True)
def test_deadletters_command_lists_redrives_and_discards(test_handlers, scratch, capsys):
    (scratch / "broken").write_text("")
    flaky = create_note("flaky")
    poison = create_note("poison")
    assert DeadLetter.objects.count() == 2
    call_command("fluvius_deadletters", "list")
    out = capsys.readouterr().out
    assert "tests.record" in out and str(flaky.events[0].position) in out and "broken for now" in out

    (scratch / "broken").unlink()  # the bug is fixed: re-drive the flaky one
    letter = DeadLetter.objects.get(position=flaky.events[0].position)
    call_command("fluvius_deadletters", "redrive", str(letter.pk), verbosity=0)
    assert effects("record") == [("record", flaky.events[0].position)]
    assert list(DeadLetter.objects.values_list("position", flat=True)) == [poison.events[0].position]

    call_command("fluvius_deadletters", "redrive", "--all", verbosity=0)  # still poison: back again
    assert DeadLetter.objects.get().position == poison.events[0].position
    call_command("fluvius_deadletters", "discard", "--handler", "tests.record", verbosity=0)
    assert not DeadLetter.objects.exists()
    call_command("fluvius_deadletters", "redrive", str(letter.pk), verbosity=0)  # gone: nothing happens
    assert effects("record") == [("record", flaky.events[0].position)]


@pytest.mark.django_db
def test_deadletters_command_refuses_bad_input(test_handlers):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="ids or --all"):
        call_command("fluvius_deadletters", "redrive")
    with pytest.raises(CommandError, match="not-a-number"):
        call_command("fluvius_deadletters", "discard", "not-a-number")


@pytest.mark.django_db(transaction=True)
def test_a_delivery_for_a_handler_this_process_lacks_is_dead_lettered(test_handlers):
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        note = create_note("orphan")
    run_attempt(Attempt("tests.gone", note.events[0].position), schedule=None)
    letter = DeadLetter.objects.get()
    assert letter.handler == "tests.gone" and "No event handler named" in letter.error_message


# -- the Celery dispatcher without a broker ------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_commands_commit_and_the_events_wait_on_the_feed(test_handlers):
    from celery import Celery

    create_note("before")  # inline: the subscriptions start here
    Effect.objects.all().delete()
    down = Celery("down", broker="redis://127.0.0.1:1/5", set_as_current=False)
    down.conf.broker_connection_timeout = 1
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="sync", CELERY_APP=down)):
        result = create_note("waits")
        assert isinstance(get_dispatcher(), CeleryDispatcher)
        again = deliver_pending()
    assert again.failed >= 3 and again.handed_over == 0 and "Error" in " ".join(again.errors)
    assert Event.objects.filter(aggregate_id=result.aggregate_id).exists()
    position = result.events[0].position
    cp = Checkpoint.objects.get(name="tests.record")
    assert cp.position < position and cp.sent_position < position, "nothing counts as handed over"
    assert not Effect.objects.exists()
    # Nothing is lost: the next relay that can deliver does (inline here), each once.
    call_command("fluvius_relay", verbosity=0)
    assert sorted(effects()) == [("ordered", position), ("other", position), ("record", position)]


# -- the example project's handlers ---------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_welcome_email_is_sent_once_after_the_user_is_created():
    domain = UserDomain()
    domain.process_command(domain.create_command("create-user", {"name": "Ada", "email": "ada@example.com"}))
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["ada@example.com"] and "Ada" in mail.outbox[0].body


@pytest.mark.django_db(transaction=True)
def test_the_orders_process_manager_cancels_open_orders_of_a_deactivated_customer():
    users, orders = UserDomain(), OrderDomain()
    user = users.process_command(users.create_command("create-user", {"name": "Bo", "email": "bo@example.com"}))
    item = {"sku": "A", "quantity": 1, "price": "2.00"}
    placed = [orders.process_command(orders.create_command(
        "place-order", {"customer_id": str(user.aggregate_id), "items": [item]})) for _ in range(2)]
    paid = orders.process_command(orders.create_command(
        "place-order", {"customer_id": str(user.aggregate_id), "items": [item]}))
    orders.process_command(orders.create_command("pay-order", {"amount": "2.00"}, aggregate_id=paid.aggregate_id))
    other = orders.process_command(orders.create_command(
        "place-order", {"customer_id": str(uuid.uuid4()), "items": [item]}))

    deactivated = users.process_command(users.create_command("deactivate-user", {}, aggregate_id=user.aggregate_id))
    cause = deactivated.events[0]

    statuses = dict(Order.objects.values_list("pk", "status"))
    assert [statuses[p.aggregate_id] for p in placed] == ["cancelled", "cancelled"]
    assert statuses[paid.aggregate_id] == "paid" and statuses[other.aggregate_id] == "placed"
    cancels = Event.objects.filter(evt_key="order-cancelled").order_by("position")
    assert len(cancels) == 2
    for event in cancels:
        assert event.correlation_id == cause.correlation_id
        assert event.causation_id == f"event:{cause.position}"
        assert event.metadata["source"] == "process-manager" and event.payload["reason"] == "customer deactivated"
    # Exactly once: offering the deactivation again (a reset subscription) issues no second cancel.
    for name in {spec.name for spec in handlers.for_event(cause)}:
        call_command("fluvius_subscriptions", "reset", name, "--to", str(cause.position - 1), verbosity=0)
    deliver_pending()
    assert Event.objects.filter(evt_key="order-cancelled").count() == 2


@pytest.mark.django_db(transaction=True)
def test_old_receipts_can_be_pruned(test_handlers):
    import datetime

    from django.core.management.base import CommandError

    create_note("old")
    new = create_note("new")
    HandlerReceipt.objects.exclude(position=new.events[0].position).update(
        created=datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
    call_command("fluvius_relay", "--prune-receipts", "30", verbosity=0)
    assert set(HandlerReceipt.objects.values_list("position", flat=True)) == {new.events[0].position}
    with pytest.raises(CommandError, match="days > 0"):
        call_command("fluvius_relay", "--prune-receipts", "0")
