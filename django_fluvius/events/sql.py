"""Hand-built SQL for the command bus's hot path.

The ORM costs a few hundred microseconds of Python per statement; a command
runs three or four of them. These helpers build each statement once per
(model, database vendor) from the model's own metadata and convert values with
the fields' own ``get_db_prep_save``, so they stay correct for any backend
Django supports (PostgreSQL, SQLite and MariaDB/MySQL are tested) while skipping
the query compiler. Semantics are plain ``INSERT`` and ``INSERT ... ON CONFLICT (pk) DO
UPDATE``: nothing an ORM save would do differently for these tables.

MariaDB / MySQL have no ``ON CONFLICT (pk)``: their ``ON DUPLICATE KEY UPDATE``
fires on *any* unique key, which would update another row where PostgreSQL
raises. So the upsert takes that form only for tables whose primary key is their
one unique key (most projections), and otherwise falls back to two plain
statements: ``UPDATE ... WHERE pk``, then ``INSERT`` when no row matched (Django
connects with ``FOUND_ROWS``, so the count is of matched rows), which raises on a
clash with another unique key just as PostgreSQL does.

On PostgreSQL with psycopg 3 the bus's write statement (``WriteBatch``) runs on
a cursor of its own over Django's connection (same transaction, same error
wrapping and query logging): parameters bound on the server and the statement
prepared (``FLUVIUS['PREPARED_STATEMENTS']``), whatever the database's
``OPTIONS`` choose for the project's own queries. Values of the framework's
plain field types go to psycopg as they are when they already have the type
psycopg adapts (a ``str`` for a ``CharField``, an aware ``datetime`` ...);
anything else still goes through the field's ``get_db_prep_save``.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

from django.db import IntegrityError, OperationalError, connections, models, transaction
from django.db.models.expressions import DatabaseDefault

from django_fluvius.conf import fluvius_settings


@cache
def _insert_sql(model: type[models.Model], columns: tuple[str, ...], vendor: str, quote: Any,
                returning: bool) -> str:
    table = quote(model._meta.db_table)
    cols = ", ".join(quote(c) for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks})"
    if returning:
        sql += f" RETURNING {quote(model._meta.pk.column)}"
    return sql


@cache
def _upsert_sql(model: type[models.Model], columns: tuple[str, ...], update: tuple[str, ...], vendor: str,
                quote: Any) -> str:
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    cols = ", ".join(quote(c) for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT ({pk}) "
    if update:
        sql += "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update)
    else:
        sql += "DO NOTHING"
    return sql


@cache
def _mysql_upsert_sql(model: type[models.Model], columns: tuple[str, ...], update: tuple[str, ...],
                      quote: Any) -> str:
    """MariaDB / MySQL: ``ON DUPLICATE KEY UPDATE`` (only for tables with no unique key but the pk)."""
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    cols = ", ".join(quote(c) for c in columns)
    marks = ", ".join(["%s"] * len(columns))
    # VALUES(col): the value the INSERT would have written (MariaDB has no row alias).
    sets = ", ".join(f"{quote(c)} = VALUES({quote(c)})" for c in update) or f"{pk} = {pk}"
    return f"INSERT INTO {table} ({cols}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {sets}"


@cache
def unique_beyond_pk(model: type[models.Model]) -> bool:
    """Has the table a unique key besides its primary key (then ON DUPLICATE KEY is unsafe)?"""
    opts = model._meta
    return (any(f.unique and not f.primary_key for f in opts.concrete_fields)
            or bool(opts.unique_together)
            or any(isinstance(c, models.UniqueConstraint) for c in opts.constraints))


@cache
def _update_sql(model: type[models.Model], update: tuple[str, ...], quote: Any) -> str:
    table = quote(model._meta.db_table)
    pk = quote(model._meta.pk.column)
    sets = ", ".join(f"{quote(c)} = %s" for c in update) or f"{pk} = {pk}"
    return f"UPDATE {table} SET {sets} WHERE {pk} = %s"


@cache
def _fields_by_attname(model: type[models.Model]) -> dict[str, models.Field]:
    return {f.attname: f for f in model._meta.concrete_fields}


def _fields_to_insert(obj: models.Model) -> list[Any]:
    """The fields an INSERT of ``obj`` sends: all but the primary key, Python defaults filled in,
    those the database fills (``db_default``) left out."""
    pk_field = type(obj)._meta.pk
    fields = [f for f in type(obj)._meta.concrete_fields if f is not pk_field]
    for f in fields:
        if f.attname not in obj.__dict__ and f.has_default():
            setattr(obj, f.attname, f.get_default())
    return _without_db_defaults(obj, fields)


def _without_db_defaults(obj: models.Model, fields: list[models.Field]) -> list[models.Field]:
    """Leave out columns the database fills itself (``db_default`` left unset, e.g. ``Event.txid``)."""
    return [f for f in fields if not isinstance(obj.__dict__.get(f.attname), DatabaseDefault)]


def insert(obj: models.Model, using: str, *, exclude_pk: bool = True, stored: dict[str, Any] | None = None) -> None:
    """INSERT one model instance; set its auto primary key from RETURNING.

    ``stored``: attname -> the value written instead of the instance's (personal data
    sealed for storage while the instance keeps the plaintext its caller returns).
    """
    model = type(obj)
    connection = connections[using]
    pk_field = model._meta.pk
    fields = [f for f in model._meta.concrete_fields if not (exclude_pk and f is pk_field)]
    for f in fields:
        if f.attname not in obj.__dict__ and f.has_default():
            setattr(obj, f.attname, f.get_default())
    fields = _without_db_defaults(obj, fields)
    returning = exclude_pk and connection.features.can_return_columns_from_insert
    sql = _insert_sql(model, tuple(f.column for f in fields), connection.vendor, connection.ops.quote_name,
                      returning)
    params = [f.get_db_prep_save(_value(obj, f, stored), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        if returning:
            pk = cursor.fetchone()[0]
        elif exclude_pk:
            pk = connection.ops.last_insert_id(cursor, model._meta.db_table, str(pk_field.column))
        else:
            pk = None
    if pk is not None:
        setattr(obj, pk_field.attname, pk_field.to_python(pk))
    obj._state.adding = False
    obj._state.db = using


def _value(obj: models.Model, field: models.Field, stored: dict[str, Any] | None) -> Any:
    if stored is not None and field.attname in stored:
        return stored[field.attname]
    return getattr(obj, field.attname)


def upsert(model: type[models.Model], pk: Any, values: dict[str, Any], using: str,
           update: Iterable[str] | None = None) -> None:
    """INSERT a row by primary key, or UPDATE the ``update`` columns when it exists."""
    connection = connections[using]
    update = tuple(values if update is None else update)
    if connection.vendor == "mysql" and unique_beyond_pk(model):
        _update_then_insert(model, pk, values, update, connection)
        return
    sql_text, params = _upsert_statement(model, pk, values, update, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql_text, params)


def _update_then_insert(model: type[models.Model], pk: Any, values: dict[str, Any], update: tuple[str, ...],
                        connection: Any) -> None:
    """The upsert as two plain statements (MariaDB / MySQL tables with other unique keys)."""
    by_attname = _fields_by_attname(model)
    pk_field = model._meta.pk
    sql_text = _update_sql(model, tuple(by_attname[n].column for n in update), connection.ops.quote_name)
    params = [_db_value(by_attname[n], values[n], connection) for n in update]
    params.append(pk_field.get_db_prep_save(pk, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql_text, params)
        if cursor.rowcount:
            return
        names = tuple(values)
        fields = [pk_field, *(by_attname[n] for n in names)]
        cursor.execute(_insert_sql(model, tuple(f.column for f in fields), connection.vendor,
                                   connection.ops.quote_name, False),
                       [pk_field.get_db_prep_save(pk, connection),
                        *(_db_value(by_attname[n], values[n], connection) for n in names)])


class WriteBatch:
    """The writes of one command, sent to the database together.

    On PostgreSQL they become one statement of data-modifying CTEs (one round
    trip instead of one per write; a unique violation in any of them fails the
    whole statement, which the caller's transaction rolls back anyway).
    Elsewhere (SQLite: no network) they run one by one. Auto primary keys of
    inserted objects are set from RETURNING either way.
    """

    def __init__(self, using: str):
        self.using = using
        self._inserts: list[tuple[models.Model, dict[str, Any] | None]] = []
        self._upserts: list[tuple[type[models.Model], Any, dict[str, Any], tuple[str, ...]]] = []

    def insert(self, obj: models.Model, stored: dict[str, Any] | None = None) -> None:
        """Add an INSERT; ``stored`` as for ``insert()``."""
        self._inserts.append((obj, stored))

    def upsert(self, model: type[models.Model], pk: Any, values: dict[str, Any],
               update: Iterable[str] | None = None) -> None:
        self._upserts.append((model, pk, values, tuple(values if update is None else update)))

    def flush(self, *, last: bool = False) -> None:
        """Send the rows; ``last``: the caller's transaction runs nothing after this and commits.

        ``last`` is the bus's promise (its own transaction, outermost, ``after_append``
        writing nothing): on PostgreSQL, when nothing has been sent in that transaction
        yet, the one statement runs as its own transaction instead (``_commits_alone``).
        """
        connection = connections[self.using]
        if connection.vendor == "postgresql" and self._inserts:
            self._flush_as_one_statement(connection, alone=last and _commits_alone(connection))
        elif connection.vendor == "mysql" and self._inserts and multi_statements(connection):
            self._flush_as_one_round_trip(connection)
        else:
            for obj, stored in self._inserts:
                insert(obj, self.using, stored=stored)
            for model, pk, values, update in self._upserts:
                upsert(model, pk, values, self.using, update=update)
        self._inserts.clear()
        self._upserts.clear()

    def _flush_as_one_statement(self, connection: Any, *, alone: bool = False) -> None:
        json_text = _json_text_param()
        parts: list[str] = []
        params: list[Any] = []
        returning: list[tuple[int, models.Model]] = []
        for obj, stored in self._inserts:
            model = type(obj)
            fields = _fields_to_insert(obj)
            returning.append((len(parts), obj))
            parts.append(_insert_sql(model, tuple(f.column for f in fields), connection.vendor,
                                     connection.ops.quote_name, True))
            values = obj.__dict__
            # JSON the bus serialized once already (``PRESERIALIZED``): sent as that text;
            # ``stored`` (sealed personal data) wins over both.
            texts = values.get(PRESERIALIZED) if json_text is not None else None
            if stored is not None:
                params += [f.get_db_prep_save(stored[f.attname], connection) if f.attname in stored
                           else json_text(texts[f.attname]) if texts and f.attname in texts
                           else _param(f, values[f.attname], connection)
                           for f in fields]
            elif texts:
                params += [json_text(texts[f.attname]) if f.attname in texts else _param(f, values[f.attname], connection)
                           for f in fields]
            else:
                params += [_param(f, values[f.attname], connection) for f in fields]
        for model, pk, values, update in self._upserts:
            sql_text, sql_params = _upsert_statement(model, pk, values, update, connection)
            parts.append(sql_text)
            params += sql_params
        ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts))
        final = " UNION ALL ".join(
            f"SELECT {i}, {connection.ops.quote_name(type(obj)._meta.pk.column)} FROM w{i}"
            for i, obj in returning
        ) or "SELECT NULL, NULL"
        with hot_cursor(connection) as cursor:
            if alone:
                with _autocommitted(connection.connection):
                    cursor.execute(f"WITH {ctes} {final}", params)
            else:
                cursor.execute(f"WITH {ctes} {final}", params)
            pks = dict(cursor.fetchall())
        for i, obj in returning:
            pk_field = type(obj)._meta.pk
            setattr(obj, pk_field.attname, pk_field.to_python(pks[i]))
            obj._state.adding = False
            obj._state.db = self.using

    def _flush_as_one_round_trip(self, connection: Any) -> None:
        """MariaDB / MySQL: the statements sent together, separated by ``;`` (one round trip).

        mysqlclient connects with ``CLIENT.MULTI_STATEMENTS`` (its default, which Django's
        backend keeps), so the server runs them in order and stops at the first error, which
        comes back as that statement's (a unique violation: ``IntegrityError``). A transaction
        ``command_transaction`` has not begun yet is begun by the same round trip. Upserts of
        tables with another unique key (two statements, the second depending on the first's
        count) run after it.
        """
        statements: list[str] = []
        params: list[Any] = []
        returning: list[tuple[int, models.Model]] = []
        if getattr(connection, BEGIN_PENDING, False):
            statements.append("START TRANSACTION")
            setattr(connection, BEGIN_PENDING, False)  # sent here, not before it by command_transaction
        for obj, stored in self._inserts:
            model = type(obj)
            fields = _fields_to_insert(obj)
            returning.append((len(statements), obj))
            statements.append(_insert_sql(model, tuple(f.column for f in fields), connection.vendor,
                                          connection.ops.quote_name, True))
            values = obj.__dict__
            # JSON the bus serialized once already (``PRESERIALIZED``) is the column's text as
            # it is; ``stored`` (sealed personal data) wins over both.
            texts = values.get(PRESERIALIZED) or {}
            params += [f.get_db_prep_save(stored[f.attname], connection) if stored and f.attname in stored
                       else texts[f.attname] if f.attname in texts
                       else f.get_db_prep_save(values[f.attname], connection)
                       for f in fields]
        later = []
        for model, pk, values, update in self._upserts:
            if unique_beyond_pk(model):
                later.append((model, pk, values, update))
                continue
            sql_text, sql_params = _upsert_statement(model, pk, values, update, connection)
            statements.append(sql_text)
            params += sql_params
        pks: dict[int, Any] = {}
        wanted = dict(returning)
        with connection.cursor() as cursor:
            cursor.execute("; ".join(statements), params)
            for index in range(len(statements)):
                if index:
                    _next_result(connection, cursor)
                if index in wanted:
                    pks[index] = cursor.fetchone()[0]
            _next_result(connection, cursor)  # none is left: the connection is ready for the next
        for i, obj in returning:
            pk_field = type(obj)._meta.pk
            setattr(obj, pk_field.attname, pk_field.to_python(pks[i]))
            obj._state.adding = False
            obj._state.db = self.using
        for model, pk, values, update in later:
            _update_then_insert(model, pk, values, update, connection)


def multi_statements(connection: Any) -> bool:
    """May this MariaDB / MySQL connection send several statements at once?

    mysqlclient sets ``CLIENT.MULTI_STATEMENTS`` unless told ``multi_statements=False``
    (which a project may put in the database's ``OPTIONS``; then one round trip a statement).
    """
    return bool((connection.settings_dict.get("OPTIONS") or {}).get("multi_statements", True))


def _next_result(connection: Any, cursor: Any) -> bool:
    """The cursor on the next statement's result; its error raised as Django's backend raises it."""
    try:
        return bool(cursor.nextset())  # Django wraps nextset's errors
    except OperationalError as exc:
        # The backend's own mapping, which only its execute() applies (NOT NULL and the like).
        from django.db.backends.mysql.base import CursorWrapper

        if exc.args and exc.args[0] in CursorWrapper.codes_for_integrityerror:
            raise IntegrityError(*exc.args) from exc
        raise


# -- MariaDB / MySQL: the bus's transaction --------------------------------------------------

# A connection attribute: True while the bus's transaction is open but not begun on the server.
BEGIN_PENDING = "_fluvius_begin_pending"
# What Django's ``set_autocommit`` calls, when the connection has it, to open a transaction
# without turning autocommit off (SQLite's backend has it).
_BEGIN_HOOK = "_start_transaction_under_autocommit"


@contextmanager
def command_transaction(using: str) -> Iterator[None]:
    """``transaction.atomic(using=using)`` for the bus; on MariaDB / MySQL, without toggling autocommit.

    Django opens a transaction on MySQL by turning autocommit off and closes it by turning
    it on again: two round trips (mysqlclient's ``autocommit()``) besides the ``COMMIT``.
    Here, outside any other transaction, the block leaves the session in autocommit and
    begins the transaction with ``START TRANSACTION`` (which lasts until ``COMMIT`` or
    ``ROLLBACK`` whatever autocommit says) sent with the block's first statement: with the
    write batch's round trip when that comes first (a command whose aggregate was cached),
    else on its own just before the first statement. Django's bookkeeping is its own
    (``atomic``'s: savepoints, ``on_commit``, rollback on error), entered through the
    hook Django has for SQLite's explicit ``BEGIN`` (``_start_transaction_under_autocommit``).
    """
    connection = connections[using]
    if connection.vendor != "mysql" or connection.in_atomic_block or not connection.get_autocommit():
        with transaction.atomic(using=using):
            yield
        return

    def defer_begin() -> None:
        setattr(connection, BEGIN_PENDING, True)

    def begin_first(execute: Any, sql_text: str, params: Any, many: bool, context: Any) -> Any:
        if getattr(connection, BEGIN_PENDING, False):
            setattr(connection, BEGIN_PENDING, False)
            with connection.wrap_database_errors:
                connection.connection.query(b"START TRANSACTION")
        return execute(sql_text, params, many, context)

    atomic = transaction.atomic(using=using)
    setattr(connection, _BEGIN_HOOK, defer_begin)  # only while atomic enters: its other blocks keep Django's way
    try:
        atomic.__enter__()
    finally:
        delattr(connection, _BEGIN_HOOK)
    connection.execute_wrappers.append(begin_first)
    try:
        yield
    except BaseException as exc:
        _end_deferral(connection, begin_first)
        atomic.__exit__(type(exc), exc, exc.__traceback__)  # rolls back; never swallows the error
        raise
    else:
        _end_deferral(connection, begin_first)
        atomic.__exit__(None, None, None)


def _end_deferral(connection: Any, wrapper: Any) -> None:
    """Before the commit (or rollback) and its ``on_commit`` callbacks: their statements are their own."""
    setattr(connection, BEGIN_PENDING, False)
    if wrapper in connection.execute_wrappers:
        connection.execute_wrappers.remove(wrapper)


# -- PostgreSQL: a command's one statement, its own transaction ----------------------------


def _commits_alone(connection: Any) -> bool:
    """May the bus's write statement run as its own transaction here (PostgreSQL, psycopg 3)?

    A statement is atomic: when it is all the transaction would hold, sending it without
    ``BEGIN`` and ``COMMIT`` commits the same, durably, in one round trip instead of three.
    So only in Django's outermost block, which commits on exit (``atomic_blocks``: the
    bus's own; not a caller's ``atomic`` around it, nor autocommit turned off by hand),
    and while the server has seen nothing of the transaction (psycopg's lazy ``BEGIN`` not
    sent: no read, savepoint or other write came first).
    """
    raw = connection.connection
    pgconn = getattr(raw, "pgconn", None)
    if pgconn is None or len(connection.atomic_blocks) != 1 or not connection.commit_on_exit:
        return False
    if connection.savepoint_ids or connection.needs_rollback or raw.autocommit:
        return False
    return pgconn.transaction_status == _PQ_IDLE


_PQ_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE, without importing psycopg on every command


@contextmanager
def _autocommitted(raw: Any) -> Iterator[None]:
    """The psycopg connection in autocommit for one statement, then back in the block's transaction.

    Django's block still runs its exit: the ``COMMIT`` it asks for finds nothing open (psycopg
    sends none), then its ``on_commit`` callbacks run, as after any commit; a failed
    statement left nothing open either, and the rollback is as empty.
    """
    raw.autocommit = True
    try:
        yield
    finally:
        if not raw.closed:  # a lost connection: its error stands (Django's wrapper raises it)
            raw.autocommit = False


# -- PostgreSQL: the hot statement's cursor and parameters --------------------------------

# Field classes (exactly these, not subclasses that may convert differently) whose
# value psycopg adapts as it is when it has one of these Python types. ``bool`` is
# an ``int``: left to the field for integer columns.
_PLAIN_TYPES: dict[type[models.Field], tuple[type, ...]] = {
    models.CharField: (str,),
    models.TextField: (str,),
    models.UUIDField: (uuid.UUID,),
    models.IntegerField: (int,),
    models.BigIntegerField: (int,),
    models.PositiveIntegerField: (int,),
    models.PositiveSmallIntegerField: (int,),
    models.SmallIntegerField: (int,),
    models.FloatField: (float,),
    models.BooleanField: (bool,),
}


def _param(field: models.Field, value: Any, connection: Any) -> Any:
    """The value as psycopg gets it: as it is when that is what the field would give, else the field's own."""
    if value is None:
        return None
    plain = _PLAIN_TYPES.get(type(field))
    if plain is not None and type(value) in plain:
        return value
    if type(field) is models.DateTimeField and type(value) is datetime.datetime and value.tzinfo is not None:
        return value
    return field.get_db_prep_save(value, connection)


# An instance attribute: {attname: JSON text} of JSON fields whose value the caller has
# already serialized (with the field's encoder); the batch sends that text as it is.
PRESERIALIZED = "_fluvius_json"


@cache
def _json_text_param() -> Any:
    """psycopg 3: a function wrapping JSON text as a jsonb parameter (None elsewhere)."""
    try:
        from django.db.backends.postgresql.psycopg_any import is_psycopg3
        from psycopg.types.json import Jsonb
    except ImportError:
        return None
    if not is_psycopg3:
        return None
    return lambda text: Jsonb(text, dumps=str)


def prepared_statements(connection: Any) -> bool:
    """Prepare the bus's statements on this connection? ``FLUVIUS['PREPARED_STATEMENTS']``.

    ``None`` (the default) prepares them unless the database's ``OPTIONS`` say
    ``"prepare_threshold": None`` (no prepared statements: the setting for
    PgBouncer in transaction mode).
    """
    setting = fluvius_settings.PREPARED_STATEMENTS
    if setting is None:
        options = connection.settings_dict.get("OPTIONS") or {}
        return not ("prepare_threshold" in options and options["prepare_threshold"] is None)
    return bool(setting)


_NEVER_BY_COUNT = 2 ** 62


@cache
def _hot_cursor_class() -> type | None:
    """A psycopg 3 cursor binding parameters on the server, preparing when told (None without psycopg 3)."""
    try:
        import psycopg
    except ImportError:
        return None

    class HotCursor(psycopg.Cursor):
        prepare_statements: bool = True

        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                    binary: bool | None = None) -> Any:
            if prepare is None:
                prepare = self.prepare_statements
            conn = self.connection
            threshold = conn.prepare_threshold
            if not prepare or threshold is not None:
                return super().execute(query, params, prepare=prepare, binary=binary)
            # Django's default OPTIONS leave the connection's threshold at None, which turns
            # preparing off for every cursor: lift it for this statement only (a threshold
            # no query reaches, so nothing else gets prepared), then put it back.
            conn.prepare_threshold = _NEVER_BY_COUNT
            try:
                return super().execute(query, params, prepare=True, binary=binary)
            finally:
                conn.prepare_threshold = threshold

    return HotCursor


