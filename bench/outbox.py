"""The outbox and Celery dispatch (issue 5): what they cost commands, and how fast an
async projection catches up.

1. Command throughput with the outbox on and dispatch to Celery (Redis broker,
   the on-commit relay in its background thread) versus the same commands with
   dispatch off, interleaved in the same run. Every command's event has a
   handler, so every command writes an outbox row. The relay publishes while
   the next commands run; the time it needs to hand the last rows over after the
   last commit is reported apart ("drain"). No worker consumes during the runs
   (the bench's queue is its own and is deleted afterwards), so the figure is
   the request path alone. Target: <= 10% slower.

2. Events per second through one async projection worker catching up from zero
   on 100,000 events (20,000 notes x 5 events), each batch applied and
   checkpointed in one transaction, gap-safe reads included. Baseline, same
   run: the same projection code fed by a plain QuerySet loop over the events
   by position (no feed, no checkpoint, one transaction per batch as well).
   Target: >= 5,000 events/s.

PostgreSQL (bench/common.py makes the database); medians of --runs runs.
"""

from __future__ import annotations

import time
import uuid

from bench.common import arg_parser, interleaved, median_of, report, setup_django

BROKER = "redis://127.0.0.1:6379/5"
RENAMES = 4
EVENTS_PER_NOTE = 5


# -- 1. command throughput -----------------------------------------------------------------


def command_run(users: int) -> float:
    from example_project.users.domain import UserDomain

    domain = UserDomain()
    start = time.perf_counter()
    for i in range(users):
        result = domain.process_command(
            domain.create_command("create-user", {"name": f"user {i}", "email": f"u{i}@example.com"}))
        for n in range(RENAMES):
            domain.process_command(domain.create_command("rename-user", {"name": f"user {i} v{n}"},
                                                         aggregate_id=result.aggregate_id))
    return time.perf_counter() - start


def throughput(users: int, runs: int) -> tuple[dict[str, float], list[str]]:
    from celery import Celery
    from django.test import override_settings

    from django_fluvius.delivery.dispatch import relay
    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
    from django_fluvius.models import Outbox

    queue = f"fluvius-bench-{uuid.uuid4().hex[:8]}"
    app = Celery("bench-outbox", broker=BROKER, set_as_current=False)
    registry = HandlerRegistry()

    @event_handler(["user-created", "user-renamed"], namespace="app-user", name="bench.audit", registry=registry)
    def audit(event):  # never runs here: no worker consumes the bench's queue
        return None

    for spec in registry:
        handlers.register(spec)
    from django.conf import settings

    base = {**settings.FLUVIUS, "CELERY_APP": app, "CELERY_QUEUE": queue, "RELAY": "thread"}
    drains: list[float] = []

    def with_outbox() -> float:
        with override_settings(FLUVIUS={**base, "DISPATCH": "celery"}):
            elapsed = command_run(users)
            started = time.perf_counter()
            assert relay.flush(120), "the relay did not finish"
            drains.append(time.perf_counter() - started)
        left = Outbox.objects.count()
        assert left == 0, f"{left} outbox rows were not handed over (broker down?)"
        return elapsed

    def without() -> float:
        with override_settings(FLUVIUS={**base, "DISPATCH": None}):
            return command_run(users)

    try:
        with_outbox()  # warm up: imports, connections, the relay thread, the broker connection
        without()
        timings = interleaved(with_outbox, without, runs)
    finally:
        for spec in registry:
            handlers.unregister(spec.name)
        import redis

        published = redis.Redis.from_url(BROKER).llen(queue)
        redis.Redis.from_url(BROKER).delete(queue)
        app.close()
    commands = users * (1 + RENAMES)
    outbox_rate = commands / timings["subject"]
    off_rate = commands / timings["baseline"]
    figures = {
        "commands per run": commands,
        "outbox + celery commands/s (median)": outbox_rate,
        "dispatch off commands/s (median)": off_rate,
        "slowdown with the outbox (target <= 0.10)": 1 - outbox_rate / off_rate,
        "relay drain after the last commit (s, median)": sorted(drains)[len(drains) // 2],
    }
    lines = [f"{users} users x (1 create + {RENAMES} renames), {runs} runs each, interleaved, "
             f"durable commits; {published} Celery messages published in all (one per relay batch)"]
    return figures, lines


# -- 2. projection catch-up ---------------------------------------------------------------------


def summarize(events) -> list[tuple]:
    """Fold a batch into one (id, title, events, last_version, last_position) per note."""
    rows: dict = {}
    for event in events:
        title, count, _, _ = rows.get(event.aggregate_id, (None, 0, 0, 0))
        if event.evt_key == "note-created":
            title = event.payload.get("title", "")
        rows[event.aggregate_id] = (title, count + 1, event.version, event.position)
    return [(pk, *values) for pk, values in rows.items()]


def write_rows(rows: list[tuple], using: str) -> None:
    """One set-based upsert per batch: counts add up, the rest is replaced."""
    from django.db import connections

    from tests.testapp.models import NoteActivity

    if not rows:
        return
    connection = connections[using]
    table = NoteActivity._meta.db_table
    pk = NoteActivity._meta.pk
    marks = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
    params = [value for row in rows
              for value in (pk.get_db_prep_value(row[0], connection), row[1] or "", row[2], row[3], row[4])]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, title, events, last_version, last_position) VALUES {marks} "
            f"ON CONFLICT (id) DO UPDATE SET events = {table}.events + EXCLUDED.events, "
            f"title = CASE WHEN EXCLUDED.title <> '' THEN EXCLUDED.title ELSE {table}.title END, "
            f"last_version = EXCLUDED.last_version, last_position = EXCLUDED.last_position",
            params,
        )


