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

**MariaDB / MySQL** take the same way in one round trip of several statements
(no data-modifying ``WITH`` there): the transaction begun, the row locked (``SELECT …
INTO`` session variables, ``FOR UPDATE SKIP LOCKED``) and the events read below the
feed clock's next tick (the feed's own bound there, final as soon as it is read, and
this database's alone: nothing is held back by others), the receipt claimed and the
checkpoint moved. The transaction begins with that round trip, without the autocommit
toggles Django would send (``sql.command_transaction``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connections
from django.utils import timezone

from django_fluvius.events import sql
from django_fluvius.events.databases import FEED_CLOCK
from django_fluvius.events.feed import EventRows, FeedKey
from django_fluvius.models import Checkpoint, Event, HandlerReceipt

# Events read at most: one is delivered here; a second means a backlog, for the batching way.
READ_LIMIT = 2


@dataclass
class Taken:
    """What ``lock_and_take`` found and did."""

    key: FeedKey         # the checkpoint as locked
    bound: FeedKey       # the last event below the snapshot's xmin
    events: list[Event]  # up to READ_LIMIT events of the keys after ``key``, below the bound (undecoded):
                         # the first is the one this transaction delivers
    claimed: bool        # the one event's receipt was written (False: a delivery did the work)
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

    The first event's receipt is claimed and the checkpoint moved past it as well (to the
    bound when no other follows), before the handler runs: the transaction commits the
    move with the effect and the receipt, or none of them. None when the row is busy
    (locked by another delivery, or leased by another relay) or missing.
    ``evt_keys``: the stored keys (old names included), empty for every key.
    """
    connection = connections[using]
    return _WAYS[connection.vendor](connection, name, owner, using, list(evt_keys), namespace)


# -- PostgreSQL: one statement ------------------------------------------------------------------


def _take_postgresql(connection, name: str, owner: str, using: str, evt_keys: list[str],
                     namespace: str | None) -> Taken | None:
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    filters = ([namespace] if namespace else []) + evt_keys
    params = [name, now, owner, *filters, name, HandlerReceipt.Status.DONE, now, HandlerReceipt.Status.PENDING,
              now, *filters]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_lock_and_take, bool(namespace), len(evt_keys)), params)
        rows = cursor.fetchall()
    return _taken(connection, rows, using)


def _taken(connection, rows: Sequence[Sequence[object]], using: str) -> Taken | None:
    """Rows of (checkpoint txid, position, bound txid, position, claimed, held, the event's columns)."""
    if not rows:
        return None
    first = rows[0]
    key = (int(first[0]), int(first[1]))
    bound = (int(first[2]), int(first[3])) if first[3] is not None else key
    found = [row[_FIXED:] for row in rows if row[_FIXED + _POSITION] is not None]
    return Taken(key=key, bound=bound, events=EventRows.of(connection).events(found, using),
                 claimed=bool(first[4]), held=bool(first[5]))


# checkpoint txid, position; bound txid, position; claimed; held — then the event's columns.
_FIXED = 6
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
        f"{', '.join(f'e.{c}' for c in columns)} "
        f"FROM c CROSS JOIN s LEFT JOIN b ON true LEFT JOIN e ON true "
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
    statements = sql.statement(connection, _build_take_mysql, bool(namespace), len(evt_keys))
    done, pending = HandlerReceipt.Status.DONE, HandlerReceipt.Status.PENDING
    params = [name, now, owner, *filters, *filters, done, name, pending, name, done, now, name, now, *filters]
    skip = 0
    if getattr(connection, sql.BEGIN_PENDING, False):  # begun with this round trip (sql.command_transaction)
        setattr(connection, sql.BEGIN_PENDING, False)
        statements, skip = ["START TRANSACTION", *statements], 1
    counts: list[int] = []
    with connection.cursor() as cursor:
        cursor.execute("; ".join(statements), params)
        for index in range(len(statements) - 2):
            if index:
                sql._next_result(connection, cursor)
            counts.append(cursor.rowcount)
        sql._next_result(connection, cursor)
        (found, key_txid, key_position, bound_txid, bound_position), = cursor.fetchall()
        sql._next_result(connection, cursor)
        rows = cursor.fetchall()
        sql._next_result(connection, cursor)  # none is left: the connection is ready for the next
    if found is None:
        return None
    key = (int(key_txid), int(key_position))
    made_done, inserted = counts[skip + _CLAIM_PENDING], counts[skip + _CLAIM_NEW]
    # The clock's horizon is this database's own: nothing is held back here (held=False).
    return Taken(key=key, bound=(int(bound_txid), int(bound_position)) if bound_position is not None else key,
                 events=EventRows.of(connection).events(rows, using), claimed=made_done > 0 or inserted > 0,
                 held=False)


# Indexes in _build_take_mysql of the statements whose counts say the receipt was claimed.
_CLAIM_PENDING, _CLAIM_NEW = 6, 7


def _build_take_mysql(q: Callable[[str], str], namespace: bool, keys: int) -> list[str]:
    events, receipts, checkpoints = (q(m._meta.db_table) for m in (Event, HandlerReceipt, Checkpoint))
    txid, position = q("txid"), q("position")
    columns = ", ".join(q(str(f.column)) for f in Event._meta.concrete_fields)
    of_keys = " AND ".join([*([f"{q('namespace')} = %s"] if namespace else []),
                            *([f"{q('evt_key')} IN ({', '.join(['%s'] * keys)})"] if keys else []),
                            f"{txid} >= @fluvius_txid AND ({txid} > @fluvius_txid OR {position} > @fluvius_position)",
                            f"{txid} < @fluvius_horizon"])
    one = "@fluvius_n >= 1"
    return [
        "SET @fluvius_id = NULL, @fluvius_txid = NULL, @fluvius_position = NULL, @fluvius_bound_txid = NULL, "
        "@fluvius_bound_position = NULL, @fluvius_first_txid = NULL, @fluvius_first = NULL",
        # 1: the lock (no row: busy or missing, and nothing below happens).
        f"SELECT {q('id')}, {txid}, {position} INTO @fluvius_id, @fluvius_txid, @fluvius_position "
        f"FROM {checkpoints} WHERE {q('name')} = %s AND ({q('lease_until')} IS NULL "
        f"OR {q('lease_until')} < %s OR {q('lease_owner')} = %s) FOR UPDATE SKIP LOCKED",
        # 2, 3: the horizon (the clock's next tick) and the bound: the last event below it.
        f"SET @fluvius_horizon = (SELECT COALESCE(MAX(tick), 0) + 1 FROM {q(FEED_CLOCK)} WHERE id = 1)",
        f"SELECT {txid}, {position} INTO @fluvius_bound_txid, @fluvius_bound_position FROM {events} "
        f"WHERE {txid} < @fluvius_horizon ORDER BY {txid} DESC, {position} DESC LIMIT 1",
        # 4, 5: how many events of the keys follow the checkpoint below the horizon (0, 1, 2+), the first.
        f"SET @fluvius_n = IF(@fluvius_id IS NULL, NULL, (SELECT COUNT(*) FROM (SELECT 1 FROM {events} "
        f"WHERE {of_keys} LIMIT {READ_LIMIT}) AS x))",
        f"SELECT {txid}, {position} INTO @fluvius_first_txid, @fluvius_first FROM {events} WHERE {of_keys} "
        f"ORDER BY {txid}, {position} LIMIT 1",
        # 6, 7: the first event's receipt: a pending one (an ordered handler's) becomes done, else one
        # is written unless a delivery did the work (done, failed or discarded).
        f"UPDATE {receipts} SET {q('status')} = %s, {q('due')} = NULL WHERE {one} AND {q('handler')} = %s "
        f"AND {position} = @fluvius_first AND {q('status')} = %s",
        f"INSERT INTO {receipts} ({q('handler')}, {position}, {q('status')}, {q('created')}, {q('attempts')}, "
        f"{q('last_error')}) SELECT %s, @fluvius_first, %s, %s, 1, '' FROM DUAL WHERE {one} AND NOT EXISTS "
        f"(SELECT 1 FROM {receipts} WHERE {q('handler')} = %s AND {position} = @fluvius_first)",
        # 8, 9: the checkpoint to the bound past the one event; past the first only, when more follow.
        "SET @fluvius_to_txid = IF(@fluvius_n > 1, @fluvius_first_txid, @fluvius_bound_txid), "
        "@fluvius_to_position = IF(@fluvius_n > 1, @fluvius_first, @fluvius_bound_position)",
        f"UPDATE {checkpoints} SET {txid} = @fluvius_to_txid, {position} = @fluvius_to_position, "
        f"{q('sent_txid')} = @fluvius_to_txid, {q('sent_position')} = @fluvius_to_position, "
        f"{q('events_applied')} = {q('events_applied')} + LEAST(@fluvius_n, 1), {q('updated')} = %s "
        f"WHERE {q('id')} = @fluvius_id AND @fluvius_to_position IS NOT NULL "
        f"AND (@fluvius_to_txid > @fluvius_txid OR (@fluvius_to_txid = @fluvius_txid "
        f"AND @fluvius_to_position > @fluvius_position))",
        # What was found, then the events.
        "SELECT @fluvius_id, @fluvius_txid, @fluvius_position, @fluvius_bound_txid, @fluvius_bound_position",
        f"SELECT {columns} FROM {events} WHERE @fluvius_id IS NOT NULL AND {of_keys} "
        f"ORDER BY {txid}, {position} LIMIT {READ_LIMIT}",
    ]


# Database vendor -> its form of the locked way; SQLite (one writer at a time: little to
# gain) takes the leased way.
_WAYS: dict[str, Callable[..., Taken | None]] = {
    "postgresql": _take_postgresql,
    "mysql": _take_mysql,
}
VENDORS = frozenset(_WAYS)


def exists(name: str, using: str) -> bool:
    """Whether the subscription's checkpoint exists (``lock_and_take`` found none: busy or missing?)."""
    connection = connections[using]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_exists), [name])
        return cursor.fetchone() is not None


def _build_exists(q: Callable[[str], str]) -> str:
    return f"SELECT 1 FROM {q(Checkpoint._meta.db_table)} WHERE {q('name')} = %s"
