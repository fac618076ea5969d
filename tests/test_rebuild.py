"""fluvius_rebuild: read models rebuilt from the events in batches, resumable after a
crash (an injected failure, and a real process killed mid-batch), never leaving
readers an empty table, never overwriting a newer row a command wrote meanwhile."""

import io
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from django_fluvius.events.upcasting import registry, upcaster
from django_fluvius.exceptions import EventDecodeError, RebuildError
from django_fluvius.models import Event, RebuildRun
from django_fluvius.ops.progress import Progress
from django_fluvius.ops.rebuild import ResourceTarget, rebuild, resolve_targets
from tests.testapp.domain import NoteAggregate, NoteDomain
from tests.testapp.models import Folder, Note

ROOT = Path(__file__).resolve().parent.parent


def make_notes(count: int, edits: int = 2) -> list[uuid.UUID]:
    domain = NoteDomain()
    ids = []
    for i in range(count):
        result = domain.process_command(domain.create_command("create-note", {"title": f"n{i}", "tags": [str(i)]}))
        for j in range(edits):
            result = domain.process_command(domain.create_command("edit-note", {"body": f"{i}.{j}"},
                                                                  aggregate_id=result.aggregate_id))
        ids.append(result.aggregate_id)
    return ids


def expected_rows() -> dict:
    """What each note row must hold, folded straight from the events by the domain."""
    domain = NoteDomain()
    rows = {}
    for agg in Event.objects.filter(namespace="test-notes", resource="note", version=1).values_list(
            "aggregate_id", flat=True):
        a = domain.load(agg)
        rows[agg] = (a.state["title"], a.state.get("body", ""), a.state.get("edits", 0), a.version)
    return rows


def actual_rows() -> dict:
    return {pk: (t, b, e, v) for pk, t, b, e, v in Note.objects.values_list("id", "title", "body", "edits", "version")}


def damage(ids):
    """Drift of every kind: a changed row, a missing row, a row nobody owns."""
    Note.objects.filter(pk=ids[0]).update(title="tampered", edits=99)
    Note.objects.filter(pk=ids[-1]).delete()
    Note.objects.create(id=uuid.uuid4(), title="orphan", version=1)


@pytest.mark.django_db
def test_rebuild_restores_every_row_and_removes_orphans():
    ids = make_notes(23)
    good = actual_rows()
    damage(ids)
    assert actual_rows() != good
    err = io.StringIO()
    out = io.StringIO()
    call_command("fluvius_rebuild", "test-notes.note", "--batch-size", "5", stdout=out, stderr=err)
    assert actual_rows() == good == expected_rows()
    run = RebuildRun.objects.get(name="test-notes.note")
    assert (run.status, run.events_done, run.aggregates_done, run.batches) == ("done", 69, 23, 5)
    assert run.rows_written == 23 and run.rows_deleted == 1
    assert "69 events, 23 aggregates" in out.getvalue()
    progress = err.getvalue()  # not a terminal, under one interval: the done line only
    assert progress.startswith("test-notes.note: done, 69/69 events, 23 aggregates in ") and "events/s" in progress


@pytest.mark.django_db
def test_targets_by_resource_namespace_and_all():
    assert [t.name for t in resolve_targets(["note"])] == ["test-notes.note"]
    assert [t.name for t in resolve_targets(["test-notes"])] == ["test-notes.note", "test-notes.folder"]
    everything = {t.name for t in resolve_targets()}
    assert {"test-notes.note", "test-notes.folder", "app-user.user", "app-order.order"} <= everything
    with pytest.raises(RebuildError, match="^No registered domain has a resource named 'nope'. Known: "):
        resolve_targets(["nope"])
    with pytest.raises(CommandError, match="Known: .*test-notes.note"):
        call_command("fluvius_rebuild", "nope", stderr=io.StringIO())


