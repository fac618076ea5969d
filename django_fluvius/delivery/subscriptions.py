"""Subscriptions: every event handler and async projection keeps a checkpoint on the event feed.

The event log is the outbox. A command's transaction writes its events and
nothing for delivery; each subscriber — an ``@event_handler`` or an
``AsyncProjection`` — has one ``Checkpoint`` row, its place in the gap-safe feed
(``events/feed.py``), and whoever relays reads the feed after that place. So
which process wrote an event does not matter: once a subscription exists, every
later event of its keys reaches it, whatever code the writer ran.

Invariants (and the failures they prevent):

* **A checkpoint only moves past settled events** — done, discarded or
  dead-lettered for this subscription. An event handed to a broker that then
  loses it keeps a pending receipt below the checkpoint's reach and is handed
  over again; it is never skipped.
* **A subscription starts where it says** (``start``): ``"now"`` (the default of
  handlers: emails of the past are never sent by accident), ``"beginning"`` (the
  default of async projections) or a position (every event after it). The
  checkpoint row is created by the first process that knows the subscription and
  relays; ``"now"`` is the feed at that moment (the events whose commit woke it
  included).
* **One leader per subscription at a time**: a relay leads a subscription by a
  lease on its checkpoint row (one conditional ``UPDATE``, on every database),
  renewed per batch and expiring if its process dies; checkpoint writes are
  conditional on still holding it. Two relays never hand the same events over.

A subscription in the database that no code declares is reported (the system
check ``fluvius.W056``, ``fluvius_subscriptions``) and never delivered: nothing
is handed to nobody.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, connections, transaction
from django.db.models import Max
from django.utils import timezone

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.handlers import ALL_EVENTS, HandlerSpec, handlers
from django_fluvius.events import feed as feed_module
from django_fluvius.events import sql
from django_fluvius.events.feed import ORIGIN, Feed, FeedKey
from django_fluvius.exceptions import UnknownSubscription
from django_fluvius.models import Checkpoint, DeadLetter, HandlerReceipt

NOW = "now"
BEGINNING = "beginning"
HANDLER = Checkpoint.Kind.HANDLER
PROJECTION = Checkpoint.Kind.PROJECTION

# The default start of each kind: side effects never replay the past by accident;
# read models are built from all of it.
DEFAULT_START = {HANDLER: NOW, PROJECTION: BEGINNING}


def start_problem(start: Any) -> str | None:
    """Why ``start`` is not a usable start (None if it is)."""
    if start in (NOW, BEGINNING):
        return None
    if isinstance(start, int) and not isinstance(start, bool) and start >= 0:
        return None
    return f'start={start!r} is neither "now", "beginning" nor an event position (an integer >= 0)'


@dataclass(frozen=True)
class Subscription:
    """What a relay needs to know of a subscriber: its name, kind, start and the events it reads."""

    name: str
    kind: str
    start: Any
    evt_keys: tuple[str, ...] | None  # None: every key
    namespace: str | None
    subscriber: Any = None  # the HandlerSpec, or the projection's subscriber (dispatch.Subscribers)

    @property
    def read_keys(self) -> list[str] | None:
        return list(self.evt_keys) if self.evt_keys is not None else None


def of_handler(spec: HandlerSpec) -> Subscription:
    keys = None if ALL_EVENTS in spec.evt_keys else tuple(spec.evt_keys)
    return Subscription(spec.name, HANDLER, spec.start, keys, spec.namespace, spec)


def of_projection(subscriber: Any) -> Subscription:
    keys = subscriber.read_keys()
    return Subscription(subscriber.name, PROJECTION, subscriber.start,
                        tuple(keys) if keys is not None else None, subscriber.namespace, subscriber)


def declared(projections: Iterable[Any] = ()) -> list[Subscription]:
    """The subscriptions this process knows: its handlers, then the given projection subscribers."""
    return [of_handler(spec) for spec in handlers] + [of_projection(s) for s in projections]


# -- where a subscription starts ---------------------------------------------------------------


def start_key(start: Any, feed: Feed, *, hint: int | None = None) -> FeedKey:
    """The feed key a new subscription starts after.

    ``hint``: the position before the events whose commit woke this relay, so a
    handler declared in the process that writes the first events after it gets them.
    """
    if start == BEGINNING:
        return ORIGIN
    if start == NOW:
        if hint is None:
            hint = feed.store.events.aggregate(value=Max("position"))["value"] or 0
        return feed.key_before(hint)
    if start_problem(start) is None:
        return feed.key_before(int(start))
    raise ValueError(start_problem(start))


def ensure(sub: Subscription, using: str, *, hint: int | None = None) -> Checkpoint:
    """The subscription's checkpoint, created at its start the first time."""
    existing = Checkpoint.objects.using(using).filter(name=sub.name).first()
    if existing is not None:
        return existing
    key = start_key(sub.start, Feed(using), hint=hint)
    try:
        with transaction.atomic(using=using):
            return Checkpoint.objects.using(using).create(
                name=sub.name, kind=sub.kind, txid=key[0], position=key[1], sent_txid=key[0],
                sent_position=key[1])
    except IntegrityError:  # another process created it first: theirs stands
        return Checkpoint.objects.using(using).get(name=sub.name)


