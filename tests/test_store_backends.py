"""The shared store suite: one set of event-store tests that every supported database passes.

Each test runs on SQLite, PostgreSQL and MariaDB in the same run (aliases ``store_*`` of
tests/settings.py), whatever ``DATABASE_URL`` chose for the rest of the suite: appending and
reading streams, the version constraint, the hot SQL's insert and upsert, and the feed's
commit order with two connections committing out of order.
"""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from django_fluvius.events import sql
from django_fluvius.events.feed import ORIGIN, Feed
from django_fluvius.events.store import EventStore
from django_fluvius.models import Event
from tests.testapp.models import Membership, Note

BACKENDS = {"sqlite": "store_sqlite", "postgresql": "store_postgresql", "mariadb": "store_mariadb"}
ALL_STORES = [alias for alias in BACKENDS.values() if alias in settings.DATABASES]


@pytest.fixture(params=list(BACKENDS), ids=list(BACKENDS))
def alias(request):
    name = BACKENDS[request.param]
    if name not in settings.DATABASES:
        pytest.skip(f"{request.param}: server not reachable or driver not installed (tests/settings.py)")
    return name


pytestmark = [pytest.mark.django_db(transaction=True, databases=ALL_STORES)]


def event(aggregate_id: uuid.UUID, version: int, payload: dict | None = None, key: str = "note-created") -> Event:
    return Event(namespace="test-notes", resource="note", aggregate_id=aggregate_id, version=version,
                 evt_key=key, payload=payload if payload is not None else {"n": version})


def test_append_then_read_the_stream_in_version_order(alias):
    store = EventStore(alias)
    stream = uuid.uuid4()
    payload = {"title": "Grüße 🌊", "nested": {"list": [1, 2.5, None, True]}, "price": Decimal("12.50"),
               "at": timezone.now()}
    appended = store.append([event(stream, 1, payload), event(stream, 2, key="note-edited"),
                             event(uuid.uuid4(), 1)])
    assert all(e.position for e in appended) and appended[0].position < appended[1].position
    read = list(store.stream(stream))
    assert [(e.version, e.evt_key) for e in read] == [(1, "note-created"), (2, "note-edited")]
    assert read[0].payload["title"] == "Grüße 🌊" and read[0].payload["nested"] == payload["nested"]
    assert read[0].payload["price"] == "12.50"  # the encoder's text form, the same everywhere
    assert store.current_version(stream) == 2 and store.current_version(uuid.uuid4()) == 0
    assert store.version_taken(stream, 2) and not store.version_taken(stream, 3)
    assert store.head(stream).version == 1  # the first event: its namespace and resource


def test_a_taken_version_is_refused_and_nothing_of_the_batch_is_stored(alias):
    store = EventStore(alias)
    stream, other = uuid.uuid4(), uuid.uuid4()
    store.append([event(stream, 1)])
    with pytest.raises(IntegrityError), transaction.atomic(using=alias):
        store.append([event(other, 1), event(stream, 1)])  # the second collides
    assert not store.events.filter(aggregate_id=other).exists()
    assert store.events.filter(aggregate_id=stream).count() == 1


def test_read_all_pages_by_position(alias):
    store = EventStore(alias)
    stream = uuid.uuid4()
    store.append([event(stream, v) for v in range(1, 6)])
    first = list(store.read_all(limit=2))
    rest = list(store.read_all(after_position=first[-1].position, limit=10))
    assert [e.version for e in first + rest] == [1, 2, 3, 4, 5]


def test_upsert_inserts_then_updates_by_primary_key(alias):
    pk = uuid.uuid4()
    now = timezone.now()
    values = {"version": 1, "created_at": now.isoformat(), "updated_at": now.isoformat(), "title": "a",
              "body": "", "tags": ["x"], "priority": 0, "edits": 0, "archived": False, "due": None}
    sql.upsert(Note, pk, values, alias)
    sql.upsert(Note, pk, {**values, "version": 2, "title": "b"}, alias, update=["version", "title"])
    row = Note.objects.using(alias).get(pk=pk)
    assert (row.version, row.title) == (2, "b")


