"""fluvius_stream, fluvius_verify and fluvius_inspect."""

import io
import json
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_fluvius import event_handler
from django_fluvius.delivery.handlers import handlers
from django_fluvius.events.upcasting import fold_fingerprint, registry, rename_event, upcaster
from django_fluvius.models import Event, Snapshot
from django_fluvius.ops.inspection import verify
from tests.testapp.domain import NoteAggregate, NoteDomain
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_registry():
    saved = ({k: dict(v) for k, v in registry._upcasters.items()}, dict(registry._current),
             dict(registry._aliases))
    yield
    registry._upcasters, registry._current, registry._aliases = saved


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def note_with_history():
    domain = NoteDomain()
    result = domain.process_command(domain.create_command("create-note", {"title": "t", "tags": ["a"]}))
    domain.process_command(domain.create_command("edit-note", {"body": "one"}, aggregate_id=result.aggregate_id))
    domain.process_command(domain.create_command("edit-note", {"body": "two"}, aggregate_id=result.aggregate_id))
    return result.aggregate_id


# -- fluvius_stream -------------------------------------------------------------------


def test_stream_prints_each_event_and_the_state_after_it():
    agg = note_with_history()
    text = run("fluvius_stream", str(agg))
    assert f"test-notes note {agg}: 3 event(s)" in text
    lines = text.splitlines()
    assert lines[1].startswith("v1 note-created") and lines[4].startswith("v2 note-edited")
    assert '"edits": 1' in lines[6] and '"body": "one"' in lines[6]
    assert '"edits": 2' in lines[9] and '"body": "two"' in lines[9]


def test_stream_json_and_upto():
    agg = note_with_history()
    document = json.loads(run("fluvius_stream", str(agg), "--json", "--upto", "2"))
    assert document["namespace"] == "test-notes" and document["resource"] == "note"
    assert [e["version"] for e in document["events"]] == [1, 2]
    assert document["events"][1]["payload"] == {"body": "one"}
    assert document["events"][1]["state"]["edits"] == 1
    assert document["events"][0]["state"]["tags"] == ["a"]


def test_stream_shows_what_was_stored_before_upcasting_and_renames():
    agg = uuid.uuid4()
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=agg, version=1,
                         evt_key="note-created", payload={"heading": "old"})
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=agg, version=2,
                         evt_key="note-rewritten", payload={"body": "b"})

    @upcaster("note-created", version=1)
    def heading(payload):
        return {"title": payload.pop("heading"), **payload}

    rename_event("note-rewritten", "note-edited")
    text = run("fluvius_stream", str(agg))
    assert "v1 note-created (stored as note-created v1)" in text
    assert "v2 note-edited (stored as note-rewritten v1)" in text
    assert '"title": "old"' in text


def test_stream_errors_are_clear():
    with pytest.raises(CommandError, match="No events are stored for aggregate"):
        run("fluvius_stream", str(uuid.uuid4()))
    with pytest.raises(CommandError, match="not a valid aggregate id"):
        run("fluvius_stream", "not-a-uuid")
    ghost = uuid.uuid4()
    Event.objects.create(namespace="retired", resource="x", aggregate_id=ghost, version=1, evt_key="x", payload={})
    with pytest.raises(CommandError, match="namespace 'retired', which no registered domain declares"):
        run("fluvius_stream", str(ghost))
    agg = note_with_history()
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=agg, version=4,
                         evt_key="note-exploded", payload={})
    with pytest.raises(CommandError, match=f"'note-exploded' .*at version 4 of test-notes aggregate {agg}"):
        run("fluvius_stream", str(agg))


# -- fluvius_verify -------------------------------------------------------------------


def test_verify_passes_on_a_consistent_store():
    note_with_history()
    note_with_history()
    text = run("fluvius_verify")
    assert "6 events decoded, 2 aggregates folded, 2 rows" in text
    assert "No drift" in text


def test_verify_reports_each_kind_of_drift():
    domain = NoteDomain()
    tampered, missing, stale, broken = (note_with_history() for _ in range(4))
    Note.objects.filter(pk=tampered).update(body="edited by hand", tags=["z"])
    Note.objects.filter(pk=missing).delete()
    Note.objects.filter(pk=stale).update(version=2)
    orphan = Note.objects.create(id=uuid.uuid4(), title="orphan", version=1)
    Event.objects.create(namespace="test-notes", resource="note", aggregate_id=broken, version=4,
                         evt_key="note-exploded", payload={})
    snapped = note_with_history()
    Snapshot.objects.create(aggregate_id=snapped, namespace="test-notes", resource="note", version=2,
                            state={"title": "wrong"}, fingerprint=fold_fingerprint(NoteAggregate, "test-notes"))
    assert domain.load(snapped).version == 3

    report = verify()
    assert dict(report.counts) == {"field": 2, "missing_row": 1, "stale_row": 1, "extra_row": 1,
                                   "undecodable": 1, "snapshot": 1, "event_type": 1}
    by_kind = {(d.kind, d.aggregate_id): d.message for d in report.drifts}
    assert sorted(d.message for d in report.drifts if d.kind == "field") == [
        "body: row has 'edited by hand', events give 'two'", 'tags: row has ["z"], events give ["a"]']
    assert ("missing_row", str(missing)) in by_kind
    assert by_kind[("stale_row", str(stale))] == "row at version 2, events at 3"
    assert ("extra_row", str(orphan.pk)) in by_kind
    assert "note-exploded" in by_kind[("undecodable", str(broken))]
    # Which keys differ: the title, and the fields the tampered state lacks.
    assert by_kind[("snapshot", str(snapped))] == (
        "snapshot at version 2 differs from the folded state in: archived, body, due, edits, priority, tags, title")
    assert report.targets["snapshot"] == {"test-notes.note"}
    with pytest.raises(CommandError, match="Drift found: 8 problem"):
        run("fluvius_verify")


