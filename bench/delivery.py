"""Delivery through subscriptions (issue 14): what it costs commands, how soon a handler
starts after commit, and how fast one subscription catches up.

1. Command throughput with handlers subscribed and dispatch to Celery (Redis broker)
   versus the same commands with dispatch off, interleaved in the same run. The
   command path writes no delivery rows. With the default ``RELAY="notify"`` the
   web process only sends a coalesced ``NOTIFY`` after commit (the workers' relays
   hand over); with ``RELAY="thread"`` (reported too) its own thread reads the
   feed, writes pending receipts and publishes beside the commands. No worker
   consumes (the bench's queue is its own and is deleted afterwards), so the
   figure is the request path plus the relay's competition. Target: <= 3% slower.

2. Latency from COMMIT to the handler's first line, median and p99, one command at
   a time: inline (the committing process runs the handler) and Celery across
   processes — the handler is deployed to the worker only, so the bench process's
   relay thread just sends ``NOTIFY``; the worker's relay ``LISTEN``s, hands the
   delivery over through Redis and a worker process runs it. Target: p99 <= 50 ms.
   Baseline, same run: the round trip of an empty Celery task through the same
   worker and broker (publish to the task's first line).

3. Events per second through one subscription (an async projection) catching up
   from zero on 100,000 events (20,000 notes x 5 events), each batch applied and
   checkpointed in one transaction, gap-safe reads included. Baseline, same run:
   the same projection code fed by a plain QuerySet loop over the events by
   position. Target: >= 15,000 events/s. Also: a handler subscription with
   ``start="beginning"`` handing the same 100,000 events to Celery (pending
   receipts + messages), with its baseline: the same messages published alone.

PostgreSQL (bench/common.py makes the database); medians of --runs runs.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import arg_parser, interleaved, median_of, report, setup_django

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/14")
RENAMES = 4
EVENTS_PER_NOTE = 5
# Events per catch-up batch (the projection's batch_size, and the plain loop's): a rebuild from
# zero reads big batches (docs/handlers.md, "Async projections").
CATCH_UP_BATCH = 2000


# -- 1. command throughput -----------------------------------------------------------------


# Process CPU seconds (every thread: the relay thread's work counts) of each command_run.
CPU: list[float] = []


def command_run(users: int) -> float:
    from example_project.users.domain import UserDomain

    domain = UserDomain()
    cpu = time.process_time()
    start = time.perf_counter()
    for i in range(users):
        result = domain.process_command(
            domain.create_command("create-user", {"name": f"user {i}", "email": f"u{i}@example.com"}))
        for n in range(RENAMES):
            domain.process_command(domain.create_command("rename-user", {"name": f"user {i} v{n}"},
                                                         aggregate_id=result.aggregate_id))
    elapsed = time.perf_counter() - start
    CPU.append(time.process_time() - cpu)
    return elapsed


def throughput(users: int, runs: int) -> tuple[dict[str, float], list[str]]:
    from celery import Celery
    from django.conf import settings
    from django.test import override_settings

    from django_fluvius.delivery.dispatch import relay
    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
    from django_fluvius.models import HandlerReceipt

    queue = f"fluvius-bench-{uuid.uuid4().hex[:8]}"
    app = Celery("bench-delivery", broker=BROKER, set_as_current=False)
    registry = HandlerRegistry()

    @event_handler(["user-created", "user-renamed"], namespace="app-user", name="bench.audit", registry=registry)
    def audit(event):  # never runs here: no worker consumes the bench's queue
        return None

    for spec in registry:
        handlers.register(spec)
    base = {**settings.FLUVIUS, "CELERY_APP": app, "CELERY_QUEUE": queue, "RELAY": "thread",
            "SUBSCRIPTION_WINDOW": 10_000_000}
    drains: list[float] = []
    relay_mode = {"RELAY": "notify"}

    cpu: dict[str, list[float]] = {"with": [], "without": []}

    def with_dispatch() -> float:
        with override_settings(FLUVIUS={**base, "DISPATCH": "celery", **relay_mode}):
            elapsed = command_run(users)
            started = time.perf_counter()
            cpu_started = time.process_time()
            assert relay.flush(120), "the relay did not finish"
            drains.append(time.perf_counter() - started)
            # The relay thread's work after the last command is the commands' cost too.
            cpu["with"].append(CPU[-1] + time.process_time() - cpu_started)
        return elapsed

    def without() -> float:
        with override_settings(FLUVIUS={**base, "DISPATCH": None}):
            elapsed = command_run(users)
            cpu["without"].append(CPU[-1])
            return elapsed

    try:
        with_dispatch()  # warm up: imports, connections, the relay thread, the broker connection
        without()
        cpu["with"].clear()
        cpu["without"].clear()
        timings = interleaved(with_dispatch, without, runs)
        cpu_ratio = statistics.median(cpu["with"]) / statistics.median(cpu["without"])
        # Each run against its neighbour of the other kind: drifting load cancels out.
        pairs = statistics.median(w / o for w, o in zip(timings["subject_runs"], timings["baseline_runs"],
                                                          strict=True))
        relay_mode["RELAY"] = "thread"  # the web process hands over too
        with_dispatch()
        threaded = interleaved(with_dispatch, without, max(3, runs // 2))
        pending = HandlerReceipt.objects.filter(handler="bench.audit", status="pending").count()
    finally:
        for spec in registry:
            handlers.unregister(spec.name)
        import redis

        published = redis.Redis.from_url(BROKER).llen(queue)
        redis.Redis.from_url(BROKER).delete(queue)
        app.close()
    commands = users * (1 + RENAMES)
    COMMAND_SECONDS.append(timings["baseline"] / commands)
    with_rate = commands / timings["subject"]
    off_rate = commands / timings["baseline"]
    figures = {
        "commands per run": commands,
        "subscribed + celery commands/s (median)": with_rate,
        "dispatch off commands/s (median)": off_rate,
        "slowdown with dispatch (target <= 0.03)": 1 - with_rate / off_rate,
        "slowdown, median of the runs' pairwise ratios": pairs - 1,
        "process CPU per run, dispatch / off (medians)": cpu_ratio,
        "RELAY=thread: slowdown (the web process hands over too)": 1 - threaded["baseline"] / threaded["subject"],
        "relay drain after the last commit (s, median)": sorted(drains)[len(drains) // 2],
    }
    lines = [f"{users} users x (1 create + {RENAMES} renames), {runs} runs each, interleaved, "
             f"durable commits; RELAY='notify' (the default: the web process only sends NOTIFY; "
             f"the workers' relays hand over), then RELAY='thread' ({max(3, runs // 2)} runs each); "
             f"{pending} deliveries handed over by the thread runs ({published} Celery messages)"]
    return figures, lines


def instructions(users: int, *, sqlite: bool = False) -> tuple[dict[str, float], list[str]]:
    """The command path's cost in instructions (callgrind), robust against the machine's load.

    Each side runs ``users`` x 5 commands in a process of its own under callgrind, per
    thread. The request thread's count is the commands' own; the relay thread's
    (the NOTIFYs) is counted per NOTIFY and charged at the most the interval lets
    through at the commands' native speed — under callgrind commands run ~50x
    slower, so nearly every commit gets a NOTIFY of its own there.
    """
    import json
    import shutil
    import subprocess
    import sys

    from django.db import connections

    from django_fluvius.conf import fluvius_settings

    if shutil.which("valgrind") is None:
        return {}, ["instruction counts skipped: valgrind is not installed"]
    connections.close_all()
    counts: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="fluvius-cg-") as scratch:
        for mode in ("off", "celery"):
            out = Path(scratch) / f"{mode}.json"
            subprocess.run(
                ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                 f"--callgrind-out-file={scratch}/{mode}.%p", sys.executable, "-m", "bench.delivery_cg", mode,
                 str(users), str(out)],
                check=True, capture_output=True, env={**os.environ, "FLUVIUS_BENCH_CG_SQLITE": "1" if sqlite else ""})
            threads = []
            for path in sorted(Path(scratch).glob(f"{mode}.*-*")):
                totals = [line for line in path.read_text().splitlines() if line.startswith("totals:")]
                threads.append(int(totals[0].split()[1]) if totals else 0)
            counts[mode] = {"main": threads[0], "relay": sum(threads[1:]),
                            "notifies": json.loads(out.read_text())["notifies"]}
    commands = users * (1 + RENAMES)
    main_ratio = counts["celery"]["main"] / counts["off"]["main"]
    per_notify = counts["celery"]["relay"] / max(1, counts["celery"]["notifies"])
    # At native speed (the dispatch-off median of the throughput part, else 1 ms a command) the
    # relay thread sends at most one NOTIFY per RELAY_NOTIFY_INTERVAL.
    seconds = COMMAND_SECONDS[0] if COMMAND_SECONDS else 0.001
    notifies = min(commands, commands * seconds / float(fluvius_settings.RELAY_NOTIFY_INTERVAL) + 1)
    total_ratio = (counts["celery"]["main"] + per_notify * notifies) / counts["off"]["main"]
    figures = {
        "instructions per command, dispatch off": counts["off"]["main"] / commands,
        "instructions per command, request thread, subscribed + celery": counts["celery"]["main"] / commands,
        "request thread: celery / off (instructions)": main_ratio,
        "relay thread instructions per NOTIFY": per_notify,
        "with the relay thread at native speed: celery / off (target <= 1.03)": total_ratio,
    }
    lines = [f"callgrind, {commands} commands a side; the relay thread charged {notifies:.0f} NOTIFYs "
             f"(one per {fluvius_settings.RELAY_NOTIFY_INTERVAL} s at {seconds * 1000:.2f} ms a command); "
             f"under callgrind it sent {counts['celery']['notifies']}"]
    return figures, lines


# The dispatch-off seconds per command of the throughput part (for the instruction count).
COMMAND_SECONDS: list[float] = []


# -- 2. latency from commit to handler start ------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def create_note(title: str):
    from tests.testapp.domain import NoteDomain

    domain = NoteDomain()
    return domain.process_command(domain.create_command("create-note", {"title": title}))


def inline_latency(samples: int) -> list[float]:
    from django.test import override_settings

    from django_fluvius.delivery import dispatch
    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers

    stamps: dict[str, float] = {}
    starts: dict[int, float] = {}
    registry = HandlerRegistry()

    @event_handler("note-created", namespace="test-notes", name="bench.latency-inline", registry=registry)
    def started(event):
        starts[event.position] = time.perf_counter()

    original = dispatch.committed

    def stamped(events, using):
        stamps["commit"] = time.perf_counter()  # the on-commit callback: COMMIT has just returned
        return original(events, using)

    handlers.register(started.handler_spec)
    dispatch.committed = stamped
    values = []
    try:
        with override_settings(FLUVIUS={**settings_fluvius(), "DISPATCH": "inline"}):
            create_note("warm-up")
            for i in range(samples):
                result = create_note(f"inline {i}")
                values.append(starts[result.events[0].position] - stamps["commit"])
    finally:
        dispatch.committed = original
        handlers.unregister("bench.latency-inline")
    return values


def settings_fluvius() -> dict:
    from django.conf import settings

    return dict(settings.FLUVIUS)


def celery_latency(samples: int, conn_max_age: int = 60) -> tuple[list[float], list[float]]:
    """(commit -> handler start across processes, publish -> empty task start) in seconds.

    ``conn_max_age``: the worker's ``CONN_MAX_AGE``. The docs set 60 (docs/handlers.md,
    docs/deployment.md): with Django's default 0, Celery's Django fixup closes the worker's
    connections after every task and each delivery opens a new one (about 7 ms here).
    """
    from celery import Celery
    from django.db import connection
    from django.test import override_settings

    from django_fluvius.delivery.dispatch import relay
    from tests.dispatch_support import QUEUE, Worker

    out = Path(tempfile.mkdtemp(prefix="fluvius-latency-"))
    # The worker as the docs configure one: prefork, prefetch multiplier 1, late acks, the
    # default relay poll (2 s; LISTEN wakes it) and REDELIVER_AFTER, CONN_MAX_AGE.
    os.environ.update({"FLUVIUS_BENCH_LATENCY_DIR": str(out), "FLUVIUS_TEST_INSTALL_HANDLERS": "0",
                       "FLUVIUS_TEST_CONN_MAX_AGE": str(conn_max_age),
                       "FLUVIUS_TEST_EXTRA_HANDLERS": "bench.delivery_handlers",
                       "FLUVIUS_TEST_REDELIVER_AFTER": "300", "FLUVIUS_TEST_RELAY_POLL": "2.0"})
    app = Celery("bench-latency", broker=BROKER, set_as_current=False)
    worker = Worker(connection.settings_dict["NAME"], out, out, concurrency=2, broker=BROKER).start()
    values: list[float] = []
    pings: list[float] = []
    try:
        # The web process as the docs configure it: RELAY="notify" (the default).
        with override_settings(FLUVIUS={**settings_fluvius(), "DISPATCH": "celery", "CELERY_APP": app,
                                        "CELERY_QUEUE": QUEUE, "RELAY": "notify"}):
            deadline = time.time() + 30
            while time.time() < deadline and not _subscribed("bench.latency"):
                time.sleep(0.1)
            # The worker first catches the test app's subscriptions up on the events the
            # throughput part wrote: time the deliveries once that is done, not beside it.
            _wait_caught_up(60)
            for i in range(samples + 2):
                result = create_note(f"celery {i}")
                committed = time.time()
                path = out / str(result.events[0].position)
                end = time.time() + 10
                while not path.exists() and time.time() < end:
                    time.sleep(0.001)
                assert path.exists(), f"the worker never ran the handler\n{worker.output()[-3000:]}"
                time.sleep(0.01)
                if i >= 2:  # two warm-up rounds: the worker's processes and connections
                    values.append(float(path.read_text()) - committed)
                time.sleep(0.05)
            assert relay.flush(10)
            marker = out / "ping"
            for i in range(samples + 2):
                sent = time.time()
                app.send_task("fluvius.bench_ping", args=[str(marker) + str(i)], queue=QUEUE)
                target = Path(str(marker) + str(i))
                end = time.time() + 10
                while not target.exists() and time.time() < end:
                    time.sleep(0.001)
                time.sleep(0.01)
                if i >= 2 and target.exists():
                    pings.append(float(target.read_text()) - sent)
                time.sleep(0.05)
    finally:
        worker.stop()
        app.close()
    return values, pings


def _wait_caught_up(timeout: float) -> None:
    """Until every subscription's checkpoint has reached the newest event (or ``timeout``)."""
    from django.db.models import Max

    from django_fluvius.models import Checkpoint, Event

    head = Event.objects.aggregate(head=Max("position"))["head"] or 0
    deadline = time.time() + timeout
    while time.time() < deadline and Checkpoint.objects.filter(position__lt=head).exists():
        time.sleep(0.2)