def test_upsert_on_a_table_with_another_unique_key_raises_instead_of_updating_that_row(alias):
    # MariaDB's ON DUPLICATE KEY UPDATE would update the *other* row here; PostgreSQL raises.
    ann = User.objects.db_manager(alias).create_user("ann")
    taken = Membership.objects.using(alias).create(user=ann, tenant="t1")
    with pytest.raises(IntegrityError), transaction.atomic(using=alias):
        sql.upsert(Membership, taken.pk + 1000, {"user_id": ann.pk, "tenant": "t1"}, alias)
    assert list(Membership.objects.using(alias).values_list("pk", "tenant")) == [(taken.pk, "t1")]
    sql.upsert(Membership, taken.pk, {"user_id": ann.pk, "tenant": "t2"}, alias)
    assert Membership.objects.using(alias).get().tenant == "t2"


def test_a_write_batch_sets_the_primary_keys_of_what_it_inserted(alias):
    batch = sql.WriteBatch(alias)
    stream = uuid.uuid4()
    first, second = event(stream, 1), event(stream, 2)
    batch.insert(first)
    batch.insert(second)
    now = timezone.now().isoformat()
    batch.upsert(Note, stream, {"version": 2, "created_at": now, "updated_at": now, "title": "t", "body": "",
                                "tags": [], "priority": 0, "edits": 0, "archived": False, "due": None})
    with transaction.atomic(using=alias):
        batch.flush()
    assert first.position and second.position > first.position
    assert Note.objects.using(alias).get(pk=stream).version == 2


def test_two_writers_racing_for_one_version_exactly_one_wins(alias):
    stream = uuid.uuid4()
    EventStore(alias).append([event(stream, 1)])
    barrier = threading.Barrier(2, timeout=20)
    outcomes: list[object] = []

    def write(i):
        try:
            barrier.wait()
            with transaction.atomic(using=alias):
                EventStore(alias).append([event(stream, 2, {"writer": i})])
            outcomes.append("won")
        except IntegrityError as exc:
            outcomes.append(exc)
        finally:
            connections[alias].close()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes.count("won") == 1 and len(outcomes) == 2, outcomes
    assert EventStore(alias).events.filter(aggregate_id=stream).count() == 2