def test_verify_advises_what_mends_the_drift_it_found():
    """A snapshot is a cache: rebuilding projections does not mend it, and the advice says so."""
    snapped = note_with_history()
    Snapshot.objects.create(aggregate_id=snapped, namespace="test-notes", resource="note", version=2,
                            state={"title": "wrong"}, fingerprint=fold_fingerprint(NoteAggregate, "test-notes"))
    with pytest.raises(CommandError) as snapshot_only:
        run("fluvius_verify")
    said = str(snapshot_only.value)
    # Snapshots are off for test-notes (the stored one is a leftover): delete, not retake.
    assert "Snapshots are a cache: delete them and take new ones from the events, " in said
    assert "`manage.py fluvius_snapshots clear test-notes`" in said and "retake" not in said
    assert "fluvius_rebuild" not in said
    with override_settings(FLUVIUS={**settings.FLUVIUS, "SNAPSHOT_EVERY": 50}), pytest.raises(CommandError) as on:
        run("fluvius_verify")
    assert "`manage.py fluvius_snapshots retake test-notes`" in str(on.value)
    Note.objects.filter(pk=note_with_history()).update(title="edited by hand")
    with pytest.raises(CommandError) as both:
        run("fluvius_verify")
    assert "Drift found: 2 problem(s)" in str(both.value)
    assert str(both.value).count("fluvius_rebuild") == 1 and "fluvius_snapshots clear" in str(both.value)


def test_verify_json_and_targets():
    agg = note_with_history()
    Note.objects.filter(pk=agg).update(title="x")
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("fluvius_verify", "--json", stdout=out)
    document = json.loads(out.getvalue())
    assert document["ok"] is False and document["drift_counts"] == {"field": 1}
    assert document["drifts"][0]["target"] == "test-notes.note"
    # A target without drift passes on its own.
    assert "No drift" in run("fluvius_verify", "test-notes.folder")


def test_verify_then_rebuild_fixes_the_drift():
    agg = note_with_history()
    Note.objects.filter(pk=agg).update(title="x", edits=0)
    assert not verify().ok
    call_command("fluvius_rebuild", "note", "--no-progress", stdout=io.StringIO())
    assert verify().ok


# -- fluvius_inspect ------------------------------------------------------------------


@pytest.fixture
def a_handler():
    @event_handler("note-edited", namespace="test-notes", name="tests.inspect.on_edit")
    def on_edit(event):
        return None

    yield on_edit
    handlers.unregister("tests.inspect.on_edit")


def test_inspect_json_lists_everything(a_handler):
    note_with_history()

    @upcaster("note-edited", version=1)
    def v1(payload):
        return payload

    rename_event("note-rewritten", "note-edited")
    data = json.loads(run("fluvius_inspect", "--json", "--counts"))
    assert set(data) == {"domains", "commands", "events", "handlers", "projections"}
    notes = next(d for d in data["domains"] if d["namespace"] == "test-notes")
    assert notes["resources"] == {"note": "testapp.Note", "folder": "testapp.Folder"}
    assert notes["aggregate"] == "tests.testapp.domain.NoteAggregate"
    archive = next(c for c in data["commands"] if c["namespace"] == "test-notes" and c["command"] == "archive")
    assert archive == {"namespace": "test-notes", "command": "archive", "evt_key": "note-archived",
                       "resources": ["note"], "create": False, "async": True, "fields": [],
                       "method": "archive_note"}
    edited = next(e for e in data["events"] if (e["namespace"], e["evt_key"]) == ("test-notes", "note-edited"))
    assert edited["applied_by"] == "_edited" and edited["produced_by"] == ["edit-note"]
    assert edited["schema_version"] == 2 and list(edited["upcasters"]) == ["v1"]
    assert edited["renamed_from"] == ["note-rewritten"]
    assert edited["handlers"] == ["tests.inspect.on_edit"] and edited["stored"] == 2
    assert {"name": "tests.inspect.on_edit", "evt_keys": ["note-edited"], "namespace": "test-notes",
            "ordered": False, "async": False} in data["handlers"]
    note_projection = next(p for p in data["projections"] if p["name"] == "test-notes.note")
    assert note_projection["model"] == "testapp.Note" and note_projection["rows"] == 1


def test_inspect_text_sections(a_handler):
    text = run("fluvius_inspect", "commands", "handlers")
    assert text.startswith("Commands (")
    assert "create-note" in text and "note-created" in text and "tests.inspect.on_edit" in text
    assert "Domains (" not in text
    with pytest.raises(CommandError, match="Unknown section"):
        run("fluvius_inspect", "widgets")
