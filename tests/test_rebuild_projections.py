"""fluvius_rebuild of async projections: rebuilt aside and swapped in on PostgreSQL
(resumable, live table untouched until the swap), in one transaction elsewhere;
readers never see an empty table."""

import io
import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import F

from django_fluvius.delivery.projections import AsyncProjection, async_projections, on
from django_fluvius.models import Checkpoint, Event, RebuildRun
from django_fluvius.ops.rebuild import SHADOW_SCHEMA, ProjectionTarget, rebuild, resolve_targets
from tests.testapp.domain import NoteDomain
from tests.testapp.models import NoteActivity

from .dispatch_support import wait_for

NAME = "tests.rebuild-activity"


class ActivityProjection(AsyncProjection, register=False):
    name = NAME
    namespace = "test-notes"
    models = [NoteActivity]

    @on("note-created")
    def created(self, event):
        NoteActivity.objects.using(self.using).create(pk=event.aggregate_id, title=event.payload["title"],
                                                      events=1, last_version=event.version,
                                                      last_position=event.position)

    @on("note-edited")
    def edited(self, event):
        NoteActivity.objects.using(self.using).filter(pk=event.aggregate_id).update(
            events=F("events") + 1, last_version=event.version, last_position=event.position)


@pytest.fixture
def projection():
    async_projections.register(ActivityProjection)
    yield ActivityProjection
    async_projections.unregister(NAME)


def make_notes(count, edits=2):
    domain = NoteDomain()
    ids = []
    for i in range(count):
        result = domain.process_command(domain.create_command("create-note", {"title": f"n{i}"}))
        for j in range(edits):
            domain.process_command(domain.create_command("edit-note", {"body": f"{j}"},
                                                         aggregate_id=result.aggregate_id))
        ids.append(result.aggregate_id)
    return ids


def truth():
    """Per note: (title, events, last version), straight from the event table."""
    rows = {}
    for event in Event.objects.filter(namespace="test-notes", resource="note").order_by("position"):
        title, count, _ = rows.get(event.aggregate_id, ("", 0, 0))
        if event.evt_key == "note-created":
            title = event.payload["title"]
        rows[event.aggregate_id] = (title, count + 1, event.version)
    return rows


def live_rows():
    return {pk: (t, e, v) for pk, t, e, v in NoteActivity.objects.values_list("id", "title", "events", "last_version")}


def count_from_another_connection():
    """What a reader elsewhere sees right now (its own connection, committed data only)."""
    result = []

    def read():
        try:
            result.append(NoteActivity.objects.count())
        finally:
            connections.close_all()

    thread = threading.Thread(target=read)
    thread.start()
    thread.join()
    return result[0]


def shadow_tables():
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", [SHADOW_SCHEMA])
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_rebuild_async_projection_by_name(projection):
    make_notes(7)
    projection().catch_up()
    assert live_rows() == truth()
    NoteActivity.objects.update(events=0, title="broken")  # a projection bug, fixed in code since
    assert NAME in [t.name for t in resolve_targets()]
    seen = []
    err = io.StringIO()
    call_command("fluvius_rebuild", NAME, "--batch-size", "5", stdout=io.StringIO(), stderr=err)
    assert live_rows() == truth()
    run = RebuildRun.objects.get(name=NAME)
    assert (run.status, run.events_done) == ("done", 21)
    assert "21/21 events" in err.getvalue()
    checkpoint = Checkpoint.objects.get(name=NAME)
    assert checkpoint.position == Event.objects.order_by("-position").first().position
    assert checkpoint.events_applied == 21
    assert not Checkpoint.objects.filter(name__endswith="@rebuild").exists()
    assert shadow_tables() == []
    # Caught up: a later catch-up applies nothing twice.
    make_notes(1, edits=0)
    projection().catch_up()
    assert live_rows() == truth() and not seen


