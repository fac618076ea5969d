"""Snapshots: taken every N events in the command's transaction, used by loads,
never changing a result (a cache), ignored when their schema is older or their
state is damaged."""

import datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_fluvius import Aggregate, Domain, action, apply
from django_fluvius.events.snapshots import SnapshotStore, is_due, snapshot_interval, take_snapshots
from django_fluvius.models import Event, Snapshot
from tests.testapp.domain import NoteAggregate, NoteDomain

pytestmark = pytest.mark.django_db


class SnapNoteAggregate(NoteAggregate):
    snapshot_every = 3


class SnapNoteDomain(NoteDomain):
    __aggregate__ = SnapNoteAggregate


class PlainNoteDomain(NoteDomain):
    """The same namespace without snapshots: loads fold every event."""


def no_cache():
    """Commands must really load the stream (the in-process aggregate cache would skip it)."""
    from django.conf import settings

    return override_settings(FLUVIUS={**settings.FLUVIUS, "AGGREGATE_CACHE_SIZE": 0})


def make_note(domain, edits: int):
    result = domain.process_command(domain.create_command("create-note", {"title": "t"}))
    for i in range(edits):
        result = domain.process_command(
            domain.create_command("edit-note", {"body": f"body {i}"}, aggregate_id=result.aggregate_id))
    return result


def test_interval_from_class_then_setting():
    assert snapshot_interval(SnapNoteAggregate) == 3
    assert snapshot_interval(NoteAggregate) == 0
    with override_settings(FLUVIUS={"SNAPSHOT_EVERY": 5}):
        assert snapshot_interval(NoteAggregate) == 5
        assert snapshot_interval(SnapNoteAggregate) == 3

        class Off(NoteAggregate):
            snapshot_every = 0

        assert snapshot_interval(Off) == 0


def test_is_due_when_crossing_a_multiple():
    assert is_due(3, 1, 3)
    assert not is_due(4, 1, 3)
    assert is_due(7, 2, 3)  # 5 -> 7 crossed 6
    assert not is_due(3, 1, 0)


def test_snapshot_every_n_events_holds_the_folded_state():
    domain = SnapNoteDomain()
    result = make_note(domain, 7)  # versions 1..8
    snaps = list(Snapshot.objects.filter(aggregate_id=result.aggregate_id).order_by("version"))
    assert [s.version for s in snaps] == [3, 6]
    plain = PlainNoteDomain()
    for snap in snaps:
        folded = plain.load(result.aggregate_id, version=snap.version)
        assert snap.state == folded.state
        assert snap.namespace == "test-notes" and snap.resource == "note"
        assert snap.schema_version == 1
        assert snap.aggregate_created == folded.created
        assert snap.aggregate_updated == folded.updated


def test_setting_turns_snapshots_on_for_every_aggregate():
    from django.conf import settings

    with override_settings(FLUVIUS={**settings.FLUVIUS, "SNAPSHOT_EVERY": 2}):
        result = make_note(NoteDomain(), 4)
    assert list(Snapshot.objects.filter(aggregate_id=result.aggregate_id)
                .order_by("version").values_list("version", flat=True)) == [2, 4]


def test_load_reads_the_snapshot_and_only_later_events():
    domain = SnapNoteDomain()
    result = make_note(domain, 7)
    # Mark the snapshot at 6: a load that uses it shows the mark.
    Snapshot.objects.filter(aggregate_id=result.aggregate_id, version=6).update(
        state={**SnapNoteDomain().load(result.aggregate_id, version=6).state, "marker": "from-snapshot"})
    with CaptureQueriesContext(connection) as queries:
        loaded = domain.load(result.aggregate_id)
    assert loaded.state["marker"] == "from-snapshot"
    assert loaded.version == 8
    assert loaded.state["body"] == "body 6"
    # One read of the events from the snapshot's own (which proves the stream has it) on.
    event_queries = [q["sql"] for q in queries if "fluvius_event" in q["sql"]]
    version = connection.ops.quote_name("version")
    assert len(event_queries) == 1 and f"{version} > 5" in event_queries[0].replace("%s", "5")


def test_a_snapshot_past_the_stream_is_ignored_and_leaves_no_gap(caplog):
    """A snapshot table restored from a newer backup than the events: its snapshot stands for
    versions the stream never had; trusted, the next command would be stored past a gap."""
    domain = SnapNoteDomain()
    result = make_note(domain, 4)  # version 5; a snapshot at 3
    Snapshot.objects.filter(aggregate_id=result.aggregate_id, version=3).update(
        version=30, state={"title": "from a newer backup"})
    with no_cache():
        loaded = domain.load(result.aggregate_id)
        assert (loaded.version, loaded.state["title"], loaded.state["body"]) == (5, "t", "body 3")
        assert "the stream has no event at that version" in caplog.text
        edited = domain.process_command(
            domain.create_command("edit-note", {"body": "after"}, aggregate_id=result.aggregate_id))
    assert edited.version == 6
    assert list(Event.objects.filter(aggregate_id=result.aggregate_id).order_by("version")
                .values_list("version", flat=True)) == [1, 2, 3, 4, 5, 6]


