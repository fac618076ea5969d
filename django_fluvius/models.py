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


class CurrentTransactionId(models.Func):
    """The id of the transaction writing the row (PostgreSQL), the default of ``Event.txid``.

    Events are read in (txid, position) order by async projections: a transaction's
    id is known to be finished or not, a sequence number is not (see feed.py).
    On SQLite (one writer at a time) positions already follow commit order and the
    column holds 0. On MariaDB / MySQL a trigger overwrites the 0 with a commit-order
    tick (migration 0008, events/feed.py).
    """

    template = "0"
    arity = 0
    output_field = models.BigIntegerField()

    def as_postgresql(self, compiler, connection, **extra_context):
        return "pg_current_xact_id()::text::bigint", []


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
    # Text columns are indexed in Meta.indexes: db_index would add a second,
    # LIKE-only index on PostgreSQL that every append pays for and no filter uses.
    # Each index costs every append: those of the write path (stream, feed, position)
    # are plain; user, tenant and correlation id are partial (only the events that
    # have one: a project without tenants, or a system command, writes none), and
    # ``created`` has a BRIN index on PostgreSQL (migration 0006: append order is
    # time order, so a few pages of block ranges serve the admin's date filter).
    correlation_id = models.CharField(_("correlation id"), max_length=100, blank=True)
    causation_id = models.CharField(_("causation id"), max_length=100, blank=True)
    user = models.CharField(_("user"), max_length=150, blank=True)
    tenant = models.CharField(_("tenant"), max_length=100, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    # Filled by the database: the writing transaction's id (commit-order key of the feed).
    txid = models.BigIntegerField(_("transaction id"), db_default=CurrentTransactionId(), null=True,
                                  editable=False)

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
            # A subscription's read: its keys, in feed order, after its checkpoint (an index
            # range per key, which LIMIT stops early). Also the admin's key filter (a prefix).
            models.Index(fields=["namespace", "evt_key", "txid", "position"], name="fluvius_event_key_feed"),
            models.Index(fields=["txid", "position"], name="fluvius_event_feed"),
            # The admin's filters and search (an exact value, never ''): partial.
            models.Index(fields=["correlation_id"], name="fluvius_event_correlation_set",
                         condition=~models.Q(correlation_id="")),
            models.Index(fields=["user"], name="fluvius_event_user_set", condition=~models.Q(user="")),
            models.Index(fields=["tenant"], name="fluvius_event_tenant_set", condition=~models.Q(tenant="")),
        ]

    def __str__(self) -> str:
        return f"{self.evt_key} #{self.version} of {self.aggregate_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise TypeError("Events are append-only: a stored event cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise TypeError("Events are append-only: they cannot be deleted.")


class DomainMap(Event):
    """No table of its own: the admin's entry for the domain map (ops/catalog.py), drawn from the code.

    A proxy model is how a page gets a line on Django's admin index and a ``view``
    permission of its own (``django_fluvius.view_domainmap``).
    """

    class Meta:
        proxy = True
        verbose_name = _("domain map")
        verbose_name_plural = _("domain map")


