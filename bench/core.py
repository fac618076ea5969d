"""Command throughput of the core against a raw psycopg loop (issues 2 and 15).

Scenario: N users, each created then renamed 10 times, one command at a time,
each command its own durable transaction (synchronous_commit on).

Subjects, interleaved in one run (the order rotates from run to run):

- **default** (the headline): the configuration a new project has — the
  quickstart's settings: Django's default PostgreSQL ``OPTIONS`` (client-side
  binding, no prepared statements), inline dispatch, and the example's handler
  subscribed to ``user-created``;
- **tuned**: ``OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}``
  and handler dispatch off (the configuration of the figures before issue 15);
- **no-dispatch**: the default configuration with ``DISPATCH = None`` (the command
  path alone, without the inline delivery of the handler);
- **eventsourcing**: the ``eventsourcing`` library (``pip install
  django-fluvius[bench]``) on PostgreSQL with its own recorder, the same
  scenario through an ``Application`` (it writes no projection row);
- ``--mariadb``: the scenario on MariaDB / MySQL against a raw ``mysqlclient`` loop
  (``bench/core_mariadb.py``);
- **raw** (the baseline): a raw psycopg loop doing the least work per command —
  read the stream, insert the event, upsert the projection row, commit.

``eventsourcing-django`` is tried as a peer too; it pins ``Django<5.2`` (0.6)
and so does not install beside the supported Django: it is reported as absent.

Each figure is commands/s (median of the runs) and its ratio to the raw loop,
and — robust against other load on a shared machine — CPU time per command:
this process's CPU (``time.process_time``) plus the CPU of every PostgreSQL
backend connected to the benchmark's database (``/proc/<pid>/stat``, the server
is local), each as a ratio to the raw loop's.

``--stored N`` runs the command path (default OPTIONS, dispatch off) on the empty store and on a
second database already holding N COPY-ed events (300,000 aggregates x 10 for
3,000,000), interleaved: the store's size should not matter (>= 0.9).

``--writers N`` runs N processes at once, each on its own users (distinct
aggregates), for the default configuration and for N raw loops, interleaved;
the figure is total commands/s (all commands / wall time from the common start
to the last writer's end) and its ratio to the N raw loops' total.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from bench.common import arg_parser, dsn, report, setup_django

RENAMES = 10
DB_NAME = "fluvius_bench_core"
TUNED_OPTIONS = {"server_side_binding": True, "prepare_threshold": 5}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- CPU time: this process and the database's backends ---------------------------------


def backend_cpu(raw) -> float:
    """CPU seconds used so far by every backend connected to the benchmark's database."""
    pids = [row[0] for row in raw.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()").fetchall()]
    return sum(pid_cpu(pid) for pid in pids)  # a backend gone, or a server not local: 0


def pid_cpu(pid: int) -> float:
    """CPU seconds used so far by one process (0 when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


# CPU seconds of Django's backends, read just before configuration() closes them
# (a closed backend is gone from pg_stat_activity and /proc).
closed_backends_cpu = 0.0


def measured(run: Callable[[], None], raw) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and the database backends) of one run."""
    cpu0, db0, wall0 = time.process_time(), backend_cpu(raw) + closed_backends_cpu, time.perf_counter()
    run()
    wall = time.perf_counter() - wall0
    return wall, (time.process_time() - cpu0) + (backend_cpu(raw) + closed_backends_cpu - db0)


def _close_counting(connection) -> None:
    global closed_backends_cpu
    raw = connection.connection
    if raw is not None and hasattr(raw, "info"):
        closed_backends_cpu += pid_cpu(raw.info.backend_pid)
    connection.close()


# -- the subjects ------------------------------------------------------------------------


@contextmanager
def configuration(name: str):
    """Database OPTIONS and FLUVIUS settings of a named configuration (the connection is reopened)."""
    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    options = TUNED_OPTIONS if name == "tuned" else {}
    fluvius = dict(settings.FLUVIUS)
    fluvius["DISPATCH"] = "inline" if name == "default" else None
    saved = connection.settings_dict.get("OPTIONS", {})
    _close_counting(connection)
    connection.settings_dict["OPTIONS"] = dict(options)
    try:
        with override_settings(FLUVIUS=fluvius):
            if fluvius["DISPATCH"] is not None:
                skip_backlog()
            yield
    finally:
        _close_counting(connection)
        connection.settings_dict["OPTIONS"] = saved


def skip_backlog() -> None:
    """Move the handlers' checkpoints to the feed's end: a run delivers its own events only.

    The other subjects (dispatch off, the raw loop) write ``user-created`` events too; left
    on the feed, the next inline run's handler would deliver them all as well (three
    times its own work, in bench.core's rotation).
    """
    from django_fluvius.delivery import dispatch, subscriptions
    from django_fluvius.models import Checkpoint

    subs = dispatch.declared()
    known = set(Checkpoint.objects.values_list("name", flat=True))
    for sub in subs:
        if sub.kind == subscriptions.HANDLER and sub.name in known:
            subscriptions.reset(sub.name, "now", subs, "default")


def framework_run(users: int, config: str = "default") -> None:
    from example_project.users.domain import UserDomain

    with configuration(config):
        run_commands(UserDomain(), users)


def run_commands(domain, users: int) -> float:
    """The scenario through a domain: each user created, then renamed RENAMES times; the seconds it took."""
    start = time.perf_counter()
    for i in range(users):
        result = domain.process_command(
            domain.create_command("create-user", {"name": f"user {i}", "email": f"u{i}@example.com"})
        )
        for n in range(RENAMES):
            domain.process_command(
                domain.create_command("rename-user", {"name": f"user {i} v{n}"}, aggregate_id=result.aggregate_id)
            )
    return time.perf_counter() - start


def raw_run(conn, users: int) -> None:
    """The same commands as SQL: what any event store must do per command, and no more."""
    from datetime import UTC, datetime

    select_stream = "SELECT version, payload FROM django_fluvius_event WHERE aggregate_id = %s ORDER BY version"
    insert_event = (
        "INSERT INTO django_fluvius_event (namespace, resource, aggregate_id, version, evt_key, schema_version,"
        " payload, metadata, correlation_id, causation_id, \"user\", tenant, created)"
        " VALUES ('app-user', 'user', %s, %s, %s, 1, %s, '{}', '', '', '', '', %s)"
    )
    upsert_row = (
        "INSERT INTO app_user_user (id, version, created_at, updated_at, name, email, active)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,"
        " name = EXCLUDED.name, email = EXCLUDED.email, active = EXCLUDED.active"
    )

    def command(aggregate_id, evt_key, payload):
        now = datetime.now(UTC)
        with conn.transaction():
            with conn.cursor() as cur:
                rows = cur.execute(select_stream, (aggregate_id,)).fetchall()
                state = {}
                for _, p in rows:
                    state.update(p)
                state.update(payload)
                version = len(rows) + 1
                cur.execute(insert_event, (aggregate_id, version, evt_key, json.dumps(payload), now))
                cur.execute(upsert_row, (aggregate_id, version, now, now, state["name"], state["email"],
                                         state["active"]))

    for i in range(users):
        aggregate_id = uuid.uuid4()
        command(aggregate_id, "user-created", {"name": f"user {i}", "email": f"u{i}@example.com", "active": True})
        for n in range(RENAMES):
            command(aggregate_id, "user-renamed", {"name": f"user {i} v{n}"})


def eventsourcing_app(url: str):
    """An ``eventsourcing`` Application on the benchmark's PostgreSQL database (its own tables)."""
    try:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event
    except ImportError:
        return None
    from urllib.parse import urlparse

    class User(Aggregate):
        @event("Registered")
        def __init__(self, name: str, email: str):
            self.name = name
            self.email = email
            self.active = True

        @event("Renamed")
        def rename(self, name: str) -> None:
            self.name = name

    class Users(Application):
        def create(self, name: str, email: str):
            user = User(name, email)
            self.save(user)
            return user.id

        def rename(self, user_id, name: str) -> None:
            user = self.repository.get(user_id)
            user.rename(name)
            self.save(user)

    parsed = urlparse(url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parsed.path.lstrip("/"),
        "POSTGRES_HOST": parsed.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parsed.port or 5432),
        "POSTGRES_USER": parsed.username or os.environ.get("PGUSER") or _current_user(url),
        "POSTGRES_PASSWORD": parsed.password or os.environ.get("PGPASSWORD", ""),
        "POSTGRES_POOL_SIZE": "1",
        "POSTGRES_MAX_OVERFLOW": "0",
        "CREATE_TABLE": "y",
    }
    return Users(env=env)