def test_deleting_all_snapshots_changes_no_result():
    domain = SnapNoteDomain()
    result = make_note(domain, 10)
    times = list(Event.objects.filter(aggregate_id=result.aggregate_id).order_by("version")
                 .values_list("created", flat=True))
    assert Snapshot.objects.filter(aggregate_id=result.aggregate_id).count() == 3

    def everything():
        views = [domain.load(result.aggregate_id)]
        views += [domain.load(result.aggregate_id, version=v) for v in range(1, 12)]
        views += [domain.load(result.aggregate_id, at=t) for t in times]
        return [(a.version, a.state, a.created, a.updated, a.resource) for a in views]

    with_snapshots = everything()
    SnapshotStore().clear()
    assert not Snapshot.objects.exists()
    assert everything() == with_snapshots
    # And the folds match a domain that never snapshots.
    plain = PlainNoteDomain()
    assert [(a.version, a.state) for a in [plain.load(result.aggregate_id, version=v) for v in range(1, 12)]] \
        == [(v, s) for v, s, *_ in with_snapshots[1:12]]


def test_time_travel_before_and_after_a_snapshot():
    domain = SnapNoteDomain()
    result = make_note(domain, 5)  # snapshots at 3 and 6
    events = list(Event.objects.filter(aggregate_id=result.aggregate_id).order_by("version"))
    # Marking the snapshots proves which loads used them.
    for snap in Snapshot.objects.filter(aggregate_id=result.aggregate_id):
        snap.state = {**snap.state, "marker": snap.version}
        snap.save()
    assert "marker" not in domain.load(result.aggregate_id, version=2).state  # before the first
    assert domain.load(result.aggregate_id, version=4).state["marker"] == 3  # between
    assert domain.load(result.aggregate_id, version=4).state["body"] == "body 2"
    assert domain.load(result.aggregate_id, version=6).state["marker"] == 6
    assert domain.load(result.aggregate_id, at=events[1].created).version == 2
    at_5 = domain.load(result.aggregate_id, at=events[4].created)
    assert (at_5.version, at_5.state["marker"]) == (5, 3)
    before = events[0].created - datetime.timedelta(seconds=1)
    from django_fluvius import AggregateNotFound

    with pytest.raises(AggregateNotFound):
        domain.load(result.aggregate_id, at=before)


def test_older_snapshot_schema_is_ignored_and_state_rebuilt_from_events():
    domain = SnapNoteDomain()
    result = make_note(domain, 4)  # snapshot at 3 (schema 1), version 5
    Snapshot.objects.filter(aggregate_id=result.aggregate_id).update(state={"title": "WRONG", "stale": True})

    class NewShape(SnapNoteAggregate):
        snapshot_schema = 2

    class NewShapeDomain(NoteDomain):
        __aggregate__ = NewShape

    new_domain = NewShapeDomain()
    loaded = new_domain.load(result.aggregate_id)
    assert loaded.state == PlainNoteDomain().load(result.aggregate_id).state
    assert "stale" not in loaded.state
    # The next due snapshot is written in the new schema.
    new_domain.process_command(new_domain.create_command("edit-note", {"body": "x"},
                                                         aggregate_id=result.aggregate_id))
    snap = Snapshot.objects.get(aggregate_id=result.aggregate_id, version=6)
    assert snap.schema_version == 2 and snap.state["body"] == "x"


def test_damaged_snapshot_falls_back_to_events(caplog):
    domain = SnapNoteDomain()
    result = make_note(domain, 3)
    Snapshot.objects.filter(aggregate_id=result.aggregate_id).update(state=["not", "a", "dict"])
    loaded = domain.load(result.aggregate_id)
    assert loaded.state == PlainNoteDomain().load(result.aggregate_id).state
    assert "damaged snapshot" in caplog.text


def test_commands_work_from_a_snapshot():
    domain = SnapNoteDomain()
    with no_cache():
        result = make_note(domain, 8)
        result = domain.process_command(domain.create_command("archive", {}, aggregate_id=result.aggregate_id))
    assert result.version == 10
    assert result.state == PlainNoteDomain().load(result.aggregate_id).state
    assert result.state["edits"] == 8 and result.state["archived"] is True
    note = domain.statemgr.fetch("note", result.aggregate_id)
    assert (note.version, note.edits, note.archived) == (10, 8, True)


