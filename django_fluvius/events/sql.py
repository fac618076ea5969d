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
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from django.db import connections, models
from django.db.models.expressions import DatabaseDefault


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

    def flush(self) -> None:
        connection = connections[self.using]
        if connection.vendor == "postgresql" and len(self._inserts) + len(self._upserts) > 1:
            self._flush_as_one_statement(connection)
        else:
            for obj, stored in self._inserts:
                insert(obj, self.using, stored=stored)
            for model, pk, values, update in self._upserts:
                upsert(model, pk, values, self.using, update=update)
        self._inserts.clear()
        self._upserts.clear()

    def _flush_as_one_statement(self, connection: Any) -> None:
        parts: list[str] = []
        params: list[Any] = []
        returning: list[tuple[int, models.Model]] = []
        for obj, stored in self._inserts:
            model = type(obj)
            pk_field = model._meta.pk
            fields = [f for f in model._meta.concrete_fields if f is not pk_field]
            for f in fields:
                if f.attname not in obj.__dict__ and f.has_default():
                    setattr(obj, f.attname, f.get_default())
            fields = _without_db_defaults(obj, fields)
            returning.append((len(parts), obj))
            parts.append(_insert_sql(model, tuple(f.column for f in fields), connection.vendor,
                                     connection.ops.quote_name, True))
            params += [f.get_db_prep_save(_value(obj, f, stored), connection) for f in fields]
        for model, pk, values, update in self._upserts:
            sql_text, sql_params = _upsert_statement(model, pk, values, update, connection)
            parts.append(sql_text)
            params += sql_params
        ctes = ", ".join(f"w{i} AS ({part})" for i, part in enumerate(parts))
        final = " UNION ALL ".join(
            f"SELECT {i}, {connection.ops.quote_name(type(obj)._meta.pk.column)} FROM w{i}"
            for i, obj in returning
        ) or "SELECT NULL, NULL"
        with connection.cursor() as cursor:
            cursor.execute(f"WITH {ctes} {final}", params)
            pks = dict(cursor.fetchall())
        for i, obj in returning:
            pk_field = type(obj)._meta.pk
            setattr(obj, pk_field.attname, pk_field.to_python(pks[i]))
            obj._state.adding = False
            obj._state.db = self.using


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
    params = [pk_field.get_db_prep_save(pk, connection)]
    params += [_db_value(by_attname[n], values[n], connection) for n in names]
    return sql_text, params


def _db_value(field: models.Field, value: Any, connection: Any) -> Any:
    return field.get_db_prep_save(field.to_python(value) if _needs_python(field) else value, connection)


def _needs_python(field: models.Field) -> bool:
    """Fields whose raw JSON form (text) must be parsed before the backend sees it."""
    return isinstance(field, models.DateTimeField | models.DateField | models.TimeField | models.DecimalField
                      | models.UUIDField | models.DurationField)


def delete(model: type[models.Model], pk: Any, using: str) -> None:
    model._default_manager.db_manager(using).filter(pk=pk).delete()
