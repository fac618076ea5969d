"""One settings object: ``FLUVIUS`` from the project's settings over ``DEFAULTS``.

Read it as ``fluvius_settings.DISPATCH`` and so on. Values are read lazily and the
cache is dropped whenever Django's ``setting_changed`` signal fires, so
``override_settings(FLUVIUS=...)`` works in tests. Settings named in
``IMPORT_STRINGS`` hold dotted paths and are imported on first use.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

DEFAULTS: dict[str, Any] = {
    # Dotted paths of the project's Domain classes.
    "DOMAINS": [],
    # Database alias that holds the event store, command log and subscription checkpoints.
    "DATABASE": "default",
    # Database alias the read side (queries, statemgr.find) uses; None = DATABASE of the model.
    "READ_DATABASE": None,
    # Command-bus middleware, outermost first: callables or dotted paths of
    # callables/classes taking (command, call_next) (write/middleware.py, security/permissions.py; docs/security.md).
    "COMMAND_MIDDLEWARE": [
        "django_fluvius.write.middleware.LoggingMiddleware",
        "django_fluvius.write.middleware.TimingMiddleware",
        "django_fluvius.security.permissions.AuthorizationMiddleware",
        "django_fluvius.write.middleware.RetryMiddleware",
    ],
    # Every non-system context needs the Django permission "<app_label>.run_<command>" of a
    # command to run it (the permissions exist either way: created after migrate).
    "COMMAND_PERMISSIONS": False,
    # RetryMiddleware: tries in all of a retry_safe command that lost a race, and the pause
    # (seconds, times the try number, randomised) between them.
    "COMMAND_RETRY_TRIES": 3,
    "COMMAND_RETRY_BACKOFF": 0.01,
    # TimingMiddleware warns about commands slower than this many milliseconds (None = never).
    "SLOW_COMMAND_MS": None,
    # How committed events reach @event_handler functions: "inline", "celery" or None (off).
    "DISPATCH": "inline",
    # Extra modules that hold @event_handler functions (besides each app's handlers.py),
    # or dotted paths of the handler functions themselves.
    "HANDLERS": [],
    # Extra modules that hold AsyncProjection classes (besides each app's projections.py).
    "PROJECTIONS": [],
    # -- subscriptions, relay and Celery dispatch (delivery/, tasks.py) --
    # The Celery app (object or dotted path); None = celery.current_app.
    "CELERY_APP": None,
    # Queue the relay sends handler and projection tasks to; None = Celery's default.
    "CELERY_QUEUE": None,
    # How a commit wakes delivery in "celery" mode: "notify" (PostgreSQL: a NOTIFY after
    # commit from a background thread; the listening relays of the workers hand over; on other
    # databases as "thread"), "thread" (this process also hands its own subscriptions over,
    # in a background thread: the request never waits on the broker) or "sync" (in the
    # on-commit callback).
    "RELAY": "notify",
    # The relay thread's rounds are at least this many seconds apart (a lone commit goes at
    # once; a busy process batches): longer means less work beside the requests.
    "RELAY_LINGER": 0.2,
    # The relay thread sends at most one NOTIFY per this many seconds (a lone commit's at
    # once; commits closer together share one): the most a busy process adds to the latency.
    "RELAY_NOTIFY_INTERVAL": 0.02,
    # Deliveries per Celery message; events per inline batch (one checkpoint write each).
    "RELAY_BATCH_SIZE": 100,
    # Long-running relays (fluvius_relay --loop, the Celery worker's) poll this often (seconds)
    # besides LISTEN/NOTIFY: the safety net, and the only wake-up on SQLite.
    "RELAY_POLL": 2.0,
    # Celery workers run a relay thread of their own (LISTEN + poll) for the subscriptions
    # they know: a handler deployed to the workers only is delivered without other services.
    "RELAY_IN_WORKER": True,
    # A delivery handed to the broker and not settled this many seconds later is handed over
    # again (the broker lost it); set it above the longest a message may wait in the queue.
    "REDELIVER_AFTER": 300.0,
    # Seconds a relay leads a subscription before another may take over (renewed per batch).
    "SUBSCRIPTION_LEASE": 30.0,
    # Deliveries of one handler subscription that may be pending (handed over, unsettled) at once.
    "SUBSCRIPTION_WINDOW": 10_000,
    # Tries of a failing handler after the first one, before its dead letter (per handler:
    # @event_handler(max_retries=...)).
    "HANDLER_MAX_RETRIES": 5,
    # Exponential backoff between tries: first delay, cap (seconds), and random jitter.
    "RETRY_BACKOFF": 1.0,
    "RETRY_BACKOFF_MAX": 600.0,
    "RETRY_JITTER": True,
    # An ordered handler whose previous event of the aggregate is not handled yet waits
    # this long between checks, at most ORDERED_MAX_WAITS times.
    "ORDERED_WAIT": 0.5,
    "ORDERED_MAX_WAITS": 240,
    # Events per async-projection batch (one transaction, checkpoint included).
    "PROJECTION_BATCH_SIZE": 500,
    # Failed tries of an async projection's batch before its failing event is dead-lettered.
    "PROJECTION_MAX_RETRIES": 3,
    # Take a snapshot every N events of an aggregate (None = never); per aggregate:
    # ``Aggregate.snapshot_every``.
    "SNAPSHOT_EVERY": None,
    # Folded aggregates kept per process so a command skips reading its stream
    # (see cache.py); 0 turns the cache off.
    "AGGREGATE_CACHE_SIZE": 1000,
    # PostgreSQL (psycopg 3): the bus's write statement runs with server-side binding and is
    # prepared on each connection (events/sql.py), whatever the database's OPTIONS say for the
    # project's own queries. None = prepared unless OPTIONS has "prepare_threshold": None;
    # False = never prepared (PgBouncer in transaction mode); True = always.
    "PREPARED_STATEMENTS": None,
    # The command log (CommandLog): "all" writes a row for every command, in the command's own
    # write statement; "failures" only for rejected and failed commands (successful ones are
    # still in the event log, with their command id and metadata).
    "COMMAND_LOG": "all",
    # Multi-tenancy (tenancy.py): None = off; True or a dict of options (RESOLVER, USER_TENANT,
    # USER_TENANTS, HEADER, SUPERUSER_ALL_TENANTS) = every domain tenant-scoped unless it sets
    # __tenancy__ = False.
    "TENANCY": None,
    # Seconds an Idempotency-Key of the REST API is remembered (None = forever).
    "IDEMPOTENCY_TTL": 24 * 60 * 60,
    # Deepest nesting of lists and objects a command payload may have (deeper: a 400).
    "MAX_PAYLOAD_DEPTH": 32,
    # -- the REST face's lists and reads --
    # True: a list's query parameter that is no filter, ordering, search or page parameter is
    # a 400; False (like django-filter and DRF): it is ignored (cache-busters, utm_* ...).
    "STRICT_QUERY_PARAMS": False,
    # Lists count their rows exactly up to this many; past it PostgreSQL's estimate is given
    # (and "count_estimated": true says so), as the admin does.
    "EXACT_COUNT_LIMIT": 10_000,
    # Event metadata keys every reader of an aggregate sees (command responses, .../events/);
    # the rest (user, username, client_address, tenant, ...) only users holding
    # EVENT_METADATA_PERMISSION see. None shows every key to every reader.
    "EXPOSED_METADATA": ["correlation_id", "causation_id", "command_id", "command", "source"],
    "EVENT_METADATA_PERMISSION": "django_fluvius.view_event",
    # -- consistent and live reads (read/consistency.py, rest/stream.py; docs/consistency.md) --
    # Seconds a read with a minimum position (Fluvius-Min-Position, ?min_position=) waits for
    # the async projections (and the replica) feeding its resource; then a 503 with Retry-After.
    "MIN_POSITION_TIMEOUT": 5.0,
    # Seconds between the comment lines an idle event stream (_stream/) sends to keep it open.
    "STREAM_HEARTBEAT": 5.0,
    # Seconds between an event stream's looks at the feed when no NOTIFY wakes it (SQLite,
    # or a lost LISTEN connection); on PostgreSQL commits wake it at once.
    "STREAM_POLL": 0.25,
    # Events read from the database per query of a stream catching up.
    "STREAM_BATCH_SIZE": 200,
    # Streams of one ASGI process opening at once: each holds a database connection while it
    # authenticates and finds where it starts (none while it streams). Bounds the connections
    # a crowd of clients reconnecting together asks for; the rest wait for a slot.
    "STREAM_OPENING_LIMIT": 8,
    # Seconds a stream waits for an opening slot; then a 503 (code streams_busy) with Retry-After.
    "STREAM_OPENING_TIMEOUT": 30.0,
    # -- media (media.py, rest/media.py) --
    # Where uploads go: an alias of Django's STORAGES, a strategy instance
    # (media.LocalStorage(path=...), media.S3Storage(bucket=...)) or its dotted path, or a dict
    # {"strategy": "local" | "s3" | "storage", ...keyword arguments of that strategy}.
    "MEDIA_STORAGE": "default",
    # Largest upload accepted, in bytes (None = no limit).
    "MEDIA_MAX_SIZE": 50 * 1024 * 1024,
    # Content types an upload may have (checked against its bytes); patterns such as
    # "image/*" work; None allows every type.
    "MEDIA_ALLOWED_TYPES": [
        "image/png", "image/jpeg", "image/gif", "image/webp",
        "application/pdf", "text/plain", "text/csv",
    ],
    # Seconds a staged upload (a ".upload-*.part" file) may go unwritten before a sweep removes
    # it: the leftovers of a worker killed mid-upload (fluvius_sweep_uploads, the
    # fluvius.sweep_uploads task, and each process's start).
    "MEDIA_STAGE_MAX_AGE": 60 * 60,
    # Seconds a signed download URL (S3) stays valid.
    "MEDIA_URL_EXPIRES": 300,
    # Downloads of a storage that can sign URLs (S3) redirect to a signed URL; False
    # streams them through the application instead.
    "MEDIA_SIGNED_URLS": True,
    # -- personal data (privacy/, docs/privacy.md) --
    # The key-encryption key that wraps every subject key: 32 random bytes in urlsafe base64,
    # or a list whose first item wraps and whose others only unwrap (while fluvius_rotate_kek
    # re-wraps). Needed as soon as a domain declares __personal__ (fluvius.E080).
    "PRIVACY_KEK": None,
    # An external KMS instead: an object (or dotted path of a class or object) with ``key_id``,
    # ``wrap(key, subject) -> bytes`` and ``unwrap(wrapped, key_id, subject) -> bytes``.
    "PRIVACY_KMS": None,
    # Seconds a process keeps an unwrapped subject key: how long another process may still
    # read a subject forgotten elsewhere (0: look the key up every time).
    "PRIVACY_KEY_CACHE_SECONDS": 60.0,
    # -- health (health.py) --
    # The readiness endpoint fails when event delivery lags more than this many seconds
    # (the oldest event a subscription — handler or async projection — has still to settle);
    # None leaves delivery out of readiness.
    "HEALTH_MAX_DELIVERY_LAG": 60.0,
}

IMPORT_STRINGS = {"COMMAND_MIDDLEWARE"}


class FluviusSettings:
    def __init__(self, defaults: dict[str, Any] | None = None):
        self.defaults = defaults or DEFAULTS
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        if not hasattr(self, "_user_settings"):
            self._user_settings = getattr(settings, "FLUVIUS", {}) or {}
        return self._user_settings

    def __getattr__(self, name: str) -> Any:
        if name not in self.defaults:
            raise AttributeError(f"Invalid django-fluvius setting: {name!r}")
        value = self.user_settings.get(name, self.defaults[name])
        if name in IMPORT_STRINGS:
            value = perform_import(value, name)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._cached:
            delattr(self, name)
        self._cached.clear()
        if hasattr(self, "_user_settings"):
            delattr(self, "_user_settings")


def perform_import(value: Any, setting_name: str) -> Any:
    """Import a dotted path, or each dotted path of a list; leave objects as they are."""
    if isinstance(value, str):
        try:
            return import_string(value)
        except ImportError as exc:
            raise ImportError(
                f"Could not import {value!r} for FLUVIUS[{setting_name!r}]: {exc}"
            ) from exc
    if isinstance(value, list | tuple):
        return [perform_import(item, setting_name) for item in value]
    return value


fluvius_settings = FluviusSettings()


def _reload_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "FLUVIUS":
        fluvius_settings.reload()


setting_changed.connect(_reload_settings)
