"""Event handlers and async projections in real Celery worker processes (issue 5).

Every test starts its own ``celery -A example_project worker`` (prefork, two
processes) on the test database and the Redis broker at redis://127.0.0.1:6379/5,
and stops it (or kills it) before the test ends. Without a reachable broker the
tests are skipped, saying so, except in CI (``CI`` set), where they fail.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from celery import Celery
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from django_fluvius.delivery import dispatch
from django_fluvius.delivery.dispatch import (
    DELIVER_TASK,
    RELAY_TASK,
    Attempt,
    mark_pending,
    relay,
    send,
)
from django_fluvius.delivery.handlers import handlers
from django_fluvius.delivery.projections import async_projections
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt
from example_project.orders.domain import OrderDomain
from example_project.orders.models import Order
from example_project.users.domain import UserDomain
from tests import dispatch_handlers
from tests.dispatch_handlers import NoteActivityProjection
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect, NoteActivity

from .dispatch_support import (
    BROKER_URL,
    QUEUE,
    Worker,
    broker_reachable,
    flush_broker,
    fluvius,
    wait_for,
)

pytestmark = [pytest.mark.broker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def broker():
    if not broker_reachable():
        message = f"needs the Redis broker at {BROKER_URL} (unreachable)"
        if os.environ.get("CI"):
            pytest.fail(message + ": CI must run the Celery tests")
        pytest.skip(message)
    app = Celery("fluvius-tests", broker=BROKER_URL, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = True
    yield app
    app.close()


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    monkeypatch.setenv("FLUVIUS_TEST_SCRATCH", str(tmp_path))
    return tmp_path


@pytest.fixture
def celery_mode(broker, scratch):
    """This process commits with DISPATCH='celery' and the test handlers and projection installed."""
    dispatch_handlers.install()
    flush_broker()
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="thread", CELERY_APP=broker, CELERY_QUEUE=QUEUE,
                                           RETRY_BACKOFF=0.2, RETRY_JITTER=False, ORDERED_WAIT=0.2)):
        yield broker
        assert relay.close_connections(10), "the relay thread finished"
    dispatch_handlers.uninstall()


@pytest.fixture
def start_worker(celery_mode, scratch, tmp_path):
    workers: list[Worker] = []

    def start(**kwargs) -> Worker:
        worker = Worker(connection.settings_dict["NAME"], scratch, tmp_path, **kwargs).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()
    flush_broker()


@pytest.fixture
def worker(start_worker):
    return start_worker()


def create_note(title="n", **payload):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("create-note", {"title": title, **payload}))


def edit_note(note_id, body):
    domain = NoteDomain()
    return domain.process_command(domain.create_command("edit-note", {"body": body}, aggregate_id=note_id))


def effect_count(handler, position=None):
    qs = Effect.objects.filter(handler=handler)
    if position is not None:
        qs = qs.filter(position=position)
    return qs.count()


def test_handlers_run_once_in_a_worker_after_commit(worker):
    notes = [create_note(f"note {i}") for i in range(3)]
    edited = edit_note(notes[0].aggregate_id, "again")
    positions = [n.events[0].position for n in notes]
    wait_for(lambda: effect_count("record") == 4 and effect_count("other") == 3 and effect_count("ordered") == 4,
             message=f"the worker's effects\n{worker.output()}")
    assert sorted(Effect.objects.filter(handler="other").values_list("position", flat=True)) == positions
    assert HandlerReceipt.objects.filter(handler="tests.record").count() == 4
    assert edited.events[0].position in set(Effect.objects.filter(handler="record").values_list("position",
                                                                                                flat=True))
    assert not HandlerReceipt.objects.filter(status="pending").exists(), "every delivery settled"
    time.sleep(0.5)
    assert Effect.objects.count() == 11, "and nothing ran twice"


def test_with_the_broker_down_events_wait_and_are_dispatched_once_when_it_returns(celery_mode, start_worker):
    down = Celery("down", broker="redis://127.0.0.1:1/5", set_as_current=False)
    down.conf.broker_connection_timeout = 1
    with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="thread", CELERY_APP=down, CELERY_QUEUE=QUEUE)):
        started = time.perf_counter()
        notes = [create_note(f"while down {i}") for i in range(3)]
        assert time.perf_counter() - started < 2, "commands do not wait for the broker"
        assert relay.flush(20)
    assert Event.objects.filter(aggregate_id__in=[n.aggregate_id for n in notes]).count() == 3
    first = min(n.events[0].position for n in notes)
    assert Checkpoint.objects.get(name="tests.record").sent_position < first, "nothing handed over"

    worker = start_worker()  # the broker is back: the worker's own relay hands over
    send(celery_mode, RELAY_TASK, ("default",), queue=QUEUE)  # (and Celery beat's task would too)
    wait_for(lambda: effect_count("record") == 3 and effect_count("other") == 3,
             message=f"the delayed deliveries\n{worker.output()}")
    wait_for(lambda: Checkpoint.objects.get(name="tests.record").position >= max(
        n.events[0].position for n in notes), message="the checkpoint to settle")

    # The same deliveries published again (a relay that died before deleting its rows)
    # have no effect; a fresh event in the same message shows the message was consumed.
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        marker = create_note("marker")
    again = [Attempt("tests.record", n.events[0].position).as_message() for n in notes]
    again.append(Attempt("tests.record", marker.events[0].position).as_message())
    send(celery_mode, DELIVER_TASK, (again, "default"), queue=QUEUE)
    wait_for(lambda: effect_count("record", marker.events[0].position) == 1,
             message=f"the marker delivery\n{worker.output()}")
    assert effect_count("record") == 4 and effect_count("other") == 3


def test_a_worker_process_killed_mid_task_is_redelivered_and_has_its_effect_once(worker, scratch):
    note = create_note("slow")
    position = note.events[0].position
    pid_file = scratch / "slow.pid"
    wait_for(pid_file.exists, message=f"the slow handler to start\n{worker.output()}")
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # mid-task, its transaction open
    wait_for(lambda: dispatch_handlers.tries(position) >= 2 and effect_count("record", position) == 1
             and effect_count("other", position) == 1,
             message=f"the redelivery\n{worker.output()}")
    time.sleep(0.5)
    assert effect_count("record", position) == 1
    assert HandlerReceipt.objects.filter(position=position).count() == 3
    assert "WorkerLostError" in worker.output()


def test_a_whole_worker_killed_gives_its_message_to_the_next_worker(start_worker, scratch):
    first = start_worker(concurrency=1)
    note = create_note("slow")
    position = note.events[0].position
    wait_for((scratch / "slow.pid").exists, message=f"the slow handler\n{first.output()}")
    first.kill()  # SIGKILL to the worker and its pool: nobody acknowledges the message
    second = start_worker()
    # Redis hands an unacknowledged message out again after the visibility timeout (4s here).
    wait_for(lambda: effect_count("record", position) == 1 and effect_count("other", position) == 1,
             timeout=30, message=f"the message to come back\n{second.output()}")
    assert dispatch_handlers.tries(position) == 2


def test_a_handler_that_raises_is_retried_with_backoff_then_dead_lettered(worker, scratch):
    poison = create_note("poison")
    position = poison.events[0].position
    letter = wait_for(lambda: DeadLetter.objects.filter(position=position).first(), timeout=30,
                      message=f"the dead letter\n{worker.output()}")
    # tests.record allows 3 retries: 4 tries in all, with growing waits between them.
    assert dispatch_handlers.tries(position) == 4 and letter.attempts == 4
    assert letter.handler == "tests.record" and "poison event" in letter.error_message
    assert effect_count("other", position) == 1, "the other handlers of the event ran"
    times = dispatch_handlers.try_times(position)
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # RETRY_BACKOFF=0.2 in the worker: waits of 0.2, 0.4 and 0.8 seconds.
    assert [round(g, 1) >= w for g, w in zip(gaps, (0.2, 0.4, 0.8), strict=True)] == [True] * 3, gaps
    assert gaps[0] < gaps[1] < gaps[2]
    for delay in ("0.20s", "0.40s", "0.80s"):
        assert f"retrying in {delay}" in worker.output()
    fine = create_note("fine")  # the worker keeps going
    wait_for(lambda: effect_count("record", fine.events[0].position) == 1, message=worker.output())

    # A transient fault: dead-lettered while it lasts, re-driven once fixed.
    (scratch / "broken").write_text("")
    flaky = create_note("flaky")
    wait_for(lambda: DeadLetter.objects.filter(position=flaky.events[0].position).exists(), timeout=30,
             message=worker.output())
    (scratch / "broken").unlink()
    call_command("fluvius_deadletters", "redrive", "--handler", "tests.record", verbosity=0)
    wait_for(lambda: effect_count("record", flaky.events[0].position) == 1, message=worker.output())
    wait_for(lambda: DeadLetter.objects.filter(position=position).exists(), message="poison is back")
    assert list(DeadLetter.objects.values_list("position", flat=True)) == [position]


def test_an_ordered_handler_sees_versions_in_order_even_when_delivered_backwards(worker):
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):
        note = create_note("ordered", body="slow")
        edit_note(note.aggregate_id, "slow")
        edit_note(note.aggregate_id, "slow")
    events = list(Event.objects.filter(aggregate_id=note.aggregate_id).order_by("version"))
    spec = handlers.get("tests.ordered")
    mark_pending([(spec, e.position) for e in events])  # what the relay writes before publishing
    for event in reversed(events):
        send(dispatch.celery_app(), DELIVER_TASK, ([Attempt(spec.name, event.position).as_message()], "default"),
             queue=QUEUE)
    wait_for(lambda: effect_count("ordered") == 3, timeout=30, message=worker.output())
    versions = list(Effect.objects.filter(handler="ordered").order_by("id").values_list("detail", flat=True))
    assert versions == ["1", "2", "3"]
    assert "{'wait': 1}" in worker.output(), "a later version arrived first and waited"


def test_an_async_projection_is_kept_by_the_workers(worker):
    note = create_note("projected")
    edit_note(note.aggregate_id, "one")
    other = create_note("other")
    wait_for(lambda: NoteActivity.objects.filter(pk=note.aggregate_id, events=2).exists()
             and NoteActivity.objects.filter(pk=other.aggregate_id).exists(),
             message=f"the projection\n{worker.output()}")
    cp = Checkpoint.objects.get(name=NoteActivityProjection.name)
    assert cp.events_applied == 3 and cp.position >= other.events[0].position
    assert NoteActivityProjection.name in async_projections


def test_the_process_manager_and_welcome_email_run_in_the_worker(worker, scratch):
    users, orders = UserDomain(), OrderDomain()
    user = users.process_command(users.create_command("create-user", {"name": "Cy", "email": "cy@example.com"}))
    order = orders.process_command(orders.create_command(
        "place-order", {"customer_id": str(user.aggregate_id), "items": [{"sku": "A", "price": "1.00"}]}))
    deactivated = users.process_command(users.create_command("deactivate-user", {},
                                                             aggregate_id=user.aggregate_id))
    wait_for(lambda: Order.objects.filter(pk=order.aggregate_id, status="cancelled").exists(),
             message=f"the process manager\n{worker.output()}")
    cancel = Event.objects.get(aggregate_id=order.aggregate_id, evt_key="order-cancelled")
    cause = deactivated.events[0]
    assert cancel.causation_id == f"event:{cause.position}"
    assert cancel.correlation_id == cause.correlation_id
    mails = wait_for(lambda: list((scratch / "mail").glob("*.log")) if (scratch / "mail").exists() else [],
                     message="the welcome email")
    assert "cy@example.com" in mails[0].read_text() and "Welcome!" in mails[0].read_text()


RABBITMQ_URL = os.environ.get("FLUVIUS_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")


def test_handlers_run_in_a_worker_on_rabbitmq_too(celery_mode, scratch, tmp_path):
    if not broker_reachable(RABBITMQ_URL, default_port=5672):
        pytest.skip(f"needs RabbitMQ at {RABBITMQ_URL} (unreachable)")
    from kombu import Connection

    app = Celery("fluvius-tests-amqp", broker=RABBITMQ_URL, set_as_current=False)
    worker = Worker(connection.settings_dict["NAME"], scratch, tmp_path, broker=RABBITMQ_URL).start()
    try:
        with override_settings(FLUVIUS=fluvius(DISPATCH="celery", RELAY="thread", CELERY_APP=app,
                                               CELERY_QUEUE=QUEUE)):
            notes = [create_note(f"amqp {i}") for i in range(2)]
            assert relay.flush(20)
        wait_for(lambda: effect_count("record") == 2 and effect_count("other") == 2,
                 message=f"the deliveries over AMQP\n{worker.output()}")
        assert {e.position for e in Effect.objects.filter(handler="other")} == {
            n.events[0].position for n in notes}
    finally:
        worker.stop()
        with Connection(RABBITMQ_URL) as conn:  # leave no queue behind
            conn.default_channel.queue_delete(QUEUE)
        app.close()
