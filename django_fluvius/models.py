"""The event store and its companions, kept as ordinary Django models.

``Event`` is the append-only, versioned source of truth: the database itself
refuses a second event with the same (aggregate_id, version), which is what makes
optimistic concurrency real. ``Snapshot`` is a cache of folded state.
``CommandLog`` records every command the bus processed, done or rejected.
``Projection`` is an abstract base users may give their read models.
"""

from __future__ import annotations

import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AppendOnlyQuerySet(models.QuerySet):
    """Events are never changed or removed through the ORM."""

    def update(self, **kwargs):
        raise TypeError("Events are append-only: they cannot be updated.")

    def delete(self):
        raise TypeError("Events are append-only: they cannot be deleted.")


class Event(models.Model):
    """One event of one aggregate's stream."""

    position = models.BigAutoField(_("position"), primary_key=True)
    namespace = models.CharField(_("namespace"), max_length=100)
    resource = models.CharField(_("resource"), max_length=100)
    aggregate_id = models.UUIDField(_("aggregate id"))
    version = models.PositiveIntegerField(_("version"))
    evt_key = models.CharField(_("event key"), max_length=150)
    schema_version = models.PositiveSmallIntegerField(_("schema version"), default=1)
    payload = models.JSONField(_("payload"), encoder=DjangoJSONEncoder, default=dict)
    # The whole metadata as written; the columns below copy the parts worth filtering on.
    metadata = models.JSONField(_("metadata"), encoder=DjangoJSONEncoder, default=dict)
    command_id = models.UUIDField(_("command id"), null=True, blank=True, db_index=True)
    correlation_id = models.CharField(_("correlation id"), max_length=100, blank=True, db_index=True)
    causation_id = models.CharField(_("causation id"), max_length=100, blank=True)
    user = models.CharField(_("user"), max_length=150, blank=True, db_index=True)
    tenant = models.CharField(_("tenant"), max_length=100, blank=True, db_index=True)
    created = models.DateTimeField(_("created"), default=timezone.now, db_index=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        verbose_name = _("event")
        verbose_name_plural = _("events")
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_id", "version"], name="fluvius_event_stream_version"
            ),
        ]
        indexes = [
            models.Index(fields=["namespace", "evt_key"], name="fluvius_event_ns_key"),
        ]

    def __str__(self) -> str:
        return f"{self.evt_key} #{self.version} of {self.aggregate_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Events are append-only: a stored event cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Events are append-only: they cannot be deleted.")


class Snapshot(models.Model):
    """The folded state of an aggregate at one version: a cache, never the truth."""

    id = models.BigAutoField(primary_key=True)
    aggregate_id = models.UUIDField(_("aggregate id"))
    namespace = models.CharField(_("namespace"), max_length=100)
    resource = models.CharField(_("resource"), max_length=100)
    version = models.PositiveIntegerField(_("version"))
    # Bumped by the aggregate when its state's shape changes; older snapshots are ignored.
    schema_version = models.PositiveSmallIntegerField(_("schema version"), default=1)
    state = models.JSONField(_("state"), encoder=DjangoJSONEncoder)
    # The times of the aggregate's first event and of the event at ``version``:
    # what a load from this snapshot restores, and what time travel (``at=``) filters on.
    aggregate_created = models.DateTimeField(_("aggregate created"), null=True, blank=True)
    aggregate_updated = models.DateTimeField(_("aggregate updated"), null=True, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("snapshot")
        verbose_name_plural = _("snapshots")
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_id", "version"], name="fluvius_snapshot_version"
            ),
        ]

    def __str__(self) -> str:
        return f"snapshot of {self.aggregate_id} at v{self.version}"


class CommandLog(models.Model):
    """One command the bus processed, with its outcome."""

    class Status(models.TextChoices):
        DONE = "done", _("done")
        REJECTED = "rejected", _("rejected")
        FAILED = "failed", _("failed")

    id = models.BigAutoField(primary_key=True)
    command_id = models.UUIDField(_("command id"), default=uuid.uuid4, db_index=True)
    namespace = models.CharField(_("namespace"), max_length=100)
    command = models.CharField(_("command"), max_length=150)
    resource = models.CharField(_("resource"), max_length=100, blank=True)
    aggregate_id = models.UUIDField(_("aggregate id"), null=True, blank=True, db_index=True)
    payload = models.JSONField(_("payload"), encoder=DjangoJSONEncoder, default=dict)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices)
    version = models.PositiveIntegerField(_("resulting version"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=100, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    user = models.CharField(_("user"), max_length=150, blank=True, db_index=True)
    tenant = models.CharField(_("tenant"), max_length=100, blank=True)
    correlation_id = models.CharField(_("correlation id"), max_length=100, blank=True, db_index=True)
    causation_id = models.CharField(_("causation id"), max_length=100, blank=True)
    metadata = models.JSONField(_("metadata"), encoder=DjangoJSONEncoder, default=dict)
    created = models.DateTimeField(_("created"), default=timezone.now, db_index=True)
    duration_ms = models.FloatField(_("duration (ms)"), default=0)

    class Meta:
        verbose_name = _("command log entry")
        verbose_name_plural = _("command log")
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.namespace}:{self.command} ({self.status})"


class RebuildRun(models.Model):
    """Progress of one ``fluvius_rebuild`` target (a resource or a projection).

    Saved in the same transaction as each batch of rebuilt rows, so a run that
    crashes resumes after the last batch that committed.
    """

    class Status(models.TextChoices):
        RUNNING = "running", _("running")
        DONE = "done", _("done")
        FAILED = "failed", _("failed")

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("target"), max_length=200, unique=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.RUNNING)
    # Where the next batch starts: the last aggregate id rebuilt (or an event position).
    cursor = models.CharField(_("cursor"), max_length=100, blank=True)
    total_events = models.BigIntegerField(_("events to read"), default=0)
    events_done = models.BigIntegerField(_("events read"), default=0)
    aggregates_done = models.BigIntegerField(_("aggregates folded"), default=0)
    rows_written = models.BigIntegerField(_("rows written"), default=0)
    rows_deleted = models.BigIntegerField(_("rows deleted"), default=0)
    batches = models.PositiveIntegerField(_("batches committed"), default=0)
    error = models.TextField(_("error"), blank=True)
    started = models.DateTimeField(_("started"), default=timezone.now)
    updated = models.DateTimeField(_("updated"), default=timezone.now)
    finished = models.DateTimeField(_("finished"), null=True, blank=True)

    class Meta:
        verbose_name = _("rebuild run")
        verbose_name_plural = _("rebuild runs")
        ordering = ["-updated"]

    def __str__(self) -> str:
        return f"rebuild of {self.name} ({self.status})"


class Projection(models.Model):
    """An optional abstract base for read models kept from an aggregate's state.

    The primary key is the aggregate id; ``version`` is the version of the last
    event projected (the REST layer's ETag).
    """

    id = models.UUIDField(primary_key=True, editable=False)
    version = models.PositiveIntegerField(_("version"), default=0)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(_("updated at"), default=timezone.now)

    class Meta:
        abstract = True