def hot_cursor(connection: Any) -> Any:
    """A cursor for the bus's statements: server-side binding on psycopg 3, else Django's own."""
    cursor_class = _hot_cursor_class()
    if cursor_class is None or connection.vendor != "postgresql":
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    raw = connection.connection
    if not hasattr(raw, "pgconn"):  # psycopg2: its own cursor, client-side binding
        return connection.cursor()
    with connection.wrap_database_errors:
        cursor = cursor_class(raw)
    cursor.prepare_statements = prepared_statements(connection)
    # Django's wrapper: its error translation (IntegrityError ...) and query logging.
    return connection._prepare_cursor(cursor)


# (vendor, statement name, shape...) -> SQL text: the relay's hand-built statements.
_texts: dict[tuple[Any, ...], str] = {}


def statement(connection: Any, build: Callable[..., str], *shape: Any) -> str:
    """The SQL text ``build(quote, *shape)`` gives for this connection's vendor, built once.

    Keyed by the vendor (not the connection: every thread has its own) and the shape.
    """
    key = (connection.vendor, build, *shape)
    text = _texts.get(key)
    if text is None:
        text = _texts[key] = build(connection.ops.quote_name, *shape)
    return text


def relax_commit_sql(connection: Any) -> str:
    """An SQL expression that makes the running transaction's commit return before its WAL is
    flushed (PostgreSQL: ``synchronous_commit`` off for this transaction only), or ''.

    For bookkeeping statements that commit on their own (autocommit): evaluated in the
    statement, so it costs no round trip. Never inside a caller's transaction, whose
    own writes must stay durable.
    """
    if connection.vendor != "postgresql" or connection.in_atomic_block or not connection.get_autocommit():
        return ""
    return "set_config('synchronous_commit', 'off', true)"


