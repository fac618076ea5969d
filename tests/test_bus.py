"""The command bus: one command, one transaction, versions, rejections, the command log."""

import asyncio
import datetime
import uuid

import pytest
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from django_fluvius import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    DomainContext,
    DomainError,
    FluviusError,
)
from django_fluvius.exceptions import WrongResource
from django_fluvius.models import CommandLog, Event
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Folder, Note

pytestmark = pytest.mark.django_db


def create_user(domain=None, name="John Doe", email="john@example.com", **kw):
    domain = domain or UserDomain()
    return domain.process_command(domain.create_command("create-user", {"name": name, "email": email}, **kw))


def counts():
    return Event.objects.count(), User.objects.count(), CommandLog.objects.count()


def test_create_stores_event_projection_and_command_log():
    ctx = DomainContext.create(namespace="app-user", tenant="acme", client_address="10.0.0.1")
    result = create_user(UserDomain(ctx))
    assert isinstance(result.aggregate_id, uuid.UUID)
    assert result.version == 1
    assert result.state == {"name": "John Doe", "email": "john@example.com", "active": True}
    [event] = result.events
    assert event.position is not None and event.version == 1
    stored = Event.objects.get(aggregate_id=result.aggregate_id)
    assert (stored.namespace, stored.resource, stored.evt_key) == ("app-user", "user", "user-created")
    assert stored.payload == result.state
    assert stored.metadata["correlation_id"] == ctx.correlation_id == stored.correlation_id
    assert stored.metadata["command"] == "create-user"
    assert stored.tenant == "acme" and stored.metadata["client_address"] == "10.0.0.1"
    assert stored.command_id == result.command.id
    row = User.objects.get(pk=result.aggregate_id)
    assert (row.name, row.email, row.active, row.version) == ("John Doe", "john@example.com", True, 1)
    log = CommandLog.objects.get()
    assert (log.status, log.command, log.namespace, log.version) == ("done", "create-user", "app-user", 1)
    assert log.aggregate_id == result.aggregate_id and log.payload == {"name": "John Doe", "email": "john@example.com"}
    assert log.duration_ms > 0 and log.correlation_id == ctx.correlation_id


def test_commands_advance_the_version_and_the_projection():
    domain = UserDomain()
    created = create_user(domain)
    renamed = domain.process_command(domain.create_command("rename-user", {"name": "Jo"},
                                                           aggregate_id=created.aggregate_id))
    deactivated = domain.process_command(domain.create_command("deactivate-user", {},
                                                               aggregate_id=str(created.aggregate_id)))
    assert (renamed.version, deactivated.version) == (2, 3)
    assert deactivated.state == {"name": "Jo", "email": "john@example.com", "active": False}
    assert list(Event.objects.filter(aggregate_id=created.aggregate_id).values_list("version", "evt_key")) == [
        (1, "user-created"), (2, "user-renamed"), (3, "user-deactivated")]
    row = User.objects.get(pk=created.aggregate_id)
    assert (row.name, row.active, row.version) == ("Jo", False, 3)
    assert row.created_at < row.updated_at


def test_domain_error_stores_nothing_and_logs_the_rejection():
    domain = UserDomain()
    created = create_user(domain)
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    before = counts()
    with pytest.raises(DomainError, match="already inactive"):
        domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    with pytest.raises(DomainError, match="Invalid email"):
        create_user(domain, email="nope")
    events, users, logs = counts()
    assert (events, users) == before[:2]
    assert logs == before[2] + 2
    rejected = CommandLog.objects.filter(status="rejected").order_by("id")
    assert [(r.command, r.error_code) for r in rejected] == [("deactivate-user", "deactivate-user.user-is-already-inactive"),
                                                             ("create-user", "create-user.invalid-email")]
    assert "already inactive" in rejected[0].error_message
    assert User.objects.get(pk=created.aggregate_id).version == 2


def test_expected_version_is_honoured():
    domain = UserDomain()
    created = create_user(domain)
    ok = domain.process_command(domain.create_command("rename-user", {"name": "A"},
                                                      aggregate_id=created.aggregate_id, expected_version=1))
    assert ok.version == 2
    with pytest.raises(ConcurrencyConflict) as info:
        domain.process_command(domain.create_command("rename-user", {"name": "B"},
                                                     aggregate_id=created.aggregate_id, expected_version=1))
    assert info.value.code == "stale_version"
    assert (info.value.expected_version, info.value.actual_version) == (1, 2)
    assert info.value.status_code == 409
    assert Event.objects.filter(aggregate_id=created.aggregate_id).count() == 2
    assert User.objects.get(pk=created.aggregate_id).name == "A"


