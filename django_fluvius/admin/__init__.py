"""The Django admin as an event browser.

Registered on ``django.contrib.admin.site`` when the admin autodiscovers this
module: events (list, one event, an aggregate's timeline with the state after
each version, the diff of two versions), the command log, snapshots, and, where
their models exist, dead letters and subscription checkpoints, and the domain map.
``AggregateAdmin`` is for users' own resource models: rows changed by commands.

To show the same pages on another ``AdminSite``, register the classes there::

    from django_fluvius.admin import EventAdmin, register_on
    register_on(my_site)
"""

from __future__ import annotations

from django.contrib import admin

from django_fluvius.admin.aggregates import AggregateAdmin
from django_fluvius.admin.catalog import DomainMapAdmin
from django_fluvius.admin.commandlog import CommandLogAdmin
from django_fluvius.admin.delivery import DeadLetterAdmin
from django_fluvius.admin.events import EventAdmin
from django_fluvius.admin.pagination import EstimatedCountPaginator
from django_fluvius.admin.projections import ProjectionAdmin, RebuildRunAdmin
from django_fluvius.admin.snapshots import SnapshotAdmin
from django_fluvius.models import (
    Checkpoint,
    CommandLog,
    DeadLetter,
    DomainMap,
    Event,
    RebuildRun,
    Snapshot,
)

MODEL_ADMINS = [
    (Event, EventAdmin),
    (CommandLog, CommandLogAdmin),
    (Snapshot, SnapshotAdmin),
    (DeadLetter, DeadLetterAdmin),
    (Checkpoint, ProjectionAdmin),
    (RebuildRun, RebuildRunAdmin),
    (DomainMap, DomainMapAdmin),
]


def register_on(site: admin.AdminSite) -> None:
    """Register every event-browser page on ``site`` (skipping models already registered)."""
    for model, model_admin in MODEL_ADMINS:
        if not site.is_registered(model):
            site.register(model, model_admin)


register_on(admin.site)

__all__ = [
    "AggregateAdmin",
    "CommandLogAdmin",
    "DeadLetterAdmin",
    "DomainMapAdmin",
    "EstimatedCountPaginator",
    "EventAdmin",
    "ProjectionAdmin",
    "RebuildRunAdmin",
    "SnapshotAdmin",
    "register_on",
]
