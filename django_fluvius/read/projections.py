"""Inline projections: each resource's projection row, written with the command.

``project_inline`` updates a resource's Django model from the aggregate's state
inside the command's own transaction, with one ``INSERT ... ON CONFLICT DO
UPDATE`` per command (or as part of the bus's one write statement). Bookkeeping
fields (``version``, ``created_at``, ``updated_at``, and ``tenant`` for an
aggregate that has one) are filled when the model has them.

Invariant: a projection row is never ahead of or behind its aggregate's last
committed event — it commits or rolls back with the events — so inline reads
need no waiting. ``row_values`` is the one mapping from state to row, shared by
the bus, rebuilds and ``fluvius_verify``, so they can never disagree.
(Async projections, which follow the feed outside the command's transaction,
are on the delivery side: ``delivery/projections.py``.)
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING, Any

from django.db import models

from django_fluvius.events import sql

if TYPE_CHECKING:
    from django_fluvius.protocols import AggregateProtocol as Aggregate

VERSION_FIELD = "version"
CREATED_FIELD = "created_at"
UPDATED_FIELD = "updated_at"
TENANT_FIELD = "tenant"

logger = logging.getLogger("django_fluvius.projections")


@cache
def writable_fields(model: type[models.Model]) -> dict[str, models.Field]:
    """The concrete, non-primary-key fields of a model, by name and attname."""
    fields: dict[str, models.Field] = {}
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        fields[f.name] = f
        fields[f.attname] = f
    return fields


@cache
def defaulted_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    """Every writable field once: a new row takes each one's default as the ORM would ('' for text)."""
    return tuple({f.attname: f for f in writable_fields(model).values()}.values())


def empty_value(field: models.Field) -> Any:
    """What a column holds for "no value": None where it may, else the field's empty string or default.

    A personal field of a forgotten subject folds to None (privacy/); its NOT NULL text
    column then holds '' rather than failing the write.
    """
    if field.null:
        return None
    if field.empty_strings_allowed:
        return ""
    return field.get_default()


def row_values(model: type[models.Model], aggregate: Aggregate, fields: dict[str, Any]) -> dict[str, Any]:
    """Map a projection dict onto the model's columns, adding the bookkeeping fields (and tenant)."""
    columns = writable_fields(model)
    values = {columns[k].attname: (empty_value(columns[k]) if v is None else v)
              for k, v in fields.items() if k in columns}
    if VERSION_FIELD in columns:
        values[VERSION_FIELD] = aggregate.version
    if UPDATED_FIELD in columns and aggregate.updated is not None:
        values[UPDATED_FIELD] = aggregate.updated
    if CREATED_FIELD in columns and aggregate.created is not None:
        values[CREATED_FIELD] = aggregate.created
    if TENANT_FIELD in columns and aggregate.tenant:
        # The aggregate's own tenant, over anything of that name the state may hold.
        values[TENANT_FIELD] = aggregate.tenant
    return values


def project_inline(model: type[models.Model] | None, aggregate: Aggregate, using: str,
                   batch: sql.WriteBatch | None = None) -> None:
    """Write the aggregate's projection row in the current transaction (or add it to ``batch``)."""
    if model is None:
        return
    fields = aggregate.projection(aggregate.resource)
    if fields is None:
        sql.delete(model, aggregate.id, using)
        return
    values = row_values(model, aggregate, fields)
    # Update only what the state holds; a new row takes the model's defaults for the rest.
    update = [k for k in values if k != CREATED_FIELD]
    for field in defaulted_fields(model):
        values.setdefault(field.attname, field.get_default())
    if batch is not None:
        batch.upsert(model, aggregate.id, values, update)
    else:
        sql.upsert(model, aggregate.id, values, using, update=update)