def test_unknown_aggregate_is_not_found_and_nothing_is_stored():
    domain = UserDomain()
    with pytest.raises(AggregateNotFound):
        domain.process_command(domain.create_command("rename-user", {"name": "x"}, aggregate_id=uuid.uuid4()))
    assert Event.objects.count() == 0
    assert CommandLog.objects.get().status == "rejected"


def test_aggregate_of_another_domain_is_not_found():
    user = create_user()
    notes = NoteDomain()
    with pytest.raises(AggregateNotFound):
        notes.process_command(notes.create_command("edit-note", {"body": "x"}, aggregate_id=user.aggregate_id))


def test_command_for_another_resource_type_is_refused():
    domain = NoteDomain()
    folder = domain.process_command(domain.create_command("create-folder", {"name": "inbox"}))
    with pytest.raises(WrongResource) as info:
        domain.process_command(domain.create_command("edit-note", {"body": "x"}, aggregate_id=folder.aggregate_id))
    assert isinstance(info.value, FluviusError)
    assert "folder" in str(info.value) and "note" in str(info.value)
    assert Event.objects.filter(aggregate_id=folder.aggregate_id).count() == 1
    # an action that lists no resources applies to every resource type
    touched = domain.process_command(domain.create_command("touch", {}, aggregate_id=folder.aggregate_id))
    assert touched.version == 2 and Folder.objects.get(pk=folder.aggregate_id).version == 2


def test_create_with_a_given_id_and_refusal_when_it_exists():
    domain = UserDomain()
    given = uuid.uuid4()
    result = create_user(domain, aggregate_id=given)
    assert result.aggregate_id == given
    with pytest.raises(ConcurrencyConflict) as info:
        create_user(domain, aggregate_id=given)
    assert info.value.code == "already_exists"
    assert Event.objects.filter(aggregate_id=given).count() == 1


def test_validation_errors_store_nothing():
    domain = UserDomain()
    with pytest.raises(CommandValidationError):
        domain.create_command("create-user", {"name": "x"})
    assert counts() == (0, 0, 0)


def test_apply_and_multiple_resources_project_each_to_its_model():
    domain = NoteDomain()
    note = domain.process_command(domain.create_command(
        "create-note", {"title": "t", "tags": ["a"], "priority": 2, "due": "2026-03-01"}))
    domain.process_command(domain.create_command("edit-note", {"body": "one"}, aggregate_id=note.aggregate_id))
    result = domain.process_command(domain.create_command("edit-note", {"body": "two"},
                                                          aggregate_id=note.aggregate_id))
    assert result.state["edits"] == 2 and result.state["due"] == "2026-03-01"
    row = Note.objects.get(pk=note.aggregate_id)
    assert (row.title, row.body, row.edits, row.tags, row.priority, row.version) == ("t", "two", 2, ["a"], 2, 3)


@pytest.mark.django_db(transaction=True)  # async code runs on another thread, with its own connection
@pytest.mark.usefixtures("close_async_connections")
def test_sync_and_async_actions_and_aprocess_command():
    domain = NoteDomain()
    note = domain.process_command(domain.create_command("create-note", {"title": "t"}))

    async def archive():
        return await domain.aprocess_command(domain.create_command("archive", {}, aggregate_id=note.aggregate_id))

    result = asyncio.run(archive())
    assert result.version == 2 and result.state["archived"] is True
    with pytest.raises(DomainError):
        domain.process_command(domain.create_command("archive", {}, aggregate_id=note.aggregate_id))


def test_inside_an_outer_atomic_block_a_rejection_only_rolls_back_itself():
    domain = UserDomain()
    with transaction.atomic():
        kept = create_user(domain)
        with pytest.raises(DomainError):
            create_user(domain, email="bad")
        also_kept = domain.process_command(domain.create_command("rename-user", {"name": "B"},
                                                                 aggregate_id=kept.aggregate_id))
    assert also_kept.version == 2
    assert Event.objects.count() == 2
    assert User.objects.get(pk=kept.aggregate_id).name == "B"


def test_outer_rollback_takes_the_events_with_it():
    domain = UserDomain()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            create_user(domain)
            raise RuntimeError("the request failed after the command")
    assert counts() == (0, 0, 0)


def test_database_refuses_a_duplicate_version():
    user = create_user()
    duplicate = Event(namespace="app-user", resource="user", aggregate_id=user.aggregate_id, version=1,
                      evt_key="user-renamed", payload={"name": "dup"})
    with pytest.raises(IntegrityError):
        with transaction.atomic():
            Event.objects.bulk_create([duplicate])