@pytest.mark.django_db
def test_rebuild_of_a_whole_namespace_covers_each_resource():
    domain = NoteDomain()
    folder = domain.process_command(domain.create_command("create-folder", {"name": "f"}))
    make_notes(3)
    Folder.objects.all().delete()
    Note.objects.all().delete()
    call_command("fluvius_rebuild", "test-notes", "--no-progress", stdout=io.StringIO())
    assert Folder.objects.get().name == "f" and Folder.objects.get().pk == folder.aggregate_id
    assert Note.objects.count() == 3


@pytest.mark.django_db
def test_rebuild_reads_old_events_through_upcasters():
    ids = make_notes(2, edits=0)
    # An upcaster added after the events were written changes how they read: the rebuild applies it.
    saved = ({k: dict(v) for k, v in registry._upcasters.items()}, dict(registry._current))

    @upcaster("note-created", version=1)
    def shout(payload):
        return {**payload, "title": payload["title"].upper()}

    try:
        rebuild(["note"], progress=False)
    finally:
        registry._upcasters, registry._current = saved
    assert sorted(Note.objects.filter(pk__in=ids).values_list("title", flat=True)) == ["N0", "N1"]


def in_database_order(ids):
    """Aggregate ids in the order the database sorts them (the rebuild's batches):
    MariaDB's uuid type does not sort like Python's UUIDs."""
    return list(Event.objects.filter(aggregate_id__in=ids, version=1).order_by("aggregate_id")
                .values_list("aggregate_id", flat=True))


@pytest.mark.django_db
def test_injected_failure_after_batch_k_then_resume():
    ids = make_notes(20)
    good = actual_rows()
    for pk in ids:
        Note.objects.filter(pk=pk).update(title="stale")
    seen = []

    def crash_in_batch_3(report):
        seen.append(report.cursor)
        if report.number == 3:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        rebuild(["note"], batch_size=4, progress=False, on_batch=crash_in_batch_3)
    run = RebuildRun.objects.get(name="test-notes.note")
    assert run.status == "failed" and "power cut" in run.error
    assert (run.batches, run.events_done, run.aggregates_done, run.cursor) == (2, 24, 8, seen[1])
    ordered = in_database_order(ids)
    assert set(Note.objects.filter(title="stale").values_list("pk", flat=True)) == set(ordered[8:])  # batch 3 rolled back

    resumed = []
    rebuild(["note"], batch_size=4, progress=False, on_batch=lambda r: resumed.append(r.cursor))
    assert len(resumed) == 3  # only the batches left: 12 aggregates
    run.refresh_from_db()
    assert (run.status, run.batches, run.events_done, run.aggregates_done) == ("done", 5, 60, 20)
    assert actual_rows() == good


@pytest.mark.django_db
def test_restart_and_rerun_start_over():
    make_notes(6)
    with pytest.raises(RuntimeError):
        rebuild(["note"], batch_size=2, progress=False,
                on_batch=lambda r: (_ for _ in ()).throw(RuntimeError("x")) if r.number == 2 else None)
    rebuild(["note"], batch_size=2, progress=False, restart=True)
    run = RebuildRun.objects.get(name="test-notes.note")
    assert (run.status, run.batches, run.aggregates_done) == ("done", 3, 6)
    rebuild(["note"], batch_size=2, progress=False)  # a done run is not resumed: it runs again in full
    run.refresh_from_db()
    assert (run.batches, run.aggregates_done) == (3, 6)


@pytest.mark.django_db
def test_the_table_is_never_empty_during_a_rebuild():
    make_notes(12)
    counts = []
    rebuild(["note"], batch_size=3, progress=False, on_batch=lambda r: counts.append(Note.objects.count()))
    assert counts == [12, 12, 12, 12]


@pytest.mark.django_db
def test_a_newer_row_is_never_overwritten_with_older_state():
    ids = make_notes(3)
    # As if a command committed version 4 after the rebuild read the events up to version 3.
    Note.objects.filter(pk=ids[1]).update(title="newer", version=4)
    rebuild(["note"], progress=False)
    assert Note.objects.get(pk=ids[1]).title == "newer"
    assert Note.objects.get(pk=ids[0]).title == "n0"


class HidingNoteAggregate(NoteAggregate):
    def projection(self, resource):
        return None if self.state.get("archived") else self.state