def _subscribed(name: str) -> bool:
    from django_fluvius.models import Checkpoint

    return Checkpoint.objects.filter(name=name).exists()


def latency(samples: int) -> tuple[dict[str, float], list[str]]:
    inline = inline_latency(samples)
    celery, pings = celery_latency(samples)
    reconnecting, _ = celery_latency(samples, conn_max_age=0)
    ms = 1000.0
    figures = {
        "inline commit->handler ms (median)": statistics.median(inline) * ms,
        "inline commit->handler ms (p99, target <= 50)": percentile(inline, 0.99) * ms,
        "celery commit->handler ms (median)": statistics.median(celery) * ms,
        "celery commit->handler ms (p99, target <= 50)": percentile(celery, 0.99) * ms,
        "celery, worker CONN_MAX_AGE=0 (a connection per task) commit->handler ms (median)":
            statistics.median(reconnecting) * ms,
        "celery, worker CONN_MAX_AGE=0 commit->handler ms (p99)": percentile(reconnecting, 0.99) * ms,
        "empty celery task publish->start ms (median)": statistics.median(pings) * ms if pings else 0.0,
        "celery commit->handler / empty task (medians)": (statistics.median(celery) / statistics.median(pings)
                                                          if pings else 0.0),
    }
    lines = [f"{samples} commits one at a time; Celery: handler in the worker only, the commit's NOTIFY "
             f"wakes the worker's relay (LISTEN), 2 worker processes, Redis; the worker's CONN_MAX_AGE "
             f"60 as the docs set it, and (second line) Django's default 0"]
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
    """One set-based upsert per batch: counts add up, the rest is replaced.

    On PostgreSQL the rows go as five arrays (``unnest``), not 5 x 1000 placeholders:
    the driver then has five parameters to adapt rather than a long query to split,
    which is what a projection writing batches should do.
    """
    from django.db import connections

    from tests.testapp.models import NoteActivity

    if not rows:
        return
    connection = connections[using]
    table = NoteActivity._meta.db_table
    pk = NoteActivity._meta.pk
    upsert = (f"ON CONFLICT (id) DO UPDATE SET events = {table}.events + EXCLUDED.events, "
              f"title = CASE WHEN EXCLUDED.title <> '' THEN EXCLUDED.title ELSE {table}.title END, "
              f"last_version = EXCLUDED.last_version, last_position = EXCLUDED.last_position")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            columns = list(zip(*rows, strict=True))
            cursor.execute(
                f"INSERT INTO {table} (id, title, events, last_version, last_position) "
                f"SELECT * FROM unnest(%s::uuid[], %s::text[], %s::int[], %s::int[], %s::bigint[]) {upsert}",
                [list(columns[0]), [title or "" for title in columns[1]], list(columns[2]), list(columns[3]),
                 list(columns[4])])
            return
        marks = ", ".join(["(%s, %s, %s, %s, %s)"] * len(rows))
        params = [value for row in rows
                  for value in (pk.get_db_prep_value(row[0], connection), row[1] or "", row[2], row[3], row[4])]
        cursor.execute(f"INSERT INTO {table} (id, title, events, last_version, last_position) VALUES {marks} "
                       f"{upsert}", params)


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
        batch_size = CATCH_UP_BATCH

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
    # A live store has statistics (autovacuum analyzes within a minute of a load): without
    # them the planner took the (namespace, evt_key) index and sorted every batch, 59 ms a
    # batch instead of 1 ms, for the framework and the plain loop alike (bench.admin_list,
    # bench.eventsourcing_ops and bench.query analyze after loading too).
    from django.db import connection

    if connection.vendor in ("postgresql", "mysql"):
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE TABLE django_fluvius_event" if connection.vendor == "mysql"
                           else "ANALYZE django_fluvius_event")
    return len(rows)