def test_events_are_append_only():
    user = create_user()
    event = Event.objects.get(aggregate_id=user.aggregate_id)
    event.payload = {"name": "tampered"}
    with pytest.raises(TypeError, match="append-only"):
        event.save()
    with pytest.raises(TypeError, match="append-only"):
        event.delete()
    with pytest.raises(TypeError, match="append-only"):
        Event.objects.filter(pk=event.pk).update(payload={})
    with pytest.raises(TypeError, match="append-only"):
        Event.objects.all().delete()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_state_manager_fetch_find_and_async_forms():
    domain = UserDomain()
    a = create_user(domain, name="A", email="a@x.io")
    b = create_user(domain, name="B", email="b@x.io")
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=b.aggregate_id))
    assert domain.statemgr.fetch("user", a.aggregate_id).name == "A"
    assert domain.statemgr.fetch("user", str(a.aggregate_id)).name == "A"
    assert [u.name for u in domain.statemgr.find("user", active=True)] == ["A"]
    with pytest.raises(AggregateNotFound):
        domain.statemgr.fetch("user", uuid.uuid4())
    with pytest.raises(AggregateNotFound) as info:
        domain.statemgr.fetch("user", "not-a-uuid")
    assert info.value.code == "invalid_aggregate_id"

    async def read():
        return await domain.statemgr.afetch("user", b.aggregate_id), await domain.statemgr.afind("user", active=False)

    fetched, found = asyncio.run(read())
    assert fetched.name == "B" and [u.name for u in found] == ["B"]


def test_time_travel_by_version_and_time():
    domain = UserDomain()
    created = create_user(domain)
    between = timezone.now()
    domain.process_command(domain.create_command("rename-user", {"name": "Second"}, aggregate_id=created.aggregate_id))
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    now = domain.load(created.aggregate_id)
    assert (now.version, now.state["name"], now.state["active"]) == (3, "Second", False)
    v1 = domain.load(created.aggregate_id, version=1)
    assert (v1.version, v1.state["name"], v1.state["active"]) == (1, "John Doe", True)
    v2 = domain.load(created.aggregate_id, version=2)
    assert (v2.state["name"], v2.state["active"]) == ("Second", True)
    then = domain.load(created.aggregate_id, at=between)
    assert then.version == 1 and then.state["name"] == "John Doe"
    with pytest.raises(AggregateNotFound) as info:
        domain.load(created.aggregate_id, version=9)
    assert "latest is 3" in str(info.value)
    with pytest.raises(AggregateNotFound):
        domain.load(created.aggregate_id, at=between - datetime.timedelta(days=1))
    with pytest.raises(AggregateNotFound):
        domain.load(created.aggregate_id, version=0)
    with pytest.raises(AggregateNotFound):
        domain.load("garbage")


def test_settings_override_takes_effect():
    from django_fluvius.conf import fluvius_settings

    assert fluvius_settings.DISPATCH == "inline"
    with override_settings(FLUVIUS={"DOMAINS": [], "DISPATCH": None, "SNAPSHOT_EVERY": 7}):
        assert fluvius_settings.DISPATCH is None
        assert fluvius_settings.SNAPSHOT_EVERY == 7
    assert fluvius_settings.DISPATCH == "inline"
    with pytest.raises(AttributeError, match="Invalid django-fluvius setting"):
        fluvius_settings.NOT_A_SETTING  # noqa: B018


def test_failed_action_is_logged_as_failed_and_stores_nothing(monkeypatch):
    domain = UserDomain()
    created = create_user(domain)

    def rename_user(self, name):
        raise ZeroDivisionError("bug in user code")

    monkeypatch.setattr(domain.commands()["rename-user"], "func", rename_user)
    monkeypatch.setattr(type(domain).__aggregate__, "rename_user", rename_user)
    with pytest.raises(ZeroDivisionError):
        domain.process_command(domain.create_command("rename-user", {"name": "x"}, aggregate_id=created.aggregate_id))
    assert Event.objects.count() == 1
    assert CommandLog.objects.order_by("-id").first().status == "failed"


def test_new_projection_row_takes_model_defaults_for_fields_the_state_lacks():
    domain = NoteDomain()
    folder = domain.process_command(domain.create_command("create-folder", {"name": "inbox"}))
    note = domain.process_command(domain.create_command("touch", {}, aggregate_id=folder.aggregate_id))
    assert note.version == 2
    # Note.body is a TextField with no default on a Note built from a state without it:
    row = Note(pk=uuid.uuid4())
    from django_fluvius.read.projections import project_inline
    from tests.testapp.domain import NoteAggregate

    aggregate = NoteAggregate(row.pk, "note", version=1, state={"title": "only a title"})
    aggregate.created = aggregate.updated = timezone.now()
    project_inline(Note, aggregate, "default")
    stored = Note.objects.get(pk=row.pk)
    assert (stored.title, stored.body, stored.tags, stored.priority) == ("only a title", "", [], 0)