class HidingNoteDomain(NoteDomain):
    __aggregate__ = HidingNoteAggregate


@pytest.mark.django_db
def test_a_projection_that_is_now_none_deletes_the_row():
    ids = make_notes(3, edits=0)
    domain = NoteDomain()
    domain.process_command(domain.create_command("archive", {}, aggregate_id=ids[0]))
    assert Note.objects.count() == 3
    runs = rebuild(progress=False, targets=[ResourceTarget(HidingNoteDomain, "note")])
    assert set(Note.objects.values_list("pk", flat=True)) == set(ids[1:])
    assert runs[0].rows_deleted == 1


@pytest.mark.django_db
def test_an_undecodable_event_stops_the_rebuild_naming_it():
    ids = in_database_order(make_notes(6, edits=0))
    bad = ids[4]
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=bad, version=2,
                         evt_key="note-vanished", payload={})
    with pytest.raises(EventDecodeError, match=f"at version 2 of test-notes aggregate {bad}") as exc:
        rebuild(["note"], batch_size=2, progress=False)
    assert "note-vanished" in str(exc.value)
    run = RebuildRun.objects.get(name="test-notes.note")
    assert run.status == "failed" and "note-vanished" in run.error and run.batches == 2


def test_progress_line_shows_counts_rate_and_eta():
    stream = io.StringIO()
    bar = Progress("x.y", 1000, stream=stream, interval=0)
    bar.update(250, 10)
    line = stream.getvalue()
    assert "250/1,000 events" in line and "10 aggregates" in line and "events/s" in line and "ETA" in line
    assert "25%" in line


# -- a real crash: the rebuilding process is killed in the middle of a batch ----------------


def database_url() -> str:
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{settings['NAME']}"
    auth = settings["USER"] or ""
    if auth and settings["PASSWORD"]:
        auth += f":{settings['PASSWORD']}"
    scheme, port = {"postgresql": ("postgres", 5432), "mysql": ("mysql", 3306)}[connection.vendor]
    return (f"{scheme}://{auth + '@' if auth else ''}{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or port}"
            f"/{settings['NAME']}")


KILLER = textwrap.dedent("""
    import os, signal, django
    django.setup()
    from tests.testapp.models import Note
    from django_fluvius.ops.rebuild import rebuild

    def on_batch(report):
        if report.number == 3:
            # Rows of batch 3 are written but not committed: die right here, no cleanup at all.
            assert Note.objects.filter(title="stale").count() < 18
            os.kill(os.getpid(), signal.SIGKILL)

    rebuild(["test-notes.note"], batch_size=3, progress=False, on_batch=on_batch)
""")