def catch_up(events: int, runs: int) -> tuple[dict[str, float], list[str]]:
    from django.db import connection, transaction

    from django_fluvius.models import Event
    from tests.testapp.models import NoteActivity

    seeded = seed(events)
    # The latency part's notes (one event each) are in the table too: both sides read them.
    matching = Event.objects.filter(namespace="test-notes", evt_key__in=["note-created", "note-edited"]).count()
    projection = make_projection()()

    def framework() -> float:
        projection.reset()
        start = time.perf_counter()
        result = projection.catch_up()
        elapsed = time.perf_counter() - start
        assert result.applied == matching, result
        return elapsed

    def plain() -> float:
        NoteActivity.objects.all().delete()
        start = time.perf_counter()
        position = 0
        while True:
            with transaction.atomic():
                batch = list(Event.objects.filter(position__gt=position, namespace="test-notes",
                                                  evt_key__in=["note-created", "note-edited"])
                             .order_by("position")[:CATCH_UP_BATCH])
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
        "subscription catch-up events/s (median, target >= 15000)": matching / timings["subject"],
        "plain QuerySet loop events/s (median)": matching / timings["baseline"],
        "worker / plain loop": timings["baseline"] / timings["subject"],
    }
    lines = [f"{seeded:,} events ({seeded // EVENTS_PER_NOTE:,} notes x {EVENTS_PER_NOTE}), batches of "
             f"{CATCH_UP_BATCH} (both sides), "
             f"{runs} runs each, from zero"]
    return figures, lines