def make_projection():
    from django_fluvius.delivery.projections import AsyncProjection, async_projections
    from tests.testapp.models import NoteActivity

    if "bench.note-activity" in async_projections:
        return async_projections.get("bench.note-activity")

    class BenchActivity(AsyncProjection, register=False):
        """Events per note, written batch by batch (one set-based upsert per batch)."""

        name = "bench.note-activity"
        namespace = "test-notes"
        evt_keys = ["note-created", "note-edited"]
        models = [NoteActivity]
        batch_size = 1000

        def apply_batch(self, events):
            write_rows(summarize(events), self.using)

    return BenchActivity


def seed(events: int) -> int:
    """Notes with one note-created and four note-edited events each, streams interleaved."""
    from django.db import transaction
    from django.utils import timezone

    from django_fluvius.models import Event

    notes = [uuid.uuid4() for _ in range(events // EVENTS_PER_NOTE)]
    now = timezone.now()
    rows = []
    for version in range(1, EVENTS_PER_NOTE + 1):
        for i, note in enumerate(notes):
            created = version == 1
            rows.append(Event(namespace="test-notes", resource="note", aggregate_id=note, version=version,
                              evt_key="note-created" if created else "note-edited",
                              payload={"title": f"note {i}"} if created else {"body": f"v{version}"},
                              metadata={}, created=now))
    with transaction.atomic():
        for start in range(0, len(rows), 2000):
            Event.objects.bulk_create(rows[start:start + 2000])
    return len(rows)


def catch_up(events: int, runs: int) -> tuple[dict[str, float], list[str]]:
    from django.db import connection, transaction

    from django_fluvius.models import Event
    from tests.testapp.models import NoteActivity

    seeded = seed(events)
    projection = make_projection()()

    def framework() -> float:
        projection.reset()
        start = time.perf_counter()
        result = projection.catch_up()
        elapsed = time.perf_counter() - start
        assert result.applied == seeded, result
        return elapsed

    def plain() -> float:
        NoteActivity.objects.all().delete()
        start = time.perf_counter()
        position = 0
        while True:
            with transaction.atomic():
                batch = list(Event.objects.filter(position__gt=position, namespace="test-notes",
                                                  evt_key__in=["note-created", "note-edited"])
                             .order_by("position")[:1000])
                if not batch:
                    break
                write_rows(summarize(batch), "default")
                position = batch[-1].position
        return time.perf_counter() - start

    timings = interleaved(framework, plain, runs)
    assert NoteActivity.objects.filter(events=EVENTS_PER_NOTE).count() == seeded // EVENTS_PER_NOTE
    connection.close()
    figures = {
        "events caught up": seeded,
        "projection worker events/s (median, target >= 5000)": seeded / timings["subject"],
        "plain QuerySet loop events/s (median)": seeded / timings["baseline"],
        "worker / plain loop": timings["baseline"] / timings["subject"],
    }
    lines = [f"{seeded:,} events ({seeded // EVENTS_PER_NOTE:,} notes x {EVENTS_PER_NOTE}), batches of 1000, "
             f"{runs} runs each, from zero"]
    return figures, lines


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=100, help="users per throughput run")
    parser.add_argument("--events", type=int, default=100_000, help="events the projection catches up on")
    args = parser.parse_args(argv)
    users = 5 if args.quick else args.users
    events = 2_000 if args.quick else args.events
    runs = 1 if args.quick else args.runs
    setup_django("fluvius_bench_outbox", sqlite=args.sqlite)
    figures, lines = throughput(users, runs)
    more, more_lines = catch_up(events, 1 if args.quick else min(runs, 3))
    return report("outbox", {**figures, **more}, lines=lines + more_lines)


__all__ = ["main", "median_of"]

if __name__ == "__main__":
    main()
