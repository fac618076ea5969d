"""fluvius_replay: handlers run again over a position range, through dispatch.deliver
(receipts), failures dead-lettered, filters by handler, key, namespace, aggregate."""

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_fluvius import event_handler
from django_fluvius.delivery.handlers import handlers
from django_fluvius.events.upcasting import registry, rename_event
from django_fluvius.exceptions import RebuildError
from django_fluvius.models import DeadLetter, Event, HandlerReceipt
from django_fluvius.ops.replay import replay
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect

pytestmark = pytest.mark.django_db

NAMES = ("tests.replay.created", "tests.replay.edited", "tests.replay.fragile")


@pytest.fixture(autouse=True)
def replay_handlers():
    @event_handler("note-created", namespace="test-notes", name=NAMES[0])
    def created(event):
        Effect.objects.create(handler="created", position=event.position, aggregate_id=event.aggregate_id,
                              version=event.version, detail=event.payload["title"])

    @event_handler("note-edited", namespace="test-notes", name=NAMES[1])
    def edited(event):
        Effect.objects.create(handler="edited", position=event.position, aggregate_id=event.aggregate_id,
                              version=event.version, detail=event.payload["body"])

    @event_handler("note-edited", name=NAMES[2])
    def fragile(event):
        if event.payload["body"] == "boom":
            raise ValueError("cannot handle boom")
        Effect.objects.create(handler="fragile", position=event.position)

    saved = dict(registry._aliases)
    yield
    registry._aliases = saved
    for name in NAMES:
        handlers.unregister(name)


def history():
    # Dispatch off: the handlers have not run, as for a handler added after the fact.
    with override_settings(FLUVIUS={"DOMAINS": [], "DISPATCH": None}):
        domain = NoteDomain()
        a = domain.process_command(domain.create_command("create-note", {"title": "a"})).aggregate_id
        b = domain.process_command(domain.create_command("create-note", {"title": "b"})).aggregate_id
        for body in ("a1", "a2"):
            domain.process_command(domain.create_command("edit-note", {"body": body}, aggregate_id=a))
        domain.process_command(domain.create_command("edit-note", {"body": "b1"}, aggregate_id=b))
    return a, b


def effects(handler=None):
    qs = Effect.objects.order_by("position", "id")
    if handler:
        qs = qs.filter(handler=handler)
    return list(qs.values_list("handler", "detail"))


def test_replay_range_runs_matching_handlers():
    a, b = history()
    positions = list(Event.objects.order_by("position").values_list("position", flat=True))
    assert Effect.objects.count() == 0
    out = io.StringIO()
    call_command("fluvius_replay", "--from", str(positions[1]), "--to", str(positions[3]), stdout=out,
                 stderr=io.StringIO())
    # Positions 2..4: b created, a1, a2 edited (two handlers each).
    assert effects("created") == [("created", "b")]
    assert effects("edited") == [("edited", "a1"), ("edited", "a2")]
    assert len(effects("fragile")) == 2
    assert "3 events: 5 deliveries ran, 0 already done" in out.getvalue()
    assert HandlerReceipt.objects.filter(handler=NAMES[1]).count() == 2


def test_replay_runs_again_by_default_and_missing_only_skips_done_pairs():
    history()
    replay(handler_names=[NAMES[0]])
    report = replay(handler_names=[NAMES[0]])
    assert (report.done, report.skipped) == (2, 0)
    assert len(effects("created")) == 4  # forced: ran a second time
    report = replay(handler_names=[NAMES[0]], missing_only=True)
    assert (report.done, report.skipped) == (0, 2)
    assert len(effects("created")) == 4
    # A handler that never ran sees every old event once.
    report = replay(handler_names=[NAMES[1]], missing_only=True)
    assert (report.done, report.skipped) == (3, 0)


def test_filters_by_key_namespace_and_aggregate():
    a, b = history()
    assert replay(evt_keys=["note-created"]).done == 2
    Effect.objects.all().delete()
    report = replay(aggregate_id=b)
    assert report.events == 2 and effects() == [("created", "b"), ("edited", "b1"), ("fragile", "")]
    Effect.objects.all().delete()
    assert replay(namespace="app-user").events == 0 and Effect.objects.count() == 0
    out = io.StringIO()
    call_command("fluvius_replay", "--aggregate", str(a), "--handler", NAMES[1], "--dry-run", stdout=out)
    assert out.getvalue().count(NAMES[1]) == 2 and "2 deliveries would run (3 events)" in out.getvalue()
    assert Effect.objects.count() == 0


def test_failures_become_dead_letters_and_the_replay_goes_on():
    a, _ = history()
    domain = NoteDomain()
    with override_settings(FLUVIUS={"DOMAINS": [], "DISPATCH": None}):
        domain.process_command(domain.create_command("edit-note", {"body": "boom"}, aggregate_id=a))
        domain.process_command(domain.create_command("edit-note", {"body": "after"}, aggregate_id=a))
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 deliveries failed"):
        call_command("fluvius_replay", "--no-progress", stdout=io.StringIO(), stderr=err)
    assert "tests.replay.fragile on 'note-edited'" in err.getvalue() and "cannot handle boom" in err.getvalue()
    letter = DeadLetter.objects.get()
    assert (letter.handler, letter.evt_key, letter.version) == (NAMES[2], "note-edited", 4)
    assert ("edited", "after") in effects() and ("edited", "boom") in effects()


def test_renamed_events_reach_handlers_of_the_new_key():
    a, _ = history()
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=a, version=4,
                         evt_key="note-rewritten", payload={"body": "old name"})
    rename_event("note-rewritten", "note-edited")
    replay(evt_keys=["note-edited"], handler_names=[NAMES[1]])
    assert ("edited", "old name") in effects()


def test_bad_arguments():
    with pytest.raises(RebuildError, match="No event handler named 'nope'"):
        replay(handler_names=["nope"])
    with pytest.raises(CommandError, match="No event handler named 'nope'"):
        call_command("fluvius_replay", "--handler", "nope", stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="--to >= --from"):
        call_command("fluvius_replay", "--from", "5", "--to", "2")
    with pytest.raises(CommandError, match="not a valid aggregate id"):
        call_command("fluvius_replay", "--aggregate", "xyz")
