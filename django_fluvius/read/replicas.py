"""Read replicas: ``FLUVIUS['READ_DATABASE']`` sends the read side to another alias.

The read side of django-fluvius (``statemgr.fetch/find``, ``QueryBuilder``, the
REST list and detail endpoints) asks ``read_alias()`` which database to read;
add ``ReadReplicaRouter`` to ``DATABASE_ROUTERS`` and plain ORM reads of the
projection models (your own views, the admin, related lookups) go there too::

    DATABASES = {"default": {...}, "replica": {...}}
    DATABASE_ROUTERS = ["django_fluvius.read.replicas.ReadReplicaRouter"]
    FLUVIUS = {"READ_DATABASE": "replica", ...}

Writes are never routed to the replica: projections are written by the command
bus on ``FLUVIUS['DATABASE']``. Inside a transaction on that write database,
reads stay on it, so code running within a command sees the command's own
uncommitted writes instead of a replica that has not caught up.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

from django_fluvius.conf import fluvius_settings
from django_fluvius.registry import domains, resolve_model


def write_alias() -> str:
    return fluvius_settings.DATABASE or "default"


def read_alias() -> str | None:
    """The alias the read side uses now, or None when no read database is set."""
    alias = fluvius_settings.READ_DATABASE
    if not alias:
        return None
    writer = write_alias()
    if alias != writer and connections[writer].in_atomic_block:
        return writer
    return alias


_models_cache: tuple[tuple[type, ...], frozenset[type]] | None = None


def projection_models() -> frozenset[type]:
    """The projection models of every registered domain (cached per registry content)."""
    global _models_cache
    key = tuple(domains)
    if _models_cache is None or _models_cache[0] != key:
        models: set[type] = set()
        for domain in key:
            for value in (getattr(domain, "__resources__", None) or {}).values():
                try:
                    models.add(resolve_model(value))
                except Exception:  # noqa: BLE001 - a broken declaration is a system check's job
                    continue
        _models_cache = (key, frozenset(models))
    return _models_cache[1]


class ReadReplicaRouter:
    """Route reads of projection models to ``FLUVIUS['READ_DATABASE']``; nothing else."""

    def db_for_read(self, model: type, **hints: Any) -> str | None:
        if not fluvius_settings.READ_DATABASE or model not in projection_models():
            return None
        return read_alias()

    def db_for_write(self, model: type, **hints: Any) -> str | None:
        if not fluvius_settings.READ_DATABASE or model not in projection_models():
            return None
        return write_alias()

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        # A row read from the replica and one from the primary are the same data.
        pair = {write_alias(), fluvius_settings.READ_DATABASE}
        if fluvius_settings.READ_DATABASE and {obj1._state.db, obj2._state.db} <= pair:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return None


def check_read_database(app_configs=None, **kwargs):
    """System check fluvius.E036: ``FLUVIUS['READ_DATABASE']`` names a configured alias."""
    from django.conf import settings
    from django.core import checks

    alias = fluvius_settings.READ_DATABASE
    if alias and alias not in settings.DATABASES:
        return [checks.Error(
            f"FLUVIUS['READ_DATABASE'] is {alias!r}, which is not an alias of DATABASES "
            f"({', '.join(sorted(settings.DATABASES))}).",
            hint="Add the replica to DATABASES or set READ_DATABASE to None.",
            id="fluvius.E036",
        )]
    return []