def test_the_feed_skips_nothing_when_two_connections_commit_out_of_order(alias):
    """Writer A inserts first and commits last; B inserts second and tries to commit first.

    On PostgreSQL B commits first and the feed's bound holds back until A ends; on
    MariaDB (the clock) and SQLite (the write lock) B waits for A. Either way a reader
    that saves how far it got, reading while both run, sees every event exactly once.
    """
    feed = Feed(alias)
    a_inserted, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    ids = {"a": uuid.uuid4(), "b": uuid.uuid4()}

    def writer_a():
        try:
            with transaction.atomic(using=alias):
                EventStore(alias).append([event(ids["a"], 1)])
                a_inserted.set()
                assert release.wait(20)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)
        finally:
            connections[alias].close()

    def writer_b():
        try:
            assert a_inserted.wait(20)
            with transaction.atomic(using=alias):
                EventStore(alias).append([event(ids["b"], 1)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections[alias].close()

    seen: list[uuid.UUID] = []
    checkpoint = ORIGIN

    def catch_up():
        nonlocal checkpoint
        events = feed.read(checkpoint, feed.bound(), decode=False)
        seen.extend(e.aggregate_id for e in events)
        if events:
            checkpoint = feed.key(events[-1])

    a = threading.Thread(target=writer_a)
    a.start()
    assert a_inserted.wait(20)
    b = threading.Thread(target=writer_b)
    b.start()
    b.join(1.0)  # B committed (PostgreSQL) or waits (MariaDB, SQLite)
    catch_up()
    assert seen == [], "nothing may be passed while A, below B, is still open"
    release.set()
    a.join(30)
    b.join(30)
    assert not errors, errors
    catch_up()
    assert sorted(seen) == sorted(ids.values()) and len(seen) == 2
    assert feed.read(checkpoint, feed.bound()) == []
    assert feed.count(ORIGIN) == 2


def test_a_feed_read_returns_exactly_the_keys_between_its_bounds_and_reads_an_index_range(alias):
    """``after < key <= upto``, with equal transaction ids (PostgreSQL: one transaction's events)
    and on MariaDB read from a range of the feed index, not by scanning it whole (its optimizer
    reads no range for a row comparison ``(txid, position) > (a, b)``, which other databases do)."""
    store = EventStore(alias)
    for _ in range(30):
        with transaction.atomic(using=alias):  # ten events a transaction
            store.append([event(uuid.uuid4(), 1) for _ in range(10)])
    feed = Feed(alias)
    upto = feed.bound()
    keys = feed.keys(ORIGIN, upto, limit=1000)
    assert len(keys) == 300 and keys == sorted(keys)
    for start, end in [(0, 9), (5, 15), (289, 299), (150, 150), (149, 152)]:
        assert [Feed.key(e) for e in feed.read(keys[start], keys[end], limit=1000)] == keys[start + 1:end + 1]
        assert feed.count(keys[start], keys[end]) == end - start
        assert feed.nonempty([(keys[start], keys[end], None, None)]) == ({0} if end > start else set())
    if alias != "store_mariadb":
        return

    def index_reads() -> int:
        with connections[alias].cursor() as cursor:
            cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN "
                           "('Handler_read_next', 'Handler_read_prev', 'Handler_read_rnd_next')")
            return sum(int(value) for _, value in cursor.fetchall())

    before = index_reads()
    assert len(feed.read(keys[-11], keys[-1])) == 10
    assert feed.nonempty([(keys[-11], keys[-1], ["note-created"], "test-notes")]) == {0}
    read = index_reads() - before - 3  # the counting statement reads its own rows (3)
    assert read < 60, f"{read} index entries read for 10 events of 300: a scan, not a range"


def test_the_feeds_hand_built_reads_give_what_the_orm_gives(alias):
    """The relay's statements are SQL built once per vendor (feed.py): the events they build,
    the keys, the bound and which reads have events agree with the ORM's, field by field."""
    store = EventStore(alias)
    stream = uuid.uuid4()
    payload = {"title": "Grüße 🌊", "nested": {"list": [1, 2.5, None, True]}, "at": timezone.now()}
    store.append([event(stream, 1, payload), event(stream, 2, key="note-edited"), event(uuid.uuid4(), 1),
                  Event(namespace="other", resource="x", aggregate_id=uuid.uuid4(), version=1, evt_key="note-created",
                        payload={}, command_id=uuid.uuid4(), user="someone", metadata={"k": [1]})])
    feed = Feed(alias)
    upto = feed.bound()
    orm = list(store.events.order_by("txid", "position"))
    assert upto == feed.key(orm[-1])
    read = feed.read(ORIGIN, upto, decode=False)
    fields = [f.attname for f in Event._meta.concrete_fields]
    assert [[getattr(e, f) for f in fields] for e in read] == [[getattr(e, f) for f in fields] for e in orm]
    assert all(e._state.db == alias and not e._state.adding for e in read)
    assert feed.keys(ORIGIN, upto) == [feed.key(e) for e in orm]
    narrowed = feed.read(ORIGIN, upto, evt_keys=["note-created"], namespace="test-notes", decode=False)
    assert [e.position for e in narrowed] == [e.position for e in orm if e.namespace == "test-notes"
                                              and e.evt_key == "note-created"]
    assert feed.read(feed.key(orm[0]), upto, limit=1, decode=False)[0].position == orm[1].position
    assert feed.nonempty([(ORIGIN, upto, ["note-edited"], "test-notes"), (upto, upto, None, None),
                          (feed.key(orm[-2]), upto, ["note-edited"], None), (ORIGIN, upto, ["nothing"], None)]) == {0}