def _upsert_statement(model: type[models.Model], pk: Any, values: dict[str, Any], update: tuple[str, ...],
                      connection: Any) -> tuple[str, list[Any]]:
    by_attname = _fields_by_attname(model)
    pk_field = model._meta.pk
    names = tuple(values)
    fields = [pk_field, *(by_attname[n] for n in names)]
    columns = tuple(f.column for f in fields)
    update_columns = tuple(by_attname[n].column for n in update)
    if connection.vendor == "mysql":
        sql_text = _mysql_upsert_sql(model, columns, update_columns, connection.ops.quote_name)
    else:
        sql_text = _upsert_sql(model, columns, update_columns, connection.vendor, connection.ops.quote_name)
    prep = _param if connection.vendor == "postgresql" else _prep_save
    params = [prep(pk_field, pk, connection)]
    for n in names:
        field = by_attname[n]
        value = values[n]
        params.append(prep(field, field.to_python(value) if _needs_python(field) else value, connection))
    return sql_text, params


def _db_value(field: models.Field, value: Any, connection: Any) -> Any:
    return field.get_db_prep_save(field.to_python(value) if _needs_python(field) else value, connection)


def _prep_save(field: models.Field, value: Any, connection: Any) -> Any:
    return field.get_db_prep_save(value, connection)


def _needs_python(field: models.Field) -> bool:
    """Fields whose raw JSON form (text) must be parsed before the backend sees it."""
    return isinstance(field, models.DateTimeField | models.DateField | models.TimeField | models.DecimalField
                      | models.UUIDField | models.DurationField)


def delete(model: type[models.Model], pk: Any, using: str) -> None:
    model._default_manager.db_manager(using).filter(pk=pk).delete()