# -- one leader per subscription ---------------------------------------------------------------


def relay_identity() -> str:
    """A name for this relay (host, process, thread and a random tag): the lease's owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{uuid.uuid4().hex[:8]}"


# The bookkeeping statements below (take, renew and give up the lease, move the checkpoint)
# are hand-built SQL, built once per vendor and shape (``sql.statement``): the relay runs
# them after every command in inline mode, where the ORM's query building cost more than
# the database. Standing alone (autocommit) on PostgreSQL they commit without waiting for
# the WAL flush (``sql.relax_commit_sql``): losing one in a server crash is harmless.
# A lost lease take or give-up only changes who may lead next; a lost checkpoint move
# puts the checkpoint back before events that were settled, so they are offered again
# and their receipts (written durably in the handlers' own transactions) make the second
# delivery do nothing. WAL is replayed in order, so a later durable commit (a handler's)
# makes every earlier relaxed one durable too. Inside a caller's transaction (the
# checkpoint moved with the last delivery's effect) they are as durable as it is.


def _lease_until() -> Any:
    return timezone.now() + timedelta(seconds=float(fluvius_settings.SUBSCRIPTION_LEASE))


def _build_take(quote: Any) -> str:
    return (f"UPDATE {quote(Checkpoint._meta.db_table)} SET {quote('lease_owner')} = %s, {quote('lease_until')} = %s "
            f"WHERE {quote('name')} = %s AND ({quote('lease_until')} IS NULL OR {quote('lease_until')} < %s "
            f"OR {quote('lease_owner')} = %s)")


def _take_params(name: str, owner: str, connection: Any) -> list[Any]:
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    until = now + timedelta(seconds=float(fluvius_settings.SUBSCRIPTION_LEASE))
    return [owner, adapt(until), name, adapt(now), owner]


def take_lease(name: str, owner: str, using: str) -> bool:
    """Lead the subscription for ``SUBSCRIPTION_LEASE`` seconds; False if another relay leads it."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(connection, _build_take), _take_params(name, owner, connection))
        return cursor.rowcount > 0


# Vendors whose UPDATE can return the row it changed: taking the lease and reading the
# checkpoint are then one statement.
UPDATE_RETURNING = frozenset({"postgresql", "sqlite"})
_LEAD_FIELDS = ("id", "name", "kind", "txid", "position", "sent_txid", "sent_position")


def lead(name: str, owner: str, using: str) -> Checkpoint | None:
    """Take the lease (``take_lease``) and read the checkpoint it holds; None if another relay leads.

    One ``UPDATE … RETURNING`` where the database has it. The checkpoint comes
    back with the fields a relay moves (the others are loaded if touched).
    """
    connection = connections[using]
    if connection.vendor not in UPDATE_RETURNING:
        if not take_lease(name, owner, using):
            return None
        return Checkpoint.objects.using(using).get(name=name)
    with connection.cursor() as cursor:
        cursor.execute(sql.statement(connection, _build_lead), _take_params(name, owner, connection))
        row = cursor.fetchone()
    return Checkpoint.from_db(using, list(_LEAD_FIELDS), row) if row is not None else None


def _build_lead(quote: Any) -> str:
    return f"{_build_take(quote)} RETURNING {', '.join(quote(f) for f in _LEAD_FIELDS)}"