def _current_user(url: str) -> str:
    import psycopg

    with psycopg.connect(dsn(url)) as conn:
        return conn.execute("SELECT current_user").fetchone()[0]


def eventsourcing_run(app, users: int) -> None:
    for i in range(users):
        user_id = app.create(f"user {i}", f"u{i}@example.com")
        for n in range(RENAMES):
            app.rename(user_id, f"user {i} v{n}")


def eventsourcing_django_status() -> str:
    try:
        import eventsourcing_django  # noqa: F401
    except ImportError:
        return "not installed (eventsourcing-django 0.6 requires Django<5.2; the supported Django is >=5.2)"
    return "installed"


# -- one writer: every subject interleaved ---------------------------------------------


def interleaved_subjects(subjects: dict[str, Callable[[], tuple[float, float]]], runs: int) -> dict[str, Any]:
    """Each subject once per round, the order rotating so drifting load hits all alike."""
    names = list(subjects)
    values: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for i in range(runs):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            values[name].append(subjects[name]())
    return values


def single(args, url: str) -> dict:
    import psycopg
    from django.db import connection

    users = args.users
    commands = users * (1 + RENAMES)
    with psycopg.connect(dsn(url), autocommit=True) as raw, psycopg.connect(dsn(url), autocommit=True) as probe:
        assert raw.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        app = eventsourcing_app(url)
        subjects: dict[str, Callable[[], tuple[float, float]]] = {
            "default": lambda: measured(lambda: framework_run(users, "default"), probe),
            "tuned": lambda: measured(lambda: framework_run(users, "tuned"), probe),
            "no-dispatch": lambda: measured(lambda: framework_run(users, "no-dispatch"), probe),
            "raw": lambda: measured(lambda: raw_run(raw, users), probe),
        }
        if app is not None:
            subjects["eventsourcing"] = lambda: measured(lambda: eventsourcing_run(app, users), probe)
        # Warm up every path (imports, caches, connections, prepared statements).
        framework_run(2, "default")
        framework_run(2, "tuned")
        framework_run(2, "no-dispatch")
        raw_run(raw, 2)
        if app is not None:
            eventsourcing_run(app, 2)
        values = interleaved_subjects(subjects, args.runs)
        if app is not None:
            app.close()
    connection.close()
    rate = {name: commands / statistics.median(w for w, _ in v) for name, v in values.items()}
    cpu = {name: statistics.median(c for _, c in v) / commands * 1e6 for name, v in values.items()}
    figures: dict[str, float] = {"commands per run": commands}
    for name in ("default", "tuned", "no-dispatch", "eventsourcing", "raw"):
        if name not in rate:
            continue
        figures[f"{name} commands/s (median)"] = rate[name]
    figures["default / raw (target >= 0.75)"] = rate["default"] / rate["raw"]
    figures["tuned / raw"] = rate["tuned"] / rate["raw"]
    figures["no-dispatch / raw"] = rate["no-dispatch"] / rate["raw"]
    if "eventsourcing" in rate:
        figures["eventsourcing / raw"] = rate["eventsourcing"] / rate["raw"]
        figures["default / eventsourcing (target >= 1.3)"] = rate["default"] / rate["eventsourcing"]
    for name in cpu:
        figures[f"{name} CPU us/command (median)"] = cpu[name]
    figures["CPU: raw / default"] = cpu["raw"] / cpu["default"]
    figures["CPU: raw / tuned"] = cpu["raw"] / cpu["tuned"]
    figures["CPU: raw / no-dispatch"] = cpu["raw"] / cpu["no-dispatch"]
    if "eventsourcing" in cpu:
        figures["CPU: eventsourcing / default"] = cpu["eventsourcing"] / cpu["default"]
    return report("core", figures, lines=[
        f"{users} users x (1 create + {RENAMES} renames), {args.runs} runs of each subject, interleaved, PostgreSQL",
        "default: Django's default OPTIONS, inline dispatch, a handler on user-created (the quickstart); "
        "no-dispatch: the same with DISPATCH None",
        f"tuned: OPTIONS={TUNED_OPTIONS}, dispatch off",
        "eventsourcing: " + ("the eventsourcing library, its PostgreSQL recorder" if app is not None
                             else "not installed (pip install django-fluvius[bench])"),
        "eventsourcing-django: " + eventsourcing_django_status(),
        "CPU: process_time of this process + utime/stime of the database's backends, per command",
    ])