def handler_catch_up(events: int) -> tuple[dict[str, float], list[str]]:
    """A start="beginning" handler subscription handing ``events`` over to Celery, vs the messages alone."""
    from celery import Celery
    from django.conf import settings
    from django.test import override_settings

    from django_fluvius.delivery.dispatch import Attempt, deliver_pending
    from django_fluvius.delivery.handlers import HandlerRegistry, event_handler, handlers
    from django_fluvius.models import Event

    queue = f"fluvius-bench-{uuid.uuid4().hex[:8]}"
    app = Celery("bench-catch-up", broker=BROKER, set_as_current=False)
    registry = HandlerRegistry()

    @event_handler(["note-created", "note-edited"], namespace="test-notes", name="bench.history",
                   start="beginning", registry=registry)
    def history(event):  # never runs here
        return None

    handlers.register(history.handler_spec)
    try:
        with override_settings(FLUVIUS={**settings.FLUVIUS, "DISPATCH": "celery", "CELERY_APP": app,
                                        "CELERY_QUEUE": queue, "SUBSCRIPTION_WINDOW": 10_000_000}):
            start = time.perf_counter()
            result = deliver_pending(names=["bench.history"])
            subscribed = time.perf_counter() - start
        positions = list(Event.objects.filter(namespace="test-notes").order_by("position")
                         .values_list("position", flat=True))
        events = len(positions)  # the seeded notes' events, and the latency part's notes
        assert result.handed_over == events, result
        start = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for i in range(0, len(positions), 100):
                app.send_task("fluvius.deliver", args=[[Attempt("bench.history", p).as_message()
                                                        for p in positions[i:i + 100]], "default"],
                              queue=queue, producer=producer)
        alone = time.perf_counter() - start
    finally:
        handlers.unregister("bench.history")
        import redis

        redis.Redis.from_url(BROKER).delete(queue)
        app.close()
    figures = {
        "handler subscription hand-over events/s (from zero)": events / subscribed,
        "the same Celery messages alone events/s": events / alone,
        "hand-over / messages alone": alone / subscribed,
    }
    return figures, [f"{events:,} events handed to Celery by one start=\"beginning\" handler subscription"]


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=100, help="users per throughput run")
    parser.add_argument("--events", type=int, default=100_000, help="events the subscription catches up on")
    parser.add_argument("--samples", type=int, default=200, help="commits per latency measurement")
    parser.add_argument("--parts", default="throughput,instructions,catch-up,latency",
                        help="comma-separated parts to run: throughput, instructions, catch-up, latency")
    args = parser.parse_args(argv)
    users = 5 if args.quick else args.users
    events = 2_000 if args.quick else args.events
    runs = 1 if args.quick else args.runs
    samples = 10 if args.quick else args.samples
    parts = {part.strip() for part in args.parts.split(",")}
    setup_django("fluvius_bench_delivery", sqlite=args.sqlite)
    figures: dict[str, float] = {}
    lines: list[str] = []
    if "throughput" in parts:
        more, more_lines = throughput(users, runs)
        figures.update(more)
        lines += more_lines
    if "instructions" in parts:
        more, more_lines = instructions(2 if args.quick else 30, sqlite=args.sqlite)
        figures.update(more)
        lines += more_lines
    if "latency" in parts:
        # Before the catch-up: its worker would otherwise start by catching the test app's
        # async projections up on the catch-up's 100,000 notes, beside the deliveries timed.
        lat, lat_lines = latency(samples)
        figures.update(lat)
        lines += lat_lines
    if "catch-up" in parts:
        more, more_lines = catch_up(events, 1 if args.quick else min(runs, 3))
        handed, handed_lines = handler_catch_up(events)
        figures.update({**more, **handed})
        lines += more_lines + handed_lines
    return report("delivery", figures, lines=lines)


__all__ = ["main", "median_of"]

if __name__ == "__main__":
    main()
