"""A handler subscription moved inside one transaction: its checkpoint row locked, not leased.

What inline delivery after a commit uses on PostgreSQL (``dispatch.deliver_committed``)
when the handler's effect lives in the store's database. The leased way takes a lease
(a transaction of its own), reads the feed's bound (a scan of ``pg_stat_activity``),
then the events (a second statement), and only then opens the handler's transaction.
Here one transaction does it all, and its bookkeeping is one statement::

    BEGIN
    WITH lock the checkpoint row (FOR UPDATE SKIP LOCKED),
         read the events after it, below the bound (at most two),
         claim the receipt of the one event,
         move the checkpoint to the bound
    SELECT ...
    the handler's effect
    COMMIT                              -- the one durable commit: effect, receipt, checkpoint

**The bound** is the snapshot's ``xmin``: every transaction with a lower id had ended
before the statement's snapshot was taken, so the events below it are final and all
visible to that same snapshot — the read can share the statement (the leased way's
``pg_stat_activity`` horizon cannot: a transaction may end between its snapshot and
its scan). The price: ``xmin`` is server-wide, so a writing transaction in *another*
database holds it back. The statement says when events of the subscription's keys lie
above the bound while none lie below (``held``); the caller then takes the leased way,
whose horizon looks at this database only.

**The row lock** stands in for the lease for the length of this transaction: another
such delivery skips the row (busy: nothing is read twice), and a relay taking the
lease waits for our commit, then reads from the moved checkpoint. A row leased by
another relay is not locked here: it leads.

**A backlog** is delivered one event per transaction: the checkpoint moves past the first
event only when another follows it (the statement reads two), and the caller takes again
after the commit.

The events are read by the (namespace, evt_key, txid, position) index (migration
0009): one index range per key from the locked checkpoint, which the LIMIT stops.

**MariaDB / MySQL** take the same way in two round trips of a few statements each (no
data-modifying ``WITH`` there): the transaction begun, the row locked (``SELECT … INTO``
session variables, ``FOR UPDATE SKIP LOCKED``) and the events read below the feed
clock's next tick (the feed's own bound there, final as soon as it is read, and this
database's alone: nothing is held back by others); then the receipt claimed and the
checkpoint moved past the event. The transaction begins with the first round trip,
without the autocommit toggles Django would send (``sql.command_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.utils import timezone

from django_fluvius.events import sql
from django_fluvius.events.databases import FEED_CLOCK
from django_fluvius.events.feed import EventRows, FeedKey
from django_fluvius.models import Checkpoint, Event, HandlerReceipt

# Events read at most: one is delivered here; a second means a backlog, for the batching way.
READ_LIMIT = 2


class CheckpointMissing(Exception):
    """``lock_and_take`` found no checkpoint row (a rolled-back transaction took it away)."""


@dataclass
class Taken:
    """What ``lock_and_take`` found and did."""

    key: FeedKey         # the checkpoint as locked
    bound: FeedKey       # the last event below the snapshot's xmin
    events: list[Event]  # up to READ_LIMIT events of the keys after ``key``, below the bound (undecoded):
                         # the first is the one this transaction delivers
    claimed: bool        # PostgreSQL: the first event's receipt was written (False: a delivery did
                         # the work); elsewhere ``settle`` tells
    held: bool           # events of the keys committed above the bound (xmin held back)

    @classmethod
    def nothing(cls) -> Taken:
        """Nothing taken (the row was busy)."""
        return cls(key=(0, 0), bound=(0, 0), events=[], claimed=False, held=False)

    @property
    def more(self) -> bool:
        """Events follow the first: the checkpoint moved past it only (take again after the commit)."""
        return len(self.events) >= READ_LIMIT


def lock_and_take(name: str, owner: str, using: str, *, evt_keys: Sequence[str],
                  namespace: str | None) -> Taken | None:
    """Lock the checkpoint and read what follows it, in the caller's transaction.

    On PostgreSQL the same statement claims the first event's receipt and moves the
    checkpoint past it (to the bound when no other follows); elsewhere ``settle`` does,
    once the event decodes. Either way before the handler runs: the transaction commits
    the move with the effect and the receipt, or none of them. None when the row is busy
    (locked by another delivery, or leased by another relay); ``CheckpointMissing`` when
    there is none (the same statement tells).
    ``evt_keys``: the stored keys (old names included), empty for every key.
    """
    connection = connections[using]
    return _WAYS[connection.vendor].take(connection, name, owner, using, list(evt_keys), namespace)


# -- PostgreSQL: one statement ------------------------------------------------------------------


def _take_postgresql(connection, name: str, owner: str, using: str, evt_keys: list[str],
                     namespace: str | None) -> Taken | None:
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    filters = ([namespace] if namespace else []) + evt_keys
    params = [name, now, owner, *filters, name, HandlerReceipt.Status.DONE, now, HandlerReceipt.Status.PENDING,
              now, *filters, name]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_lock_and_take, bool(namespace), len(evt_keys)), params)
        rows = cursor.fetchall()
    return _taken(connection, rows, using)


def _taken(connection, rows: Sequence[Sequence[Any]], using: str) -> Taken | None:
    """Rows of (checkpoint txid, position, bound txid, position, claimed, held, present, the event's columns)."""
    first = rows[0]
    if first[0] is None:
        if not first[6]:
            raise CheckpointMissing
        return None
    key = (int(first[0]), int(first[1]))
    bound = (int(first[2]), int(first[3])) if first[3] is not None else key
    found = [row[_FIXED:] for row in rows if row[_FIXED + _POSITION] is not None]
    return Taken(key=key, bound=bound, events=EventRows.of(connection).events(found, using),
                 claimed=bool(first[4]), held=bool(first[5]))


# checkpoint txid, position; bound txid, position; claimed; held; present — then the event's columns.
_FIXED = 7
_POSITION = [f.attname for f in Event._meta.concrete_fields].index("position")


def _build_lock_and_take(q: Callable[[str], str], namespace: bool, keys: int) -> str:
    events, receipts, checkpoints = (q(m._meta.db_table) for m in (Event, HandlerReceipt, Checkpoint))
    txid, position = q("txid"), q("position")
    columns = [q(str(f.column)) for f in Event._meta.concrete_fields]
    of_keys = " AND ".join(([f"{q('namespace')} = %s"] if namespace else [])
                           + ([f"{q('evt_key')} IN ({', '.join(['%s'] * keys)})"] if keys else [])
                           + [f"({txid}, {position}) > (c.{txid}, c.{position})"])
    return (
        f"WITH c AS (SELECT {q('id')}, {txid}, {position} FROM {checkpoints} WHERE {q('name')} = %s "
        f"AND ({q('lease_until')} IS NULL OR {q('lease_until')} < %s OR {q('lease_owner')} = %s) "
        f"FOR UPDATE SKIP LOCKED), "
        f"s AS (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin), "
        f"e AS MATERIALIZED (SELECT {', '.join(f'x.{c}' for c in columns)} FROM c CROSS JOIN s, "
        f"LATERAL (SELECT {', '.join(columns)} FROM {events} WHERE {of_keys} AND {txid} < s.xmin "
        f"ORDER BY {txid}, {position} LIMIT {READ_LIMIT}) AS x), "
        f"n AS (SELECT count(*) AS n FROM e), "
        f"f AS (SELECT {txid}, {position} FROM e ORDER BY {txid}, {position} LIMIT 1), "
        f"b AS (SELECT x.{txid}, x.{position} FROM s, LATERAL (SELECT {txid}, {position} FROM {events} "
        f"WHERE {txid} < s.xmin ORDER BY {txid} DESC, {position} DESC LIMIT 1) AS x), "
        f"r AS (INSERT INTO {receipts} ({q('handler')}, {position}, {q('status')}, {q('created')}, "
        f"{q('attempts')}, {q('last_error')}) SELECT %s, f.{position}, %s, %s, 1, '' FROM f "
        f"ON CONFLICT ({q('handler')}, {position}) DO UPDATE SET {q('status')} = EXCLUDED.{q('status')}, "
        f"{q('due')} = NULL WHERE {receipts}.{q('status')} = %s RETURNING 1), "
        # To the bound past the one event; past the first only, when more follow it.
        f"t AS (SELECT CASE WHEN n.n > 1 THEN f.{txid} ELSE b.{txid} END AS {txid}, "
        f"CASE WHEN n.n > 1 THEN f.{position} ELSE b.{position} END AS {position}, LEAST(n.n, 1) AS applied "
        f"FROM n CROSS JOIN b LEFT JOIN f ON true), "
        f"m AS (UPDATE {checkpoints} SET {txid} = t.{txid}, {position} = t.{position}, "
        f"{q('sent_txid')} = t.{txid}, {q('sent_position')} = t.{position}, "
        f"{q('events_applied')} = {checkpoints}.{q('events_applied')} + t.applied, {q('updated')} = %s "
        f"FROM c, t WHERE {checkpoints}.{q('id')} = c.{q('id')} "
        f"AND (t.{txid}, t.{position}) > (c.{txid}, c.{position}) RETURNING 1) "
        f"SELECT c.{txid}, c.{position}, b.{txid}, b.{position}, EXISTS (SELECT 1 FROM r), "
        f"EXISTS (SELECT 1 FROM {events} WHERE {of_keys} AND {txid} >= s.xmin), "
        f"EXISTS (SELECT 1 FROM {checkpoints} WHERE {q('name')} = %s), "
        f"{', '.join(f'e.{c}' for c in columns)} "
        f"FROM s LEFT JOIN c ON true LEFT JOIN b ON true LEFT JOIN e ON true "
        f"ORDER BY e.{txid}, e.{position}"
    )


# -- MariaDB / MySQL: two round trips --------------------------------------------------------------
#
# Session variables carry the locked row from the locking statement to the reading one
# (a locking read may not join the events: it would lock them too). The comparisons
# with the checkpoint are spelled out on the columns, which MariaDB reads as ranges
# (feed.py). Its transaction runs at READ COMMITTED (docs/databases.md); under REPEATABLE
# READ the read view is made by the reading statement, after the lock: the same reads.


def _take_mysql(connection, name: str, owner: str, using: str, evt_keys: list[str],
                namespace: str | None) -> Taken | None:
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    filters = ([namespace] if namespace else []) + evt_keys
    text, count = sql.statement(connection, _build_take_mysql, bool(namespace), len(evt_keys)), _TAKE_STATEMENTS
    if getattr(connection, sql.BEGIN_PENDING, False):  # begun with this round trip (sql.command_transaction)
        setattr(connection, sql.BEGIN_PENDING, False)
        text, count = f"START TRANSACTION; {text}", count + 1
    with connection.cursor() as cursor:
        cursor.execute(text, [name, now, owner, name, *filters])
        for _ in range(count - 2):
            sql._next_result(connection, cursor)
        (found, key_txid, key_position, present), = cursor.fetchall()
        sql._next_result(connection, cursor)
        rows = cursor.fetchall()
        sql._next_result(connection, cursor)  # none is left: the connection is ready for the next
    if found is None:
        if not present:
            raise CheckpointMissing
        return None
    key = (int(key_txid), int(key_position))
    # Nothing is claimed or moved yet (_settle_mysql, once the event decodes); the clock's
    # horizon is this database's own: nothing is held back here.
    return Taken(key=key, bound=key, events=EventRows.of(connection).events(rows, using), claimed=False,
                 held=False)


# Statements of _build_take_mysql (their results are read in turn: the last two are rows).
_TAKE_STATEMENTS = 5


def _build_take_mysql(q: Callable[[str], str], namespace: bool, keys: int) -> str:
    events, txid, position = q(Event._meta.db_table), q("txid"), q("position")
    columns = ", ".join(q(str(f.column)) for f in Event._meta.concrete_fields)
    of_keys = " AND ".join([*([f"{q('namespace')} = %s"] if namespace else []),
                            *([f"{q('evt_key')} IN ({', '.join(['%s'] * keys)})"] if keys else [])])
    statements = [
        "SET @fluvius_id = NULL, @fluvius_txid = NULL, @fluvius_position = NULL",
        # The horizon first (the clock's next tick): every event below it has committed. Read
        # by a plain SELECT ... INTO: MariaDB reads a SELECT inside SET with a shared lock, which
        # held every event writer (the clock's trigger) until this delivery's handler committed.
        f"SELECT COALESCE(MAX(tick), 0) + 1 INTO @fluvius_horizon FROM {q(FEED_CLOCK)} WHERE id = 1",
        f"SELECT {q('id')}, {txid}, {position} INTO @fluvius_id, @fluvius_txid, @fluvius_position "
        f"FROM {q(Checkpoint._meta.db_table)} WHERE {q('name')} = %s AND ({q('lease_until')} IS NULL "
        f"OR {q('lease_until')} < %s OR {q('lease_owner')} = %s) FOR UPDATE SKIP LOCKED",
        f"SELECT @fluvius_id, @fluvius_txid, @fluvius_position, "
        f"EXISTS (SELECT 1 FROM {q(Checkpoint._meta.db_table)} WHERE {q('name')} = %s)",
        f"SELECT {columns} FROM {events} WHERE @fluvius_id IS NOT NULL AND {of_keys + ' AND ' if of_keys else ''}"
        f"{txid} >= @fluvius_txid AND ({txid} > @fluvius_txid OR {position} > @fluvius_position) "
        f"AND {txid} < @fluvius_horizon ORDER BY {txid}, {position} LIMIT {READ_LIMIT}",
    ]
    assert len(statements) == _TAKE_STATEMENTS
    return "; ".join(statements)


def _settle_mysql(connection, taken: Taken, name: str) -> bool:
    """The first event's receipt claimed, the checkpoint moved past it: one round trip."""
    first = taken.events[0]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    done, pending = HandlerReceipt.Status.DONE, HandlerReceipt.Status.PENDING
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(connection, _build_settle_mysql), [
            done, name, first.position, pending,
            name, first.position, done, now, name, first.position,
            int(first.txid or 0), first.position, int(first.txid or 0), first.position, now, name])
        made_done = cursor.rowcount
        sql._next_result(connection, cursor)
        inserted = cursor.rowcount
        sql._next_result(connection, cursor)
        sql._next_result(connection, cursor)  # none is left
    return made_done > 0 or inserted > 0