class Snapshot(models.Model):
    """The folded state of an aggregate at one version: a cache, never the truth."""

    id = models.BigAutoField(primary_key=True)
    aggregate_id = models.UUIDField(_("aggregate id"))
    namespace = models.CharField(_("namespace"), max_length=100)
    resource = models.CharField(_("resource"), max_length=100)
    version = models.PositiveIntegerField(_("version"))
    # Bumped by the aggregate when its state's shape changes; older snapshots are ignored.
    schema_version = models.PositiveSmallIntegerField(_("schema version"), default=1)
    # Digest of the event schema versions the state was folded with (upcasting.py): a new
    # upcaster changes how old events read, so snapshots folded before it are ignored.
    fingerprint = models.CharField(_("fingerprint"), max_length=64, blank=True)
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
    # Few indexes on purpose: every command writes a row, and each index costs that write.
    command_id = models.UUIDField(_("command id"), default=uuid.uuid4)
    namespace = models.CharField(_("namespace"), max_length=100)
    command = models.CharField(_("command"), max_length=150)
    resource = models.CharField(_("resource"), max_length=100, blank=True)
    aggregate_id = models.UUIDField(_("aggregate id"), null=True, blank=True, db_index=True)
    payload = models.JSONField(_("payload"), encoder=DjangoJSONEncoder, default=dict)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices)
    version = models.PositiveIntegerField(_("resulting version"), null=True, blank=True)
    error_code = models.CharField(_("error code"), max_length=100, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    user = models.CharField(_("user"), max_length=150, blank=True)
    tenant = models.CharField(_("tenant"), max_length=100, blank=True)
    correlation_id = models.CharField(_("correlation id"), max_length=100, blank=True)
    causation_id = models.CharField(_("causation id"), max_length=100, blank=True)
    metadata = models.JSONField(_("metadata"), encoder=DjangoJSONEncoder, default=dict)
    created = models.DateTimeField(_("created"), default=timezone.now)
    duration_ms = models.FloatField(_("duration (ms)"), default=0)

    class Meta:
        verbose_name = _("command log entry")
        verbose_name_plural = _("command log entries")
        ordering = ["-id"]
        indexes = [models.Index(fields=["correlation_id"], name="fluvius_commandlog_correlation")]

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


class IdempotencyRecord(models.Model):
    """The first response to a command sent with an ``Idempotency-Key`` (per user).

    Written in the command's own transaction, so a retry with the same key finds
    either nothing (the command did not commit) or the response it must return.
    """

    id = models.BigAutoField(primary_key=True)
    user = models.CharField(_("user"), max_length=150, blank=True)
    # Keys are scoped by tenant too: a key reused for another tenant is another request.
    tenant = models.CharField(_("tenant"), max_length=100, blank=True, default="")
    key = models.CharField(_("idempotency key"), max_length=255)
    # SHA-256 of what the request asked (endpoint, aggregate, If-Match, body).
    fingerprint = models.CharField(_("request fingerprint"), max_length=64)
    namespace = models.CharField(_("namespace"), max_length=100)
    command = models.CharField(_("command"), max_length=150)
    aggregate_id = models.UUIDField(_("aggregate id"), null=True, blank=True)
    status_code = models.PositiveSmallIntegerField(_("status code"))
    # JSON text, not a JSON column: jsonb would reorder the keys of the replayed body.
    response = models.TextField(_("response body (JSON)"))
    headers = models.JSONField(_("response headers"), encoder=DjangoJSONEncoder, default=dict)
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("idempotency record")
        verbose_name_plural = _("idempotency records")
        constraints = [
            models.UniqueConstraint(fields=["user", "tenant", "key"], name="fluvius_idempotency_user_tenant_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.namespace}:{self.command})"


class HandlerReceipt(models.Model):
    """The state of one (handler, event) delivery; ``done`` is written in the handler's own transaction.

    The unique constraint is what turns at-least-once delivery into an
    exactly-once effect: a second delivery finds the done receipt and does
    nothing. The relay writes a ``pending`` receipt before it hands a delivery to
    the broker; the subscription's checkpoint never passes a pending one, and one
    whose ``due`` time has passed is handed over again (a broker that lost it).
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("pending")
        DONE = "done", _("done")
        FAILED = "failed", _("dead-lettered")
        DISCARDED = "discarded", _("discarded")

    id = models.BigAutoField(primary_key=True)
    handler = models.CharField(_("handler"), max_length=255)
    position = models.BigIntegerField(_("event position"))
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.DONE)
    created = models.DateTimeField(_("created"), default=timezone.now)
    # Pending deliveries: the try the next hand-over carries, when it is due again if
    # nobody settles it first, and the handler's last error (kept while the broker is down).
    attempts = models.PositiveIntegerField(_("tries"), default=1)
    due = models.DateTimeField(_("due again"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        verbose_name = _("handler receipt")
        verbose_name_plural = _("handler receipts")
        constraints = [
            models.UniqueConstraint(fields=["handler", "position"], name="fluvius_receipt_once"),
        ]
        # The relay's questions (what is pending, what is overdue) read only the few pending
        # receipts, never the handler's whole history of done ones.
        indexes = [
            models.Index(fields=["handler", "due"], condition=models.Q(status="pending"),
                         name="fluvius_receipt_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.handler} @ {self.position} ({self.status})"


class DeadLetter(models.Model):
    """A (handler or projection, event) pair that failed its last try; re-drivable."""

    class Kind(models.TextChoices):
        HANDLER = "handler", _("event handler")
        PROJECTION = "projection", _("async projection")

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.HANDLER)
    handler = models.CharField(_("handler or projection"), max_length=255)
    position = models.BigIntegerField(_("event position"), db_index=True)
    namespace = models.CharField(_("namespace"), max_length=100, blank=True)
    evt_key = models.CharField(_("event key"), max_length=150, blank=True)
    aggregate_id = models.UUIDField(_("aggregate id"), null=True, blank=True)
    version = models.PositiveIntegerField(_("version"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    error_type = models.CharField(_("error type"), max_length=255, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("dead letter")
        verbose_name_plural = _("dead letters")
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "handler", "position"], name="fluvius_dead_letter_once"),
        ]

    def __str__(self) -> str:
        return f"{self.handler} failed on {self.evt_key} @ {self.position}"


class Checkpoint(models.Model):
    """How far a subscription (an event handler or an async projection) has settled the event feed.

    The feed key is (txid, position): see feed.py. Every event up to the key is
    settled for this subscription (applied, handled, or dead-lettered); an
    async projection saves it with its writes. For a handler delivered by Celery,
    ``sent_*`` is how far the relay has handed events over (pending receipts in
    between). ``lease_*``: the relay that leads this subscription now (one at a
    time). ``failures`` counts failed tries of a projection's batch, so a poison
    event is retried a bounded number of times before it is dead-lettered.
    """

    class Kind(models.TextChoices):
        HANDLER = "handler", _("event handler")
        PROJECTION = "projection", _("async projection")

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("subscription"), max_length=200, unique=True)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.PROJECTION)
    txid = models.BigIntegerField(_("transaction id"), default=0)
    position = models.BigIntegerField(_("position"), default=0)
    sent_txid = models.BigIntegerField(_("handed over to (transaction id)"), default=0)
    sent_position = models.BigIntegerField(_("handed over to (position)"), default=0)
    lease_owner = models.CharField(_("led by"), max_length=200, blank=True)
    lease_until = models.DateTimeField(_("lease until"), null=True, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    events_applied = models.BigIntegerField(_("events applied"), default=0)
    failures = models.PositiveIntegerField(_("failed tries"), default=0)
    last_error = models.TextField(_("last error"), blank=True)
    updated = models.DateTimeField(_("updated"), default=timezone.now)

    class Meta:
        # Its admin page lists every subscription (projections and handlers) with its checkpoint.
        verbose_name = _("projection")
        verbose_name_plural = _("projections")
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.position}"

    @property
    def key(self) -> tuple[int, int]:
        return (self.txid, self.position)

    @property
    def sent_key(self) -> tuple[int, int]:
        return max((self.sent_txid, self.sent_position), self.key)


class SubjectKey(models.Model):
    """The key of one data subject's personal data, wrapped by the key-encryption key (privacy/keys.py).

    ``forget`` empties ``wrapped`` and stamps ``forgotten``: every copy sealed under
    the key becomes unreadable, and the row stays so no new key is ever made for
    the subject.
    """

    id = models.BigAutoField(primary_key=True)
    subject = models.CharField(_("subject"), max_length=255, unique=True)
    wrapped = models.BinaryField(_("wrapped key"), null=True, blank=True)
    # Which KEK wrapped it: a wrong or retired KEK is named, and rotation finds what to re-wrap.
    kek_id = models.CharField(_("key-encryption key id"), max_length=100, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    forgotten = models.DateTimeField(_("forgotten"), null=True, blank=True)

    class Meta:
        verbose_name = _("subject key")
        verbose_name_plural = _("subject keys")

    def __str__(self) -> str:
        return f"key of {self.subject}" + (" (forgotten)" if self.forgotten else "")


class SubjectAggregate(models.Model):
    """An aggregate holding personal data of a subject other than itself (an order's customer).

    Written once per (subject, aggregate) when it is first sealed there: what
    ``forget`` erases and ``fluvius_export_subject`` reads besides the subject's own stream.
    """

    id = models.BigAutoField(primary_key=True)
    subject = models.CharField(_("subject"), max_length=255)
    namespace = models.CharField(_("namespace"), max_length=100)
    resource = models.CharField(_("resource"), max_length=100)
    aggregate_id = models.UUIDField(_("aggregate id"))

    class Meta:
        verbose_name = _("subject's aggregate")
        verbose_name_plural = _("subjects' aggregates")
        constraints = [
            models.UniqueConstraint(fields=["subject", "aggregate_id"], name="fluvius_subject_aggregate_once"),
        ]

    def __str__(self) -> str:
        return f"{self.subject} in {self.namespace} {self.aggregate_id}"


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


class MediaEntry(models.Model):
    """A file uploaded for an aggregate: where its bytes are and what they are.

    Commands and events never carry the bytes: they name the entry by ``id`` and
    carry ``as_ref()``, its metadata (see media/entries.py). The bytes live in a storage
    strategy (``storage`` names it) under ``key``. The same bytes are kept once
    per aggregate: a second upload of them returns this entry.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    namespace = models.CharField(_("namespace"), max_length=100)
    resource = models.CharField(_("resource"), max_length=100, blank=True)
    aggregate_id = models.UUIDField(_("aggregate id"))
    filename = models.CharField(_("file name"), max_length=255)
    # Checked against the content's first bytes, not only taken from the client.
    content_type = models.CharField(_("content type"), max_length=127)
    size = models.PositiveBigIntegerField(_("size (bytes)"))
    sha256 = models.CharField(_("SHA-256"), max_length=64)
    storage = models.CharField(_("storage"), max_length=100)
    key = models.CharField(_("storage key"), max_length=1024)
    uploaded_by = models.CharField(_("uploaded by"), max_length=150, blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("media entry")
        verbose_name_plural = _("media entries")
        ordering = ["created", "id"]
        constraints = [
            # One entry per content and aggregate: what makes de-duplication race-free.
            models.UniqueConstraint(fields=["namespace", "aggregate_id", "sha256"],
                                    name="fluvius_media_once_per_aggregate"),
        ]

    def __str__(self) -> str:
        return f"{self.filename} ({self.content_type}, {self.size} bytes)"

    def as_ref(self) -> dict:
        """What a command or event carries for this file: its id and metadata, no bytes."""
        return {
            "id": str(self.id),
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "namespace": self.namespace,
            "aggregate_id": str(self.aggregate_id),
        }