def lead_to_bound(name: str, owner: str, using: str) -> tuple[Checkpoint | None, FeedKey]:
    """``lead``, and the feed's bound (``Feed.bound``) read in the same statement (two on MariaDB).

    What the inline relay asks after a commit. The bound is read before the events
    are (``Feed.read``, a later statement), as the feed requires: every transaction
    below its horizon has finished by then, so the read sees all of their events.
    (checkpoint or None when another relay leads, the bound).
    """
    connection = connections[using]
    vendor = connection.vendor
    relax = sql.relax_commit_sql(connection)
    if vendor == "postgresql":
        if connection.in_atomic_block or not connection.get_autocommit():
            feed_module._clear_stats(connection)
        text = sql.statement(connection, _build_lead_to_bound_pg, relax)
    elif vendor == "sqlite":
        text = sql.statement(connection, _build_lead_to_bound_sqlite)
    else:
        if not take_lease(name, owner, using):
            return None, ORIGIN
        with connection.cursor() as cursor:
            cursor.execute(sql.statement(connection, _build_checkpoint_and_bound), [name])
            row = cursor.fetchone()
        return _lead_row(row, using)
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(text, _take_params(name, owner, connection))
        row = cursor.fetchone()
    return _lead_row(row, using)


def _lead_row(row: Any, using: str) -> tuple[Checkpoint | None, FeedKey]:
    if row is None:
        return None, ORIGIN
    fields = len(_LEAD_FIELDS)
    cp = Checkpoint.from_db(using, list(_LEAD_FIELDS), row[:fields])
    txid, position = row[fields], row[fields + 1]
    return cp, ((txid or 0, position) if position is not None else ORIGIN)


def _build_lead_to_bound_pg(quote: Any, relax: str) -> str:
    # One statement: the bound's horizon is read in it (the lease's own transaction id, if
    # the UPDATE assigned it first, is allowed for in HORIZON_SQL), and the lease's commit
    # is relaxed by the set_config of the final SELECT.
    columns = ", ".join(f"c.{quote(f)}" for f in _LEAD_FIELDS)
    return (f"WITH b AS ({feed_module.bound_sql_text(quote, 'postgresql')}), "
            f"c AS ({_build_lead(quote)}) "
            f"SELECT {columns}, b.{quote('txid')}, b.{quote('position')}{', ' + relax if relax else ''} "
            f"FROM c LEFT JOIN b ON true")


def _build_lead_to_bound_sqlite(quote: Any) -> str:
    bound = feed_module.bound_sql_text(quote, "sqlite")
    return (f"{_build_lead(quote)}, (SELECT b.{quote('txid')} FROM ({bound}) AS b), "
            f"(SELECT b.{quote('position')} FROM ({bound}) AS b)")


def _build_checkpoint_and_bound(quote: Any) -> str:
    columns = ", ".join(f"c.{quote(f)}" for f in _LEAD_FIELDS)
    return (f"SELECT {columns}, b.{quote('txid')}, b.{quote('position')} FROM {quote(Checkpoint._meta.db_table)} AS c "
            f"LEFT JOIN ({feed_module.bound_sql_text(quote, 'mysql')}) AS b ON 1 = 1 WHERE c.{quote('name')} = %s")


def _build_release(quote: Any, relax: str) -> str:
    return (f"UPDATE {quote(Checkpoint._meta.db_table)} SET {quote('lease_owner')} = '', {quote('lease_until')} = NULL "
            f"WHERE {quote('name')} = %s AND {quote('lease_owner')} = %s" + (f" RETURNING {relax}" if relax else ""))


def release_lease(name: str, owner: str, using: str) -> None:
    connection = connections[using]
    with sql.hot_cursor(connection) as cursor:
        relax = sql.relax_commit_sql(connection)
        cursor.execute(sql.statement(connection, _build_release, relax), [name, owner])
        if relax:
            cursor.fetchall()


def _build_save(quote: Any, release: bool, key: bool, sent: bool, applied: bool, relax: str) -> str:
    sets = [f"{quote('updated')} = %s", f"{quote('lease_until')} = %s"]
    if release:
        sets.append(f"{quote('lease_owner')} = ''")
    if key:
        sets += [f"{quote('txid')} = %s", f"{quote('position')} = %s"]
    if sent:
        sets += [f"{quote('sent_txid')} = %s", f"{quote('sent_position')} = %s"]
    if applied:
        sets.append(f"{quote('events_applied')} = {quote('events_applied')} + %s")
    return (f"UPDATE {quote(Checkpoint._meta.db_table)} SET {', '.join(sets)} "
            f"WHERE {quote('name')} = %s AND {quote('lease_owner')} = %s" + (f" RETURNING {relax}" if relax else ""))