def _build_settle_mysql(q: Callable[[str], str]) -> str:
    receipts, txid, position = q(HandlerReceipt._meta.db_table), q("txid"), q("position")
    return "; ".join([
        # A pending receipt (an ordered handler's, written by a relay) becomes done; else one is
        # written, unless a delivery did the work (done, failed or discarded).
        f"UPDATE {receipts} SET {q('status')} = %s, {q('due')} = NULL WHERE {q('handler')} = %s "
        f"AND {position} = %s AND {q('status')} = %s",
        f"INSERT INTO {receipts} ({q('handler')}, {position}, {q('status')}, {q('created')}, {q('attempts')}, "
        f"{q('last_error')}) SELECT %s, %s, %s, %s, 1, '' FROM DUAL WHERE NOT EXISTS (SELECT 1 FROM {receipts} "
        f"WHERE {q('handler')} = %s AND {position} = %s)",
        # Past this event (MariaDB's checkpoint stays on its own keys' events: their index
        # range skips the others at the next read).
        f"UPDATE {q(Checkpoint._meta.db_table)} SET {txid} = %s, {position} = %s, {q('sent_txid')} = %s, "
        f"{q('sent_position')} = %s, {q('events_applied')} = {q('events_applied')} + 1, {q('updated')} = %s "
        f"WHERE {q('name')} = %s",
    ])