@pytest.mark.django_db(transaction=True)
def test_process_killed_mid_rebuild_then_resumed():
    ids = make_notes(18)
    good = actual_rows()
    Note.objects.update(title="stale")
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "tests.settings",
           "PYTHONPATH": str(ROOT)}
    env.pop("FLUVIUS_TEST_DB_NAME", None)
    proc = subprocess.run([sys.executable, "-c", KILLER], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr
    run = RebuildRun.objects.get(name="test-notes.note")
    assert (run.status, run.batches, run.aggregates_done) == ("running", 2, 6)  # batches 1-2 committed
    stale = set(Note.objects.filter(title="stale").values_list("pk", flat=True))
    assert stale == set(in_database_order(ids)[6:])  # batch 3 died uncommitted
    out = io.StringIO()
    call_command("fluvius_rebuild", "note", "--batch-size", "3", stdout=out, stderr=io.StringIO())
    run.refresh_from_db()
    assert (run.status, run.batches, run.aggregates_done, run.events_done) == ("done", 6, 18, 54)
    assert actual_rows() == good


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_readers_on_other_connections_see_a_full_table_throughout():
    make_notes(15)
    counts = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                counts.append(Note.objects.count())
        finally:
            connections.close_all()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(3):
            rebuild(["note"], batch_size=2, progress=False)
    finally:
        stop.set()
        thread.join()
    assert counts and set(counts) == {15}


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_a_command_committed_during_the_rebuild_is_kept():
    """A command commits version 4 after the rebuild folded version 3 and before it writes."""
    ids = make_notes(4)
    target_id = in_database_order(ids)[1]

    class RacingAggregate(NoteAggregate):
        def projection(self, resource):
            if self.id == target_id and not getattr(RacingAggregate, "raced", False):
                RacingAggregate.raced = True
                worker = threading.Thread(target=edit_concurrently)
                worker.start()
                worker.join()
            return self.state

    class RacingDomain(NoteDomain):
        __aggregate__ = RacingAggregate

    def edit_concurrently():
        try:
            domain = NoteDomain()
            domain.process_command(domain.create_command("edit-note", {"body": "from the command"},
                                                         aggregate_id=target_id))
        finally:
            connections.close_all()

    rebuild(progress=False, targets=[ResourceTarget(RacingDomain, "note")])
    row = Note.objects.get(pk=target_id)
    assert (row.version, row.body, row.edits) == (4, "from the command", 3)


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_one_rebuild_of_a_target_at_a_time_on_mariadb():
    import MySQLdb

    make_notes(2)
    other = MySQLdb.connect(**connection.get_connection_params())
    try:
        other.cursor().execute("SELECT GET_LOCK('fluvius_rebuild:test-notes.note', 0)")
        with pytest.raises(RebuildError, match="being rebuilt by another process"):
            rebuild(["note"], progress=False)
        assert rebuild(["folder"], progress=False)[0].status == "done"  # other targets are free
    finally:
        other.close()
    # The holder's connection is gone: the lock with it (a killed rebuild never blocks the next).
    # The server lets it go a moment after the client hangs up: wait for that.
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT IS_FREE_LOCK('fluvius_rebuild:test-notes.note')")
            if cursor.fetchone()[0] == 1:
                break
            time.sleep(0.05)
    assert rebuild(["note"], progress=False)[0].status == "done"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_rebuild_of_a_target_at_a_time():
    import psycopg

    make_notes(2)
    dsn = database_url().replace("postgres://", "postgresql://", 1)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(hashtext('fluvius_rebuild:test-notes.note'))")
        with pytest.raises(RebuildError, match="being rebuilt by another process"):
            rebuild(["note"], progress=False)
        assert rebuild(["folder"], progress=False)[0].status == "done"  # other targets are free
        holder = other.info.backend_pid
    # The holder's connection is gone: the lock with it (a killed rebuild never blocks the next).
    # The server ends the holder's backend a moment after the client hangs up: wait for that.
    deadline = time.monotonic() + 10
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [holder])
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.05)
    assert rebuild(["note"], progress=False)[0].status == "done"


@pytest.mark.django_db
def test_stored_events_are_complete_event_instances():
    from django_fluvius.ops.rebuild import stored_events

    make_notes(2, edits=1)
    qs = Event.objects.order_by("position")
    fast, orm = list(stored_events(qs, "default")), list(qs)
    names = [f.attname for f in Event._meta.concrete_fields]
    assert [[getattr(e, n) for n in names] for e in fast] == [[getattr(e, n) for n in names] for e in orm]
    assert all(isinstance(e, Event) and not e._state.adding and e._state.db == "default" for e in fast)
    assert fast[0] == orm[0] and fast[1].payload == {"body": "0.0"}
    with pytest.raises(TypeError, match="append-only"):
        fast[0].save()


@pytest.mark.django_db
def test_list_shows_targets_and_their_last_runs():
    make_notes(2)
    out = io.StringIO()
    call_command("fluvius_rebuild", "test-notes", "--list", stdout=out)
    assert "test-notes.note" in out.getvalue() and "never rebuilt" in out.getvalue()
    rebuild(["note"], progress=False)
    out = io.StringIO()
    call_command("fluvius_rebuild", "note", "--list", stdout=out)
    assert "test-notes.note" in out.getvalue() and "done: 6/6 events" in out.getvalue()
    assert "folder" not in out.getvalue()