@pytest.mark.django_db(transaction=True)
def test_readers_see_the_old_rows_until_the_swap(projection):
    make_notes(6)
    projection().catch_up()
    NoteActivity.objects.update(title="old")
    seen = []

    def live_old_titles():
        # This connection writes into the copy (search_path); the live table, by its full name.
        with connection.cursor() as cursor:
            cursor.execute('SELECT count(*) FROM "public"."testapp_noteactivity" WHERE title = %s', ["old"])
            return cursor.fetchone()[0]

    rebuild([NAME], batch_size=3, progress=False, on_batch=lambda r: seen.append(
        (count_from_another_connection(), live_old_titles() if connection.vendor == "postgresql" else None)))
    assert len(seen) == 6 and {count for count, _ in seen} == {6}
    if connection.vendor == "postgresql":
        # Aside: between batches the live table was untouched, even inside the rebuilding transaction.
        assert {old for _, old in seen} == {6}
    assert live_rows() == truth()


@pytest.mark.django_db(transaction=True)
def test_crash_then_resume(projection):
    ids = make_notes(8)
    projection().catch_up()
    NoteActivity.objects.update(title="old")

    def crash(report):
        if report.number == 3:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        rebuild([NAME], batch_size=4, progress=False, on_batch=crash)
    run = RebuildRun.objects.get(name=NAME)
    assert run.status == "failed"
    assert NoteActivity.objects.filter(title="old").count() == 8  # live rows untouched, never empty
    if connection.vendor == "postgresql":
        assert run.batches == 2 and shadow_tables() == ["testapp_noteactivity"]
        twin = Checkpoint.objects.get(name=NAME + "@rebuild")
        assert twin.events_applied == 8
    resumed = []
    rebuild([NAME], batch_size=4, progress=False, on_batch=lambda r: resumed.append(r.number))
    run.refresh_from_db()
    assert run.status == "done" and run.events_done == 24
    if connection.vendor == "postgresql":
        assert resumed == [3, 4, 5, 6]  # went on from the committed batches
    else:
        assert resumed == [1, 2, 3, 4, 5, 6]  # one transaction: started over
    assert live_rows() == truth() and len(ids) == 8
    assert shadow_tables() == []


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_events_committed_during_the_rebuild_are_in_the_result(projection):
    ids = make_notes(6)
    projection().catch_up()
    threads = []

    def command_elsewhere(report):
        if report.number != 2:
            return

        def work():
            try:
                domain = NoteDomain()
                domain.process_command(domain.create_command("edit-note", {"body": "late"}, aggregate_id=ids[0]))
                make_notes(1, edits=1)
            finally:
                connections.close_all()

        before = Event.objects.count()
        thread = threading.Thread(target=work)
        thread.start()
        threads.append(thread)
        # The edit commits while the rebuild runs. (On MariaDB the rebuild is one transaction
        # holding the projection's checkpoint: the command's inline catch-up, and so the
        # rest of `work`, wait for it to commit.)
        wait_for(lambda: Event.objects.count() > before, message="the edit committed during the rebuild")

    rebuild([NAME], batch_size=5, progress=False, on_batch=command_elsewhere)
    for thread in threads:
        thread.join(60)
    assert len(truth()) == 7
    assert live_rows() == truth()
    assert live_rows()[ids[0]][1] == 4


@pytest.mark.django_db
def test_projection_target_counts_its_events(projection):
    make_notes(2, edits=1)
    domain = NoteDomain()
    domain.process_command(domain.create_command("create-folder", {"name": "f"}))  # not its key
    assert ProjectionTarget(ActivityProjection).total_events("default") == 4


@pytest.mark.django_db
def test_inspect_lists_async_projections(projection):
    import json

    make_notes(1, edits=1)
    out = io.StringIO()
    call_command("fluvius_inspect", "projections", "--json", "--counts", stdout=out)
    item = next(p for p in json.loads(out.getvalue())["projections"] if p["name"] == NAME)
    assert item == {"name": NAME, "kind": "async", "model": "testapp.NoteActivity",
                    "table": "testapp_noteactivity", "evt_keys": ["note-created", "note-edited"],
                    "rows": 0, "lag": 2}