# -- N writers ------------------------------------------------------------------------


def _writer(kind: str, url: str, users: int, barrier, results) -> None:
    """One writer process: warm up, wait for the others, run, report (start, end, CPU)."""
    import psycopg
    from django.db import connection

    connection.close()  # never the parent's socket
    with psycopg.connect(dsn(url), autocommit=True) as raw:
        if kind == "raw":
            raw_run(raw, 2)
            run = lambda: raw_run(raw, users)  # noqa: E731
        else:
            framework_run(2, kind)
            run = lambda: framework_run(users, kind)  # noqa: E731
        pid = raw.info.backend_pid

        def cpu() -> float:  # this process and its backend (Django's: counted as configuration() closes it)
            return time.process_time() + (pid_cpu(pid) if kind == "raw" else closed_backends_cpu)

        barrier.wait()
        start, cpu0 = time.perf_counter(), cpu()
        run()
        end = time.perf_counter()
        results.put((start, end, cpu() - cpu0, pid))
    connection.close()


def writers_round(kind: str, url: str, writers: int, users: int) -> tuple[float, float]:
    """Total commands/s of ``writers`` processes each running ``users`` users, and CPU µs per command."""
    from django.db import connections

    connections.close_all()
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(writers)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(kind, url, users, barrier, results)) for _ in range(writers)]
    for p in procs:
        p.start()
    got = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a {kind} writer failed (exit code {p.exitcode})")
    wall = max(end for _, end, _, _ in got) - min(start for start, _, _, _ in got)
    commands = writers * users * (1 + RENAMES)
    return commands / wall, sum(cpu for _, _, cpu, _ in got) / commands * 1e6


