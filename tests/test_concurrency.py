"""Racing writers and the aggregate cache: exactly one writer wins, nothing is lost or doubled."""

import threading
import uuid

import pytest
from django.db import close_old_connections, connection

from django_fluvius import ConcurrencyConflict
from django_fluvius.events.store import EventStore
from django_fluvius.models import CommandLog, Event
from django_fluvius.write.cache import aggregate_cache
from example_project.users.domain import UserDomain
from tests.testapp import domain as notes_module
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Note


def in_threads(count, target):
    """Run target(i) in `count` threads, each with its own database connection."""
    outcomes = [None] * count

    def run(i):
        try:
            outcomes[i] = target(i)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            outcomes[i] = exc
        finally:
            close_old_connections()
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


@pytest.fixture
def note():
    domain = NoteDomain()
    result = domain.process_command(domain.create_command("create-note", {"title": "race"}))
    aggregate_cache.clear()
    yield result.aggregate_id
    notes_module.hooks.clear()


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_two_writers_racing_on_a_database_server_exactly_one_wins(note):
    barrier = threading.Barrier(2, timeout=20)
    # Both threads load version 1, then wait for each other inside the action, so
    # both try to append version 2: the database must refuse one of them.
    notes_module.hooks["edit"] = lambda aggregate: barrier.wait()

    def write(i):
        domain = NoteDomain()
        return domain.process_command(domain.create_command("edit-note", {"body": f"writer {i}"},
                                                            aggregate_id=note))

    outcomes = in_threads(2, write)
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1 and len(losses) == 1, outcomes
    assert isinstance(losses[0], ConcurrencyConflict)
    assert losses[0].status_code == 409
    versions = list(Event.objects.filter(aggregate_id=note).order_by("version").values_list("version", flat=True))
    assert versions == [1, 2]
    winner_body = wins[0].state["body"]
    assert Note.objects.get(pk=note).body == winner_body
    assert Event.objects.get(aggregate_id=note, version=2).payload == {"body": winner_body}
    statuses = sorted(CommandLog.objects.filter(command="edit-note").values_list("status", flat=True))
    assert statuses == ["done", "rejected"]


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_many_writers_on_a_database_server_never_duplicate_or_lose_a_version(note):
    def write(i):
        results = []
        domain = NoteDomain()
        for n in range(5):
            try:
                results.append(domain.process_command(
                    domain.create_command("edit-note", {"body": f"{i}-{n}"}, aggregate_id=note)).version)
            except ConcurrencyConflict:
                results.append("conflict")
        return results

    outcomes = in_threads(4, write)
    won = sorted(v for result in outcomes for v in result if v != "conflict")
    versions = list(Event.objects.filter(aggregate_id=note).order_by("version").values_list("version", flat=True))
    assert versions == list(range(1, len(versions) + 1))
    assert won == versions[1:]  # every success is exactly one stored event
    assert Note.objects.get(pk=note).version == versions[-1]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_serialize_on_any_database(note):
    def write(i):
        domain = NoteDomain()
        out = []
        for n in range(5):
            try:
                out.append(domain.process_command(
                    domain.create_command("edit-note", {"body": f"{i}-{n}"}, aggregate_id=note)).version)
            except ConcurrencyConflict:
                out.append("conflict")
        return out

    outcomes = in_threads(3, write)
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    successes = [v for o in outcomes for v in o if v != "conflict"]
    versions = list(Event.objects.filter(aggregate_id=note).order_by("version").values_list("version", flat=True))
    assert versions == list(range(1, len(successes) + 2))
    assert Note.objects.get(pk=note).edits == len(successes)


@pytest.mark.django_db(transaction=True)
def test_cache_is_filled_on_commit_and_skips_reading_the_stream(django_assert_max_num_queries):
    domain = UserDomain()
    created = domain.process_command(domain.create_command("create-user", {"name": "a", "email": "a@b.c"}))
    entry = aggregate_cache.get("default", created.aggregate_id)
    assert entry is not None and entry.version == 1 and entry.state["name"] == "a"
    command = domain.create_command("rename-user", {"name": "b"}, aggregate_id=created.aggregate_id)
    with django_assert_max_num_queries(8) as captured:
        domain.process_command(command)
    selects = [q["sql"] for q in captured.captured_queries if "FROM \"django_fluvius_event\"" in q["sql"]
               and q["sql"].lstrip().upper().startswith("SELECT")]
    assert selects == []  # the stream was not read
    assert aggregate_cache.get("default", created.aggregate_id).version == 2


@pytest.mark.django_db(transaction=True)
def test_stale_cache_from_another_process_is_caught_and_the_command_rerun():
    domain = UserDomain()
    created = domain.process_command(domain.create_command("create-user", {"name": "a", "email": "a@b.c"}))
    assert aggregate_cache.get("default", created.aggregate_id).version == 1
    # Another process appends version 2 (the user is deactivated); our cache still says v1, active.
    Event.objects.bulk_create([Event(namespace="app-user", resource="user", aggregate_id=created.aggregate_id,
                                     version=2, evt_key="user-deactivated", payload={"active": False})])
    renamed = domain.process_command(domain.create_command("rename-user", {"name": "b"},
                                                           aggregate_id=created.aggregate_id))
    assert renamed.version == 3
    assert renamed.state == {"name": "b", "email": "a@b.c", "active": False}
    assert list(Event.objects.filter(aggregate_id=created.aggregate_id).values_list("version", flat=True)) == [1, 2, 3]
    assert CommandLog.objects.filter(command="rename-user").get().status == "done"