def test_snapshot_is_written_in_the_command_transaction():
    domain = SnapNoteDomain()
    result = make_note(domain, 1)  # version 2
    with pytest.raises(RuntimeError), transaction.atomic():
        domain.process_command(domain.create_command("edit-note", {"body": "x"}, aggregate_id=result.aggregate_id))
        assert Snapshot.objects.filter(aggregate_id=result.aggregate_id, version=3).exists()
        raise RuntimeError("roll back")
    assert not Snapshot.objects.filter(aggregate_id=result.aggregate_id).exists()


def test_no_snapshot_query_on_the_command_path_when_snapshots_are_off():
    domain = NoteDomain()
    result = make_note(domain, 1)
    with no_cache(), CaptureQueriesContext(connection) as queries:
        domain.process_command(domain.create_command("edit-note", {"body": "x"}, aggregate_id=result.aggregate_id))
        domain.load(result.aggregate_id)
    assert not [q for q in queries if "fluvius_snapshot" in q["sql"]]


class LedgerAggregate(Aggregate):
    snapshot_every = 2

    @action(evt_key="ledger-opened", resources=["note"], create=True)
    def open(self, title: str):
        return {"title": title, "body": ""}

    @action(evt_key="ledger-credited", resources=["note"])
    def credit(self, amount: str):
        return {"amount": amount}

    @apply("ledger-credited")
    def _credited(self, state, event):
        # A Decimal in the state does not survive JSON: never snapshotted.
        return {**state, "balance": state.get("balance", Decimal(0)) + Decimal(event.payload["amount"])}


class LedgerDomain(Domain):
    __aggregate__ = LedgerAggregate
    __namespace__ = "test-ledger"
    __resources__ = {"note": "testapp.Note"}


def test_state_that_does_not_survive_json_is_never_snapshotted(caplog):
    domain = LedgerDomain()
    result = domain.process_command(domain.create_command("open", {"title": "l"}))
    for amount in ("1.10", "2.20", "3.30"):
        result = domain.process_command(domain.create_command("credit", {"amount": amount},
                                                              aggregate_id=result.aggregate_id))
    assert not Snapshot.objects.filter(aggregate_id=result.aggregate_id).exists()
    assert domain.load(result.aggregate_id).state["balance"] == Decimal("6.60")
    assert "does not survive JSON" in caplog.text


def test_take_snapshots_from_events_for_existing_aggregates():
    plain = PlainNoteDomain()
    first, second = make_note(plain, 4), make_note(plain, 1)
    assert not Snapshot.objects.exists()
    assert take_snapshots(SnapNoteDomain) == 2
    assert {(s.aggregate_id, s.version) for s in Snapshot.objects.all()} == {
        (first.aggregate_id, 5), (second.aggregate_id, 2)}
    assert SnapNoteDomain().load(first.aggregate_id).state == plain.load(first.aggregate_id).state


def test_snapshot_of_another_namespace_is_not_used():
    domain = SnapNoteDomain()
    result = make_note(domain, 3)
    Snapshot.objects.filter(aggregate_id=result.aggregate_id).update(namespace="elsewhere")
    loaded = domain.load(result.aggregate_id)
    assert loaded.state == PlainNoteDomain().load(result.aggregate_id).state


def test_a_new_upcaster_makes_older_snapshots_stale():
    from django_fluvius.events.upcasting import registry, upcaster

    domain = SnapNoteDomain()
    result = make_note(domain, 3)  # a snapshot at 3, version 4
    snap = Snapshot.objects.get(aggregate_id=result.aggregate_id)
    snap.state = {**snap.state, "marker": True}
    snap.save()
    assert domain.load(result.aggregate_id).state["marker"] is True  # used while the code is unchanged

    @upcaster("note-created", version=1)
    def with_editor(payload):
        return {**payload, "editor": "unknown"}

    try:
        # Old events now read differently: the snapshot folded before the upcaster has the old shape.
        loaded = domain.load(result.aggregate_id)
        assert "marker" not in loaded.state and loaded.state["editor"] == "unknown"
        assert loaded.state == PlainNoteDomain().load(result.aggregate_id).state
        domain.process_command(domain.create_command("edit-note", {"body": "x"}, aggregate_id=result.aggregate_id))
        domain.process_command(domain.create_command("edit-note", {"body": "y"}, aggregate_id=result.aggregate_id))
        fresh = Snapshot.objects.get(aggregate_id=result.aggregate_id, version=6)
        assert fresh.fingerprint != snap.fingerprint and fresh.state["editor"] == "unknown"
        assert domain.load(result.aggregate_id).state == PlainNoteDomain().load(result.aggregate_id).state
    finally:
        registry.unregister("note-created", 1)
    assert domain.load(result.aggregate_id).state["marker"] is True  # the code went back: so does the cache
