"""Upcasting and renames: old events read in the current shape; bad events give
a clear EventDecodeError naming the aggregate, version and key; system checks
report stored keys no code knows."""

import json
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection
from django.utils import timezone

from django_fluvius import Aggregate, Domain, action, apply
from django_fluvius.events.store import EventStore
from django_fluvius.events.upcasting import (
    UpcasterRegistry,
    check_stored_event_types,
    check_upcasters,
    registry,
    rename_event,
    upcaster,
)
from django_fluvius.exceptions import EventDecodeError
from django_fluvius.models import CommandLog, Event
from tests.testapp.domain import NoteDomain

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test declares its own upcasters and renames on the global registry."""
    saved = ({k: dict(v) for k, v in registry._upcasters.items()}, dict(registry._current),
             dict(registry._aliases))
    yield registry
    registry._upcasters, registry._current, registry._aliases = saved


def store_event(aggregate_id, version, evt_key, payload, *, schema_version=1, namespace="test-notes",
                resource="note"):
    """An event as older code wrote it (straight into the table)."""
    return Event.objects.create(namespace=namespace, resource=resource, aggregate_id=aggregate_id,
                                version=version, evt_key=evt_key, payload=payload,
                                schema_version=schema_version, created=timezone.now())


# -- upcasters ----------------------------------------------------------------------


def test_old_payload_is_upcast_when_read():
    @upcaster("note-created", version=1)
    def heading_to_title(payload):
        payload["title"] = payload.pop("heading")
        return payload

    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"heading": "old", "body": "b"})
    loaded = NoteDomain().load(agg)
    assert loaded.state["title"] == "old" and "heading" not in loaded.state
    event = EventStore().stream(agg)[0]
    assert (event.schema_version, event.stored_as) == (2, ("note-created", 1))
    assert [e.payload for e in EventStore().read_all(evt_keys=["note-created"])] == [{"title": "old", "body": "b"}]
    # The stored row is untouched.
    assert Event.objects.get(aggregate_id=agg).payload == {"heading": "old", "body": "b"}


def test_new_events_are_written_at_the_current_schema_version():
    domain = NoteDomain()
    before = domain.process_command(domain.create_command("create-note", {"title": "a"}))
    assert before.events[0].schema_version == 1

    @upcaster("note-created", version=1)
    def v1(payload):
        return payload

    @upcaster("note-created", version=2)
    def v2(payload):
        return payload

    after = domain.process_command(domain.create_command("create-note", {"title": "b"}))
    assert Event.objects.get(aggregate_id=after.aggregate_id).schema_version == 3
    assert registry.current_version("test-notes", "note-created") == 3
    assert registry.current_version("test-notes", "note-edited") == 1


def test_chain_of_upcasters_runs_in_order_and_may_read_the_event():
    @upcaster("note-created", version=1)
    def v1(payload):
        return {**payload, "tags": payload.get("labels", "").split(",")}

    @upcaster("note-created", version=2)
    def v2(payload, event):
        return {**payload, "title": f"{payload['title']} (v{event.schema_version} at {event.version})"}

    agg, agg2 = uuid.uuid4(), uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "one", "labels": "a,b"}, schema_version=1)
    store_event(agg2, 1, "note-created", {"title": "two", "tags": ["x"]}, schema_version=2)
    one, two = NoteDomain().load(agg), NoteDomain().load(agg2)
    assert one.state["tags"] == ["a", "b"] and one.state["title"] == "one (v1 at 1)"
    assert two.state["tags"] == ["x"] and two.state["title"] == "two (v2 at 1)"


def test_upcasting_is_namespace_scoped_when_asked():
    @upcaster("note-created", version=1, namespace="other-ns")
    def elsewhere(payload):
        return {**payload, "title": "CHANGED"}

    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "kept"})
    assert NoteDomain().load(agg).state["title"] == "kept"
    assert registry.current_version("test-notes", "note-created") == 1
    assert registry.current_version("other-ns", "note-created") == 2


# -- renames ------------------------------------------------------------------------


def test_renamed_key_is_read_under_its_new_name():
    rename_event("note-rewritten", "note-edited")
    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    store_event(agg, 2, "note-rewritten", {"body": "b"})
    loaded = NoteDomain().load(agg)
    assert loaded.state["body"] == "b" and loaded.state["edits"] == 1  # the @apply of note-edited ran
    events = EventStore().read_all(evt_keys=["note-edited"])
    assert [(e.evt_key, e.stored_as) for e in events] == [("note-edited", ("note-rewritten", 1))]
    # A command on top of the renamed history works and appends the new key.
    domain = NoteDomain()
    result = domain.process_command(domain.create_command("edit-note", {"body": "c"}, aggregate_id=agg))
    assert result.version == 3 and result.state["edits"] == 2


def test_rename_then_upcast():
    rename_event("note-rewritten", "note-edited")

    @upcaster("note-edited", version=1)
    def text_to_body(payload):
        return {"body": payload["text"]}

    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    store_event(agg, 2, "note-rewritten", {"text": "from text"})
    assert NoteDomain().load(agg).state["body"] == "from text"


def test_chained_renames_resolve_to_the_last_name():
    rename_event("note-written", "note-rewritten")
    rename_event("note-rewritten", "note-edited")
    assert registry.resolve("test-notes", "note-written") == "note-edited"
    assert set(registry.stored_keys(["note-edited"])) == {"note-edited", "note-rewritten", "note-written"}


# -- the registry refuses what cannot work -------------------------------------------


def test_registry_refuses_duplicates_and_cycles():
    reg = UpcasterRegistry()
    reg.register("a", 1, lambda p: p)
    with pytest.raises(ImproperlyConfigured, match="already registered"):
        reg.register("a", 1, lambda p: {**p})
    with pytest.raises(ImproperlyConfigured, match="integer >= 1"):
        reg.register("a", 0, lambda p: p)
    reg.rename("old", "new")
    reg.rename("old", "new")  # the same declaration twice is harmless
    with pytest.raises(ImproperlyConfigured, match="already renamed"):
        reg.rename("old", "other")
    with pytest.raises(ImproperlyConfigured, match="cycle"):
        reg.rename("new", "old")
    with pytest.raises(ImproperlyConfigured, match="under the new key"):
        reg.register("old", 1, lambda p: p)
    with pytest.raises(ImproperlyConfigured, match="register them under its new key"):
        reg.rename("a", "b")
    with pytest.raises(ImproperlyConfigured):
        reg.rename("same", "same")


def test_reimporting_the_same_upcaster_is_harmless():
    reg = UpcasterRegistry()

    def step(payload):
        return payload

    reg.register("a", 1, step)
    reg.register("a", 1, step)
    assert reg.current_version(None, "a") == 2


# -- bad input: a clear error, never silent wrong state -------------------------------


def assert_names_the_event(exc, agg, version, evt_key):
    message = str(exc.value)
    assert str(agg) in message and f"version {version}" in message and repr(evt_key) in message
    assert exc.value.details["aggregate_id"] == str(agg)
    assert exc.value.details["version"] == version
    assert exc.value.details["evt_key"] == evt_key


@pytest.mark.parametrize("payload", ["a string", [1, 2], None, 42])
def test_corrupt_payload(payload):
    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    store_event(agg, 2, "note-edited", {"body": "x"})
    # Corrupt the stored payload behind the ORM's back (events are append-only), as a bad script would.
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Event._meta.db_table} SET payload = %s WHERE aggregate_id = %s AND version = 2",
                       [json.dumps(payload), agg.hex if connection.vendor == "sqlite" else agg])
    with pytest.raises(EventDecodeError, match="not a JSON object") as exc:
        NoteDomain().load(agg)
    assert_names_the_event(exc, agg, 2, "note-edited")


def test_unknown_event_key_refuses_the_load_and_the_command():
    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    store_event(agg, 2, "note-teleported", {"where": "moon"})
    with pytest.raises(EventDecodeError, match="no action or @apply") as exc:
        NoteDomain().load(agg)
    assert_names_the_event(exc, agg, 2, "note-teleported")
    domain = NoteDomain()
    with pytest.raises(EventDecodeError):
        domain.process_command(domain.create_command("edit-note", {"body": "x"}, aggregate_id=agg))
    assert Event.objects.filter(aggregate_id=agg).count() == 2  # nothing stored
    assert CommandLog.objects.filter(aggregate_id=agg).get().status == "rejected"


def test_old_schema_without_an_upcaster():
    @upcaster("note-created", version=2)
    def v2(payload):
        return payload

    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"}, schema_version=1)
    with pytest.raises(EventDecodeError, match="no upcaster turns 'note-created' schema v1 into v2") as exc:
        NoteDomain().load(agg)
    assert_names_the_event(exc, agg, 1, "note-created")


def test_schema_newer_than_the_code():
    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"}, schema_version=4)
    with pytest.raises(EventDecodeError, match="newer than this code") as exc:
        NoteDomain().load(agg)
    assert_names_the_event(exc, agg, 1, "note-created")


def test_failing_upcaster_and_one_returning_junk():
    @upcaster("note-created", version=1)
    def broken(payload):
        return {**payload, "title": payload["missing"]}

    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    with pytest.raises(EventDecodeError, match="upcaster .*broken.* failed: KeyError") as exc:
        NoteDomain().load(agg)
    assert_names_the_event(exc, agg, 1, "note-created")
    registry.unregister("note-created", 1)

    @upcaster("note-created", version=1)
    def junk(payload):
        return ["not", "a", "dict"]

    with pytest.raises(EventDecodeError, match="returned a list"):
        NoteDomain().load(agg)


# -- system checks --------------------------------------------------------------------


def check_ids(messages):
    return sorted(m.id for m in messages)


def test_check_reports_stored_keys_no_code_knows():
    agg = uuid.uuid4()
    store_event(agg, 1, "note-created", {"title": "t"})
    store_event(agg, 2, "note-teleported", {})
    store_event(uuid.uuid4(), 1, "ghost-created", {}, namespace="retired-ns")
    messages = check_stored_event_types(databases=["default"])
    assert check_ids(messages) == ["fluvius.E050", "fluvius.W050"]
    e050 = next(m for m in messages if m.id == "fluvius.E050")
    assert "'note-teleported'" in e050.msg and "test-notes" in e050.msg
    # Without the database (a plain `manage.py check`) the check stays quiet.
    assert check_stored_event_types(databases=None) == []
    with pytest.raises(SystemCheckError, match="fluvius.E050"):
        call_command("check", databases=["default"])
    # A rename makes the key known.
    rename_event("note-teleported", "note-edited")
    assert check_ids(check_stored_event_types(databases=["default"])) == ["fluvius.W050"]


def test_check_reports_schema_versions_without_upcasters_and_newer_ones():
    @upcaster("note-created", version=2)
    def v2(payload):
        return payload

    store_event(uuid.uuid4(), 1, "note-created", {"title": "t"}, schema_version=1)
    store_event(uuid.uuid4(), 1, "note-created", {"title": "t"}, schema_version=9)
    store_event(uuid.uuid4(), 1, "note-created", {"title": "t"}, schema_version=3)
    assert check_ids(check_stored_event_types(databases=["default"])) == ["fluvius.E051", "fluvius.E052"]


def test_declaration_checks():
    assert check_upcasters() == []
    rename_event("note-edited", "note-created")  # an action still writes note-edited
    rename_event("note-retitled", "note-retyped")  # renamed to a key nobody knows

    @upcaster("note-created", version=1)
    def v1(payload):
        return payload

    @upcaster("note-created", version=3)
    def v3(payload):
        return payload

    @upcaster("nobody-knows", version=1)
    def stray(payload):
        return payload

    assert check_ids(check_upcasters()) == ["fluvius.E053", "fluvius.E054", "fluvius.W051", "fluvius.W052"]


class LegacyAggregate(Aggregate):
    """An aggregate that still folds a key no action writes any more, through @apply."""

    @action(evt_key="thing-made", resources=["note"], create=True)
    def make(self, title: str):
        return {"title": title}

    @apply("thing-legacy-flagged")
    def _flag(self, state, event):
        return {**state, "flagged": True}


class LegacyDomain(Domain):
    __aggregate__ = LegacyAggregate
    __namespace__ = "test-legacy"
    __resources__ = {"note": "testapp.Note"}


def test_apply_only_keys_are_known():
    agg = uuid.uuid4()
    store_event(agg, 1, "thing-made", {"title": "t"}, namespace="test-legacy")
    store_event(agg, 2, "thing-legacy-flagged", {}, namespace="test-legacy")
    assert LegacyDomain().load(agg).state == {"title": "t", "flagged": True}