def concurrent(args, url: str) -> dict:
    writers = args.writers
    users = args.users
    kinds = ("default", "no-dispatch", "raw")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
    writers_round("default", url, writers, 2)  # warm the server's caches
    for i in range(args.runs):
        for kind in kinds[i % 3:] + kinds[:i % 3]:
            rate, cpu = writers_round(kind, url, writers, users)
            rates[kind].append(rate)
            cpus[kind].append(cpu)
    default, raw = statistics.median(rates["default"]), statistics.median(rates["raw"])
    no_dispatch = statistics.median(rates["no-dispatch"])
    cpu = {kind: statistics.median(values) for kind, values in cpus.items()}
    return report(f"core_writers_{writers}", {
        "writers": writers,
        "commands per writer per run": users * (1 + RENAMES),
        "default, total commands/s (median)": default,
        f"{writers} raw loops, total commands/s (median)": raw,
        "default / raw total (target >= 0.6 at 4)": default / raw,
        "no-dispatch, total commands/s (median)": no_dispatch,
        "no-dispatch / raw total": no_dispatch / raw,
        **{f"{kind} CPU us/command (median)": cpu[kind] for kind in kinds},
        "CPU: raw / default": cpu["raw"] / cpu["default"],
        "CPU: raw / no-dispatch": cpu["raw"] / cpu["no-dispatch"],
    }, lines=[
        f"{writers} processes x {users} users x (1 create + {RENAMES} renames), distinct aggregates, "
        f"{args.runs} runs each, interleaved, PostgreSQL, {os.cpu_count()} CPUs",
        "CPU: each writer's process_time + its backend's utime/stime, summed, per command",
        "default: Django's default OPTIONS, inline dispatch, a handler on user-created; "
        "no-dispatch: the same with DISPATCH None (the command path alone)",
        *(f"runs: {kind} " + ", ".join(f"{r:,.0f}" for r in rates[kind]) for kind in kinds),
    ])


