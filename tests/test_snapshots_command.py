"""manage.py fluvius_snapshots: list, clear, take and retake snapshots of registered domains."""

import io
import uuid

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from django_fluvius.models import Snapshot
from tests.testapp.domain import NoteDomain

pytestmark = pytest.mark.django_db

NOTES = NoteDomain.__namespace__


def run(*args):
    out = io.StringIO()
    call_command("fluvius_snapshots", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def snapshots_on(every=2):
    """Every aggregate snapshotted every ``every`` events (the registered NoteDomain included)."""
    return override_settings(FLUVIUS={**settings.FLUVIUS, "SNAPSHOT_EVERY": every})


def note(edits: int) -> uuid.UUID:
    domain = NoteDomain()
    result = domain.process_command(domain.create_command("create-note", {"title": "t"}))
    for i in range(edits):
        domain.process_command(domain.create_command("edit-note", {"body": f"b{i}"}, aggregate_id=result.aggregate_id))
    return result.aggregate_id


def versions(aggregate_id) -> list[int]:
    return list(Snapshot.objects.filter(aggregate_id=aggregate_id).order_by("version").values_list("version", flat=True))


def test_list_counts_per_resource():
    with snapshots_on():
        first, second = note(4), note(2)          # versions 5 and 3: snapshots at 2, 4 and at 2
    out = run("list")
    assert f"{NOTES}.note" in out and "       3 snapshots of        2 aggregates" in out
    assert out.strip().endswith("3 snapshots.")
    assert run("list", "--aggregate", str(second)).strip().endswith("1 snapshot.")
    assert versions(first) == [2, 4]


def test_take_folds_every_aggregate_at_its_current_version():
    with snapshots_on(3):
        aggregate_id = note(4)                    # version 5: snapshot at 3
        assert versions(aggregate_id) == [3]
        out = run("take", NOTES)
        assert "Took 1 snapshot." in out
        assert versions(aggregate_id) == [3, 5]
        snapshot = Snapshot.objects.get(aggregate_id=aggregate_id, version=5)
        assert snapshot.state == NoteDomain().load(aggregate_id).state


def test_retake_replaces_a_tampered_snapshot_that_take_would_leave():
    with snapshots_on(3):
        aggregate_id = note(4)
        Snapshot.objects.filter(aggregate_id=aggregate_id, version=3).update(state={"title": "tampered"})
        run("take", NOTES)
        assert Snapshot.objects.get(aggregate_id=aggregate_id, version=3).state["title"] == "tampered"
        out = run("retake", NOTES)
        assert "Deleted 2 snapshots." in out and "Took 1 snapshot." in out
        assert versions(aggregate_id) == [5]
        assert NoteDomain().load(aggregate_id, version=4).state["title"] == "t"
    call_command("fluvius_verify", stdout=io.StringIO())  # no drift left


def test_clear_one_aggregate_or_all():
    with snapshots_on():
        kept, cleared = note(4), note(4)
    assert "Deleted 2 snapshots." in run("clear", NOTES, "--aggregate", str(cleared))
    assert versions(cleared) == [] and versions(kept) == [2, 4]
    assert "Deleted 2 snapshots." in run("clear", "--all")
    assert not Snapshot.objects.exists()


def test_take_refuses_a_domain_without_snapshots_and_all_skips_it_saying_so():
    with snapshots_on():
        aggregate_id = note(2)                    # taken while on; then snapshots are turned off
    with pytest.raises(CommandError, match=f"Snapshots are off for {NOTES}: .* `fluvius_snapshots clear {NOTES}`"):
        run("take", NOTES)
    with pytest.raises(CommandError, match="Snapshots are off"):
        run("retake", NOTES)
    assert versions(aggregate_id) == [2]          # refused before anything was deleted
    out = run("take", "--all")
    assert f"{NOTES}: snapshots off, skipped." in out and "Took 0 snapshots." in out
    assert f"{NOTES}: snapshots off" in run("list", NOTES)
    assert "Deleted 1 snapshot." in run("clear", NOTES)  # leftovers of a domain now off


@pytest.mark.parametrize(("args", "message"), [
    (("clear",), "Name the domain namespaces or --all to clear"),
    (("take",), "Name the domain namespaces or --all to take"),
    (("take", "nope"), "No domain has the namespace 'nope'"),
    (("clear", NOTES, "--all"), "not both"),
    (("clear", NOTES, "--aggregate", "not-a-uuid"), "'not-a-uuid' is not a valid aggregate id"),
])
def test_bad_arguments_are_refused_with_nothing_deleted(args, message):
    with snapshots_on():
        aggregate_id = note(2)
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert versions(aggregate_id) == [2]


def test_verify_reports_a_snapshot_past_the_stream_and_retake_mends_it():
    with snapshots_on(3):
        aggregate_id = note(4)                    # version 5: snapshot at 3
        Snapshot.objects.filter(aggregate_id=aggregate_id, version=3).update(version=30)
        out = io.StringIO()
        with pytest.raises(CommandError, match=f"fluvius_snapshots retake {NOTES}"):
            call_command("fluvius_verify", stdout=out)
        assert "snapshot at version 30 is past the stream's last event (5): loads ignore it" in out.getvalue()
        run("retake", NOTES)
        assert versions(aggregate_id) == [5]
        call_command("fluvius_verify", stdout=io.StringIO())