@pytest.mark.django_db(transaction=True)
def test_rejection_on_stale_cached_state_is_rechecked_against_the_store():
    domain = UserDomain()
    created = domain.process_command(domain.create_command("create-user", {"name": "a", "email": "a@b.c"}))
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    # Elsewhere the user was reactivated (an event this process never saw).
    Event.objects.bulk_create([Event(namespace="app-user", resource="user", aggregate_id=created.aggregate_id,
                                     version=3, evt_key="user-renamed", payload={"name": "a", "active": True})])
    # The cache says inactive; the truth is active, so deactivating must succeed.
    result = domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=created.aggregate_id))
    assert result.version == 4 and result.state["active"] is False


@pytest.mark.django_db(transaction=True)
def test_expected_version_against_stale_cache_uses_the_store():
    domain = UserDomain()
    created = domain.process_command(domain.create_command("create-user", {"name": "a", "email": "a@b.c"}))
    Event.objects.bulk_create([Event(namespace="app-user", resource="user", aggregate_id=created.aggregate_id,
                                     version=2, evt_key="user-renamed", payload={"name": "elsewhere"})])
    # A client that saw version 2 (through the API) is right, even though our cache says 1.
    result = domain.process_command(domain.create_command("rename-user", {"name": "c"},
                                                          aggregate_id=created.aggregate_id, expected_version=2))
    assert result.version == 3
    with pytest.raises(ConcurrencyConflict):
        domain.process_command(domain.create_command("rename-user", {"name": "d"},
                                                     aggregate_id=created.aggregate_id, expected_version=2))


@pytest.mark.django_db(transaction=True)
def test_rolled_back_commands_never_reach_the_cache():
    from django.db import transaction

    domain = UserDomain()
    aggregate_id = uuid.uuid4()
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            domain.process_command(domain.create_command("create-user", {"name": "a", "email": "a@b.c"},
                                                         aggregate_id=aggregate_id))
            raise RuntimeError
    assert aggregate_cache.get("default", aggregate_id) is None
    assert EventStore().current_version(aggregate_id) == 0


def test_cache_size_zero_turns_it_off(settings):
    aggregate_cache.clear()
    settings.FLUVIUS = {**settings.FLUVIUS, "AGGREGATE_CACHE_SIZE": 0}
    key = uuid.uuid4()
    aggregate_cache.put("default", key, "ns", "r", 1, {}, None, None)
    assert len(aggregate_cache) == 0
    assert aggregate_cache.get("default", key) is None


def test_cache_evicts_least_recently_used(settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "AGGREGATE_CACHE_SIZE": 2}
    aggregate_cache.clear()
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for key in (a, b):
        aggregate_cache.put("default", key, "ns", "r", 1, {"k": str(key)}, None, None)
    assert aggregate_cache.get("default", a) is not None  # a is now the most recent
    aggregate_cache.put("default", c, "ns", "r", 1, {}, None, None)
    assert aggregate_cache.get("default", b) is None
    assert aggregate_cache.get("default", a).state == {"k": str(a)}
    # an older version never replaces a newer one
    aggregate_cache.put("default", a, "ns", "r", 5, {"v": 5}, None, None)
    aggregate_cache.put("default", a, "ns", "r", 4, {"v": 4}, None, None)
    assert aggregate_cache.get("default", a).version == 5


@pytest.mark.django_db(transaction=True)
def test_cached_state_keeps_its_python_types_and_cannot_be_mutated():
    import decimal

    key = uuid.uuid4()
    state = {"total": decimal.Decimal("1.50"), "items": [{"n": 1}]}
    aggregate_cache.put("default", key, "ns", "r", 1, state, None, None)
    state["items"].append({"n": 2})  # the caller's later change does not reach the cache
    first = aggregate_cache.get("default", key).state
    assert first == {"total": decimal.Decimal("1.50"), "items": [{"n": 1}]}
    first["items"].clear()  # nor does a reader's
    assert aggregate_cache.get("default", key).state["items"] == [{"n": 1}]


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_first_commands_of_a_fresh_process_at_once_all_commit():
    """A fresh process's first commands create its subscriptions' checkpoints in their transactions.

    On MariaDB, concurrent inserts of the same unique checkpoint names deadlock (InnoDB's
    duplicate-key locks), and InnoDB rolls a whole transaction back: the bus runs it again.
    Found by the live stream test (tests/test_stream_live.py), whose first three commands
    against a new uvicorn lost two of them to it.
    """
    from django_fluvius.delivery import dispatch
    from django_fluvius.models import Checkpoint

    writers = 4
    domain = NoteDomain()
    notes = [domain.process_command(domain.create_command("create-note", {"title": f"n{i}"})).aggregate_id
             for i in range(writers)]
    names = {sub.name for sub in dispatch.declared()}
    assert len(names) >= 2  # several checkpoints per transaction: what makes the deadlock
    for round_ in range(4):
        # As in a process that has just started: no checkpoint yet, none ensured.
        Checkpoint.objects.all().delete()
        dispatch._ensured.clear()
        dispatch._ensured_at.clear()
        barrier = threading.Barrier(writers, timeout=20)
        met: set[int] = set()

        def meet(aggregate, barrier=barrier, met=met):
            if threading.get_ident() not in met:  # a run again does not wait for the others
                met.add(threading.get_ident())
                barrier.wait()

        notes_module.hooks["edit"] = meet

        def write(i, round_=round_):
            edit = NoteDomain()
            return edit.process_command(edit.create_command("edit-note", {"body": f"{round_}-{i}"},
                                                            aggregate_id=notes[i])).version

        try:
            outcomes = in_threads(writers, write)
        finally:
            notes_module.hooks.clear()
        assert outcomes == [round_ + 2] * writers, outcomes
        assert set(Checkpoint.objects.values_list("name", flat=True)) == names
    assert Event.objects.filter(evt_key="note-edited").count() == 4 * writers