@dataclass(frozen=True)
class _Way:
    take: Callable[..., Taken | None]
    settle: Callable[..., bool]


def _settled_by_take(connection, taken: Taken, name: str) -> bool:
    return taken.claimed  # PostgreSQL: the statement that took it claimed it and moved the checkpoint


# Database vendor -> its form of the locked way; SQLite (one writer at a time: little to
# gain) takes the leased way.
_WAYS: dict[str, _Way] = {
    "postgresql": _Way(_take_postgresql, _settled_by_take),
    "mysql": _Way(_take_mysql, _settle_mysql),
}
VENDORS = frozenset(_WAYS)


def settle(taken: Taken, name: str, using: str) -> bool:
    """The first event's receipt claimed and the checkpoint moved past it (where ``lock_and_take``
    did not already); whether the receipt was ours to write (False: a delivery did the work)."""
    connection = connections[using]
    return _WAYS[connection.vendor].settle(connection, taken, name)


def wait_for(name: str, using: str) -> None:
    """Take the checkpoint row's lock, waiting for the delivery that holds it (its commit)."""
    connection = connections[using]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_wait_for), [name])
        cursor.fetchall()


def _build_wait_for(q: Callable[[str], str]) -> str:
    return f"SELECT 1 FROM {q(Checkpoint._meta.db_table)} WHERE {q('name')} = %s FOR UPDATE"
