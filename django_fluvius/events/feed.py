"""The event feed: every committed event, in commit order, with no gaps.

Async projections read the event store in order and remember how far they got.
Reading by ``position`` alone is not safe with concurrent writers: positions
come from a sequence when a transaction *inserts*, not when it *commits*. If
transaction A takes position 10, B takes 11 and commits first, a reader that
sees 11 and saves "done up to 11" skips 10 for ever once A commits.

The feed therefore orders events by a key that a reader can prove is final:

* **PostgreSQL**: every event stores the id of the transaction that wrote it
  (``Event.txid``, filled by the database with ``pg_current_xact_id()``). The
  feed is ordered by ``(txid, position)``. Before each read the feed computes a
  *horizon*: the lowest id of a transaction still running in this database
  (``pg_stat_activity.backend_xid``, and prepared transactions), or the next id
  to be assigned when none runs. Every transaction below the horizon has
  finished, so the set of events with ``txid < horizon`` can no longer grow, and
  a reader that stops there never skips one. Transactions that start later get
  higher ids. The price: a long-running *writing* transaction in the same
  database holds the feed back (not the writers) until it ends; transactions of
  other databases on the server don't. If the worker's database role may not see
  other sessions' transaction ids, the horizon falls back to the server-wide
  ``pg_snapshot_xmin(pg_current_snapshot())``, which is just as safe.
* **SQLite** has one writer at a time, holding the write lock until it commits,
  so positions are taken in commit order already; ``txid`` is 0.
* **MariaDB / MySQL** (InnoDB) have no comparable transaction id, and
  AUTO_INCREMENT positions are taken at insert, so they commit out of order like
  PostgreSQL's sequence. Here ``txid`` is a *tick* of a one-row clock table
  (``django_fluvius_feedclock``, migration 0008): a ``BEFORE INSERT`` trigger on
  the event table increments the row and copies its value into the event. The
  increment row-locks the clock until the writing transaction commits or rolls
  back, so a second writer takes its tick only after the first has committed:
  ticks are handed out in commit order, and a reader that sees tick N sees every
  tick below it. The horizon is just the clock's next tick (every visible event
  lies below it, every later one above), read in one primary-key lookup.
  The price: event-writing transactions are serialised from their first event
  insert to their commit (the bus inserts events last, just before it commits;
  at worst the commit's log flush is in that window too, docs/databases.md).
  Writers that insert no event are not affected.

A reader's place in the feed is a ``FeedKey`` ``(txid, position)``: the key of
the last event it passed. ``ORIGIN`` is before everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connections
from django.db.models import BooleanField, Min, Q
from django.db.models.expressions import RawSQL

from django_fluvius.conf import fluvius_settings
from django_fluvius.events import sql, upcasting
from django_fluvius.events.databases import FEED_CLOCK
from django_fluvius.events.store import EventStore
from django_fluvius.models import Event

FeedKey = tuple[int, int]
ORIGIN: FeedKey = (0, 0)

# The horizon in one statement. The statement's snapshot (``pg_current_snapshot()``)
# is taken before it runs, so its upper bound is read before ``pg_stat_activity``
# is scanned: a transaction that gets an id after that point gets one at or above
# the upper bound, so missing it in the scan is harmless. The running sessions'
# 32-bit ids are widened against ``xmax`` (one seen shortly after it is never more
# than 2**31 behind); one newer than ``xmax`` is no blocker. If any session is
# hidden from us (its ids unknown), the server-wide snapshot xmin stands in: just as
# safe.
HORIZON_SQL = """
SELECT CASE WHEN bool_or(r.hidden)
            THEN LEAST(s.upper, pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
            ELSE LEAST(s.upper, min(s.xmax - mod(mod(s.xmax - r.xid32, 4294967296) + 4294967296, 4294967296))
                 FILTER (WHERE mod(mod(s.xmax - r.xid32, 4294967296) + 4294967296, 4294967296) <= 2147483648))
       END
  FROM (SELECT x.xmax, CASE WHEN x.own IS NULL THEN x.xmax ELSE GREATEST(x.xmax, x.own + 1) END AS upper
          FROM (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax,
                       pg_current_xact_id_if_assigned()::text::bigint AS own) AS x) AS s
  LEFT JOIN (SELECT backend_xid::text::bigint AS xid32, query = '<insufficient privilege>' AS hidden
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND (backend_xid IS NOT NULL OR query = '<insufficient privilege>')
             UNION ALL
             SELECT transaction::text::bigint, false FROM pg_prepared_xacts
              WHERE database = current_database()) AS r ON true
 GROUP BY s.xmax, s.upper
"""


def _stats_cached(connection: Any) -> bool:
    """Whether ``pg_stat_activity`` may be a copy read earlier in this transaction.

    PostgreSQL reads it once per transaction and keeps that copy until the
    transaction ends. A statement outside a transaction (autocommit: the relays)
    is a transaction of its own and always reads it live.
    """
    return connection.in_atomic_block or not connection.get_autocommit()


def _clear_stats(connection: Any) -> None:
    if _stats_cached(connection):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")


def postgres_horizon(connection: Any) -> int:
    """The lowest transaction id that may still commit events in this database."""
    _clear_stats(connection)
    with connection.cursor() as cursor:
        cursor.execute(HORIZON_SQL)
        return int(cursor.fetchone()[0])


def postgres_below_horizon(connection: Any, fresh_transaction: bool = False) -> RawSQL:
    """``txid < horizon`` as SQL, so a read and its horizon take one round trip."""
    if not fresh_transaction:
        _clear_stats(connection)
    quote = connection.ops.quote_name
    return RawSQL(f"{quote('txid')} < ({HORIZON_SQL})", [], output_field=BooleanField())


def postgres_own_xid(connection: Any) -> int | None:
    """This session's transaction id, if it has one (its later events will carry it)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_xact_id_if_assigned()::text::bigint")
        return cursor.fetchone()[0]




def mysql_horizon(connection: Any) -> int:
    """The tick the next committed event will carry: every visible event lies below it."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tick FROM {connection.ops.quote_name(FEED_CLOCK)} WHERE id = 1")
        row = cursor.fetchone()
    return (row[0] if row else 0) + 1


def mysql_below_horizon(connection: Any, fresh_transaction: bool = False) -> RawSQL:
    """``txid < horizon`` as SQL (the clock's tick read in the same statement as the events)."""
    quote = connection.ops.quote_name
    return RawSQL(f"{quote('txid')} < (SELECT COALESCE(MAX(tick), 0) + 1 FROM {quote(FEED_CLOCK)} WHERE id = 1)",
                  [], output_field=BooleanField())


def mysql_own_tick(connection: Any) -> None:
    """Ticks this transaction takes later are above the horizon already: nothing to add."""
    return None


# Database vendor -> function giving the horizon; vendors not listed (SQLite)
# commit in position order and need none.
HORIZONS: dict[str, Callable[[Any], int]] = {
    "postgresql": postgres_horizon,
    "mysql": mysql_horizon,
}
BELOW_HORIZON: dict[str, Callable[[Any, bool], RawSQL]] = {
    "postgresql": postgres_below_horizon,
    "mysql": mysql_below_horizon,
}
OWN_XIDS: dict[str, Callable[[Any], int | None]] = {
    "postgresql": postgres_own_xid,
    "mysql": mysql_own_tick,
}


# -- hand-built statements of the relay's hot path --------------------------------------------
#
# A relay round asks the feed the same few questions again and again (its bound, which
# subscriptions have events, the events themselves). Built by the ORM each time they
# cost a few hundred microseconds of Python apiece (filters, expressions, the
# compiler); here the SQL text is built once per (vendor, shape) and only the
# parameters change. They run on ``sql.hot_cursor`` (server-side binding and prepared
# statements on PostgreSQL with psycopg 3, Django's cursor elsewhere). Rows come back as
# tuples; events are built with the backend's and the fields' own converters, as the
# ORM would.


def below_horizon_sql(vendor: str, quote: Callable[[str], str]) -> str:
    """``txid < horizon`` as SQL text for this vendor ('' where commit order is position order)."""
    if vendor == "postgresql":
        return f"{quote('txid')} < ({HORIZON_SQL})"
    if vendor == "mysql":
        return f"{quote('txid')} < (SELECT COALESCE(MAX(tick), 0) + 1 FROM {quote(FEED_CLOCK)} WHERE id = 1)"
    return ""


def bound_sql(connection: Any) -> str:
    """``SELECT txid, position`` of the feed's bound: the last event below the horizon."""
    return sql.statement(connection, bound_sql_text, connection.vendor)


def bound_sql_text(quote: Callable[[str], str], vendor: str) -> str:
    """``bound_sql`` built (also a subquery of the relay's lease statement, subscriptions.py)."""
    below = below_horizon_sql(vendor, quote)
    where = f" WHERE {below}" if below else ""
    return (f"SELECT {quote('txid')}, {quote('position')} FROM {quote(Event._meta.db_table)}{where} "
            f"ORDER BY {quote('txid')} DESC, {quote('position')} DESC LIMIT 1")


def _range_sql(quote: Callable[[str], str], vendor: str, namespace: bool, keys: int) -> str:
    """The WHERE of a read: ``after < key <= upto`` (``_range_params``), then namespace and keys.

    MariaDB / MySQL read no index range for a row comparison: there the
    comparisons are spelled out on the columns, which they read as a range of the
    ``(txid, position)`` index.
    """
    txid, position = quote("txid"), quote("position")
    if vendor == "mysql":
        where = (f"{txid} >= %s AND ({txid} > %s OR {position} > %s) "
                 f"AND {txid} <= %s AND ({txid} < %s OR {position} <= %s)")
    else:
        where = f"({txid}, {position}) > (%s, %s) AND ({txid}, {position}) <= (%s, %s)"
    if namespace:
        where += f" AND {quote('namespace')} = %s"
    if keys:
        where += f" AND {quote('evt_key')} IN ({', '.join(['%s'] * keys)})"
    return where


def _build_read(quote: Callable[[str], str], vendor: str, namespace: bool, keys: int) -> str:
    columns = ", ".join(quote(str(f.column)) for f in Event._meta.concrete_fields)
    return (f"SELECT {columns} FROM {quote(Event._meta.db_table)} WHERE {_range_sql(quote, vendor, namespace, keys)} "
            f"ORDER BY {quote('txid')}, {quote('position')} LIMIT %s")


def _build_keys(quote: Callable[[str], str], vendor: str, namespace: bool, keys: int) -> str:
    return (f"SELECT {quote('txid')}, {quote('position')} FROM {quote(Event._meta.db_table)} "
            f"WHERE {_range_sql(quote, vendor, namespace, keys)} ORDER BY {quote('txid')}, {quote('position')} LIMIT %s")


def _build_exists(quote: Callable[[str], str], vendor: str, namespace: bool, keys: int) -> str:
    """One term of ``nonempty``: its index (a parameter) if the read would return an event."""
    return (f"SELECT %s FROM (SELECT 1 AS one) AS one WHERE EXISTS (SELECT 1 FROM "
            f"{quote(Event._meta.db_table)} WHERE {_range_sql(quote, vendor, namespace, keys)})")


def _range_params(after: FeedKey, upto: FeedKey, namespace: str | None,
                  stored: Sequence[str] | None, vendor: str) -> list[Any]:
    if vendor == "mysql":  # the comparisons spelled out (_range_sql)
        params: list[Any] = [int(after[0]), int(after[0]), int(after[1]), int(upto[0]), int(upto[0]),
                             int(upto[1])]
    else:
        params = [int(after[0]), int(after[1]), int(upto[0]), int(upto[1])]
    if namespace:
        params.append(namespace)
    if stored:
        params.extend(stored)
    return params


class EventRows:
    """Events from rows of ``_read_sql``: the backend's and the fields' converters, then ``from_db``."""

    def __init__(self, connection: Any):
        self.connection = connection
        fields = Event._meta.concrete_fields
        self.attnames = [f.attname for f in fields]
        self.converters: list[tuple[int, list[Any], Any]] = []
        for index, f in enumerate(fields):
            column = f.get_col(Event._meta.db_table)
            found = connection.ops.get_db_converters(column) + f.get_db_converters(connection)
            if found:
                self.converters.append((index, found, column))

    @classmethod
    def of(cls, connection: Any) -> EventRows:
        reader = getattr(connection, "_fluvius_event_rows", None)
        if reader is None:
            reader = cls(connection)
            connection._fluvius_event_rows = reader  # our mark on Django's wrapper (one per alias and thread)
        return reader

    def events(self, rows: Sequence[Sequence[Any]], using: str) -> list[Event]:
        connection, converters, attnames = self.connection, self.converters, self.attnames
        out = []
        for row in rows:
            values = list(row)
            for index, functions, column in converters:
                value = values[index]
                for convert in functions:
                    value = convert(value, column, connection)
                values[index] = value
            out.append(Event.from_db(using, attnames, values))
        return out


class Feed:
    """Committed events of one database in commit order (see the module docstring)."""

    def __init__(self, using: str | None = None):
        self.using = using or fluvius_settings.DATABASE
        self.store = EventStore(self.using)

    @property
    def connection(self) -> Any:
        return connections[self.using]

    @staticmethod
    def key(event: Event) -> FeedKey:
        return (event.txid or 0, event.position)

    # MariaDB's optimizer reads no index range for a row comparison ``(txid, position) > (a, b)``
    # (nor for a boolean expression Django compares with 1 there): the feed index was scanned
    # whole at every read. There the comparisons are spelled out on the columns, which it
    # reads as ranges of the (txid, position) index.

    def _after(self, key: FeedKey, *, inclusive: bool = False) -> RawSQL | Q:
        if self.connection.vendor == "mysql":
            txid, position = key
            tail = Q(position__gte=position) if inclusive else Q(position__gt=position)
            return Q(txid__gte=txid) & (Q(txid__gt=txid) | tail)
        quote = self.connection.ops.quote_name
        op = ">=" if inclusive else ">"
        return RawSQL(f"({quote('txid')}, {quote('position')}) {op} (%s, %s)", key,
                      output_field=BooleanField())

    def _upto(self, key: FeedKey) -> RawSQL | Q:
        if self.connection.vendor == "mysql":
            txid, position = key
            return Q(txid__lte=txid) & (Q(txid__lt=txid) | Q(position__lte=position))
        quote = self.connection.ops.quote_name
        return RawSQL(f"({quote('txid')}, {quote('position')}) <= (%s, %s)", key,
                      output_field=BooleanField())

    def _filtered(self, qs: Any, evt_keys: Sequence[str] | None, namespace: str | None) -> Any:
        if namespace:
            qs = qs.filter(namespace=namespace)
        if evt_keys:
            # Old names of renamed keys too: they are read back under the new name.
            qs = qs.filter(evt_key__in=upcasting.registry.stored_keys(evt_keys, namespace))
        return qs

    def bound(self, *, fresh_transaction: bool = False) -> FeedKey:
        """The key of the last event no still-running transaction can precede.

        ``fresh_transaction``: the caller's transaction has read no server
        statistics before (it began just now), so their copy is live.
        """
        connection = self.connection
        vendor = connection.vendor
        if vendor == "postgresql" and not fresh_transaction:
            _clear_stats(connection)
        # One statement: the horizon is a subquery.
        with sql.hot_cursor(connection) as cursor:
            cursor.execute(bound_sql(connection))
            row = cursor.fetchone()
        return (row[0] or 0, row[1]) if row else ORIGIN

    def head(self) -> FeedKey:
        """The key of the last committed event, safe to pass or not (for lag figures)."""
        row = self.store.events.order_by("-txid", "-position").values_list("txid", "position").first()
        return (row[0] or 0, row[1]) if row else ORIGIN

    def read(self, after: FeedKey, upto: FeedKey, *, evt_keys: Sequence[str] | None = None,
             namespace: str | None = None, limit: int = 500, decode: bool = True) -> list[Event]:
        """Events with ``after < key <= upto`` in feed order, decoded (upcasters, renames)."""
        if tuple(after) >= tuple(upto):
            return []
        connection = self.connection
        stored = self._stored_keys(evt_keys, namespace)
        with sql.hot_cursor(connection) as cursor:
            cursor.execute(sql.statement(connection, _build_read, connection.vendor, bool(namespace), len(stored)),
                           [*_range_params(after, upto, namespace, stored, connection.vendor), int(limit)])
            rows = cursor.fetchall()
        events = EventRows.of(connection).events(rows, self.using)
        return [self.store.decode(e) for e in events] if decode else events

    @staticmethod
    def _stored_keys(evt_keys: Sequence[str] | None, namespace: str | None) -> list[str]:
        # Old names of renamed keys too: they are read back under the new name.
        return upcasting.registry.stored_keys(evt_keys, namespace) if evt_keys else []

    def keys(self, after: FeedKey, upto: FeedKey, *, evt_keys: Sequence[str] | None = None,
             namespace: str | None = None, limit: int = 500) -> list[FeedKey]:
        """The keys only of what ``read`` would return (no rows built: what a relay hands over)."""
        if tuple(after) >= tuple(upto):
            return []
        connection = self.connection
        stored = self._stored_keys(evt_keys, namespace)
        with sql.hot_cursor(connection) as cursor:
            cursor.execute(sql.statement(connection, _build_keys, connection.vendor, bool(namespace), len(stored)),
                           [*_range_params(after, upto, namespace, stored, connection.vendor), int(limit)])
            return [(txid or 0, position) for txid, position in cursor.fetchall()]

    def nonempty(self, reads: Sequence[tuple[FeedKey, FeedKey, Sequence[str] | None, str | None]]) -> set[int]:
        """Which of these reads ``(after, upto, evt_keys, namespace)`` would return an event.

        One statement for all of them (a relay round asks it of every subscription).
        """
        found: set[int] = set()
        parts: list[tuple[str, list[Any]]] = []
        connection = self.connection
        for index, (after, upto, evt_keys, namespace) in enumerate(reads):
            if tuple(after) >= tuple(upto):
                continue
            stored = self._stored_keys(evt_keys, namespace)
            parts.append((sql.statement(connection, _build_exists, connection.vendor, bool(namespace), len(stored)),
                          [int(index), *_range_params(after, upto, namespace, stored, connection.vendor)]))
        for start in range(0, len(parts), 100):  # SQLite caps a compound SELECT at 500 terms
            chunk = parts[start:start + 100]
            with sql.hot_cursor(connection) as cursor:
                cursor.execute(" UNION ALL ".join(sql for sql, _ in chunk),
                               [param for _, params in chunk for param in params])
                found.update(row[0] for row in cursor.fetchall())
        return found

    def count(self, after: FeedKey, upto: FeedKey | None = None, *, evt_keys: Sequence[str] | None = None,
              namespace: str | None = None) -> int:
        """How many events lie after ``after`` (up to ``upto``): a projection's lag."""
        qs = self.store.events.filter(self._after(after))
        if upto is not None:
            qs = qs.filter(self._upto(upto))
        return self._filtered(qs, evt_keys, namespace).count()

    def key_before(self, position: int) -> FeedKey:
        """A key from which reading yields every event with a position above ``position``.

        Feed order is commit order, so a few events with lower positions that
        committed later may come too (a catch-up from a position replays them).
        """
        if position <= 0:
            return ORIGIN
        vendor = self.connection.vendor
        horizon = HORIZONS.get(vendor)
        candidates: list[FeedKey] = []
        if horizon is not None:
            # Read the horizon first: every event below it is visible to the queries after it.
            # Our own transaction may still write events (a test, a caller's atomic block).
            candidates.append((horizon(self.connection), position))
            own = OWN_XIDS[vendor](self.connection)
            if own is not None:
                candidates.append((own, position))
        later = self.store.events.filter(position__gt=position)
        txid = later.aggregate(value=Min("txid"))["value"]
        if txid is not None:
            first = later.filter(txid=txid).aggregate(value=Min("position"))["value"]
            candidates.append((txid, first - 1))
        return min(candidates, default=(0, position))