# -- the store's size ------------------------------------------------------------------


@contextmanager
def database(name: str):
    """The default alias pointed at another database of the server (the connection is reopened)."""
    from django.db import connection

    saved = connection.settings_dict["NAME"]
    connection.close()
    connection.settings_dict["NAME"] = name
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["NAME"] = saved


def stored_store(events: int) -> str:
    """A second database, migrated, holding ``events`` COPY-ed events (kept between runs when it has them)."""
    import psycopg
    from django.core.management import call_command

    from bench.common import create_pg_database
    from bench.eventsourcing_ops import copy_streams

    url = create_pg_database(f"{DB_NAME}_stored", drop=False)
    name = url.rsplit("/", 1)[1]
    with database(name):
        call_command("migrate", verbosity=0)
    with psycopg.connect(dsn(url)) as conn:
        have = conn.execute("SELECT count(*) FROM django_fluvius_event").fetchone()[0]
    if have < events:
        streams = (events - have) // RENAMES
        for start in range(0, streams, 100_000):
            copy_streams(url, [(uuid.uuid4(), RENAMES) for _ in range(min(100_000, streams - start))])
    return name


def store_size(args, url: str) -> dict:
    """The command path on an empty store and on one holding ``--stored`` events, interleaved.

    With dispatch off (``no-dispatch``): the example's handler would otherwise begin by
    catching up on every COPY-ed ``user-created`` event of the full store (its
    subscription is new there), which measures delivery, not the store.
    """
    from django.db import connection

    users = args.users
    commands = users * (1 + RENAMES)
    stored = stored_store(args.stored)
    empty = connection.settings_dict["NAME"]
    rates: dict[str, list[float]] = {"empty": [], "stored": []}

    def run(name: str) -> float:
        with database(name):
            start = time.perf_counter()
            framework_run(users, "no-dispatch")
            return commands / (time.perf_counter() - start)

    run(empty), run(stored)  # warm up
    for i in range(args.runs):
        for which in (("empty", "stored") if i % 2 == 0 else ("stored", "empty")):
            rates[which].append(run(empty if which == "empty" else stored))
    with database(stored), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM django_fluvius_event")
        held = cursor.fetchone()[0]
    e, s = statistics.median(rates["empty"]), statistics.median(rates["stored"])
    return report("core_store_size", {
        "events in the full store (at the end)": held,
        "empty store commands/s (median)": e,
        "full store commands/s (median)": s,
        "full / empty (target >= 0.9)": s / e,
    }, lines=[
        f"{users} users x (1 create + {RENAMES} renames), Django's default OPTIONS, dispatch off, {args.runs} runs each, "
        "interleaved, PostgreSQL",
        "runs: empty " + ", ".join(f"{r:,.0f}" for r in rates["empty"])
        + "; full " + ", ".join(f"{r:,.0f}" for r in rates["stored"]),
    ])


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=None,
                        help="users per run (per writer with --writers); default 200 (100 per writer)")
    parser.add_argument("--writers", type=int, default=0, help="N concurrent writer processes")
    parser.add_argument("--stored", type=int, default=0,
                        help="compare an empty store with one already holding this many events (3000000)")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = 100 if args.writers else 200
    if args.quick:
        args.users, args.runs = 5, 1
        args.stored = min(args.stored, 1000)
    if args.mariadb:
        from bench import core_mariadb

        return core_mariadb.run(args.users, args.runs)
    if args.sqlite:
        raise SystemExit("The raw baseline is written for PostgreSQL; run without --sqlite.")
    url = setup_django(DB_NAME)
    if args.stored:
        return store_size(args, url)
    return concurrent(args, url) if args.writers else single(args, url)


if __name__ == "__main__":
    main()