def save_checkpoint(name: str, owner: str, using: str, *, key: FeedKey | None = None,
                    sent: FeedKey | None = None, applied: int = 0, release: bool = False) -> bool:
    """Move the checkpoint (and the handed-over mark) while still leading; False if the lease was lost.

    ``release=True`` gives the lease up in the same statement (one commit fewer).
    Inside a transaction of the caller's, it commits with it (and as durably).
    """
    connection = connections[using]
    adapt = connection.ops.adapt_datetimefield_value
    relax = sql.relax_commit_sql(connection)
    params: list[Any] = [adapt(timezone.now()), None if release else adapt(_lease_until())]
    if key is not None:
        params += [int(key[0]), int(key[1])]
    if sent is not None:
        params += [int(sent[0]), int(sent[1])]
    if applied:
        params.append(int(applied))
    params += [name, owner]
    with sql.hot_cursor(connection) as cursor:
        cursor.execute(sql.statement(connection, _build_save, release, key is not None, sent is not None,
                                     bool(applied), relax), params)
        if relax:
            return bool(cursor.fetchall())
        return cursor.rowcount > 0


# -- operations: status and reset --------------------------------------------------------------


@dataclass
class Status:
    name: str
    kind: str
    declared: bool
    position: int
    head: int
    lag: int
    pending: int
    dead_letters: int
    leader: str
    updated: Any


def status(subs: Iterable[Subscription], using: str) -> list[Status]:
    """Every subscription, declared or only in the database: checkpoint, head, lag, pending, dead letters."""
    feed = Feed(using)
    head = feed.head()
    known = {sub.name: sub for sub in subs}
    rows = {cp.name: cp for cp in Checkpoint.objects.using(using).all()}
    now = timezone.now()
    out = []
    for name in sorted(set(known) | set(rows)):
        sub = known.get(name)
        cp = rows.get(name)
        key = cp.key if cp is not None else ORIGIN
        if sub is not None and cp is None and sub.start != BEGINNING:
            lag = 0  # not started yet: starts "now" or at a position when a relay first runs it
        else:
            lag = feed.count(key, evt_keys=sub.read_keys if sub else None, namespace=sub.namespace if sub else None)
        kind = sub.kind if sub is not None else (cp.kind if cp is not None else HANDLER)
        pending = (HandlerReceipt.objects.using(receipt_database(sub)).filter(
            handler=name, status=HandlerReceipt.Status.PENDING).count() if kind == HANDLER else 0)
        dead = DeadLetter.objects.using(using).filter(handler=name).count()
        leader = cp.lease_owner if cp is not None and cp.lease_until and cp.lease_until > now else ""
        out.append(Status(name, kind, sub is not None, key[1], head[1], lag, pending, dead, leader,
                          cp.updated if cp is not None else None))
    return out


def receipt_database(sub: Subscription | None) -> str:
    spec = sub.subscriber if sub is not None else None
    return getattr(spec, "using", None) or fluvius_settings.DATABASE


def reset(name: str, to: Any, subs: Iterable[Subscription], using: str) -> Checkpoint:
    """Move a handler's checkpoint to ``"beginning"``, ``"now"`` or a position (async projections
    have their own ``reset``/``start_at``, which ``fluvius_subscriptions`` calls).

    Events before the new place that were handled already keep their receipts: a
    handler reset to the beginning is offered everything again and runs only what
    it has not done (``fluvius_replay`` forces a re-run).
    """
    problem = start_problem(to)
    if problem is not None:
        raise ValueError(problem)
    known = {sub.name: sub for sub in subs}
    cp = Checkpoint.objects.using(using).filter(name=name).first()
    if cp is None and name not in known:
        names = ", ".join(sorted(set(known) | set(Checkpoint.objects.using(using).values_list("name", flat=True))))
        raise UnknownSubscription(f"No subscription is named {name!r} (known: {names or 'none'}).")
    if cp is None:
        cp = ensure(known[name], using)
    key = start_key(to, Feed(using))
    with transaction.atomic(using=using):
        Checkpoint.objects.using(using).filter(pk=cp.pk).update(
            txid=key[0], position=key[1], sent_txid=key[0], sent_position=key[1], failures=0, last_error="",
            updated=timezone.now())
    cp.refresh_from_db(using=using)
    return cp


def feed_max(a: FeedKey, b: FeedKey) -> FeedKey:
    """The later of two feed keys (a checkpoint never moves back)."""
    return tuple(a) if tuple(a) > tuple(b) else tuple(b)  # type: ignore[return-value]
