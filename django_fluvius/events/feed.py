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
from django.db.models import BooleanField, Min
from django.db.models.expressions import RawSQL

from django_fluvius.conf import fluvius_settings
from django_fluvius.events import upcasting
from django_fluvius.events.databases import FEED_CLOCK
from django_fluvius.events.store import EventStore
from django_fluvius.models import Event

FeedKey = tuple[int, int]
ORIGIN: FeedKey = (0, 0)

_XID_SPACE = 1 << 32

# Transactions of this database still running, as 32-bit ids; and whether any
# session is hidden from us (then their ids are unknown).
_IN_FLIGHT_SQL = """
SELECT backend_xid::text::bigint, query = '<insufficient privilege>'
  FROM pg_stat_activity
 WHERE datname = current_database() AND pid <> pg_backend_pid()
   AND (backend_xid IS NOT NULL OR query = '<insufficient privilege>')
UNION ALL
SELECT transaction::text::bigint, false FROM pg_prepared_xacts WHERE database = current_database()
"""


def _full_xid(xid32: int, reference: int) -> int | None:
    """The 64-bit id of a 32-bit id seen shortly after ``reference`` (None if it is newer)."""
    behind = (reference - xid32) % _XID_SPACE
    if behind > _XID_SPACE // 2:  # assigned after the reference was read: not a blocker
        return None
    return reference - behind


def postgres_horizon(connection: Any) -> int:
    """The lowest transaction id that may still commit events in this database."""
    with connection.cursor() as cursor:
        # Read the upper bound first: a transaction that gets an id after this
        # point gets one at or above it, so missing it below is harmless.
        cursor.execute(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint,"
            " pg_current_xact_id_if_assigned()::text::bigint"
        )
        xmax, own = cursor.fetchone()
        upper = max(xmax, own + 1) if own is not None else xmax
        # pg_stat_activity is cached per transaction: drop the cache to read it live.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(_IN_FLIGHT_SQL)
        rows = cursor.fetchall()
        if any(hidden for _, hidden in rows):
            cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            return min(cursor.fetchone()[0], upper)
    horizon = upper
    for xid32, _ in rows:
        full = _full_xid(xid32, xmax)
        if full is not None and full < horizon:
            horizon = full
    return horizon


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


def mysql_own_tick(connection: Any) -> None:
    """Ticks this transaction takes later are above the horizon already: nothing to add."""
    return None


# Database vendor -> function giving the horizon; vendors not listed (SQLite)
# commit in position order and need none.
HORIZONS: dict[str, Callable[[Any], int]] = {
    "postgresql": postgres_horizon,
    "mysql": mysql_horizon,
}
OWN_XIDS: dict[str, Callable[[Any], int | None]] = {
    "postgresql": postgres_own_xid,
    "mysql": mysql_own_tick,
}


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

    def _after(self, key: FeedKey, *, inclusive: bool = False) -> RawSQL:
        quote = self.connection.ops.quote_name
        op = ">=" if inclusive else ">"
        return RawSQL(f"({quote('txid')}, {quote('position')}) {op} (%s, %s)", key,
                      output_field=BooleanField())

    def _upto(self, key: FeedKey) -> RawSQL:
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

    def bound(self) -> FeedKey:
        """The key of the last event no still-running transaction can precede."""
        qs = self.store.events
        horizon = HORIZONS.get(self.connection.vendor)
        if horizon is not None:
            qs = qs.filter(txid__lt=horizon(self.connection))
        row = qs.order_by("-txid", "-position").values_list("txid", "position").first()
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
        qs = self._filtered(self.store.events.filter(self._after(after)).filter(self._upto(upto)),
                            evt_keys, namespace)
        events = list(qs.order_by("txid", "position")[:limit])
        return [self.store.decode(e) for e in events] if decode else events

    def keys(self, after: FeedKey, upto: FeedKey, *, evt_keys: Sequence[str] | None = None,
             namespace: str | None = None, limit: int = 500) -> list[FeedKey]:
        """The keys only of what ``read`` would return (no rows built: what a relay hands over)."""
        if tuple(after) >= tuple(upto):
            return []
        qs = self._filtered(self.store.events.filter(self._after(after)).filter(self._upto(upto)),
                            evt_keys, namespace)
        return [(txid or 0, position) for txid, position in
                qs.order_by("txid", "position").values_list("txid", "position")[:limit]]

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
