"""bench.core on MariaDB / MySQL: run through ``python -m bench.core --mariadb`` (no ``main`` of its own).

The same scenario as ``bench.core`` (users created then renamed RENAMES times,
each command its own durable transaction) in the default configuration (inline
dispatch, the example's handler on ``user-created``) and with dispatch off,
against a raw ``mysqlclient`` loop in the same process, on the same tables,
doing the least work per command — read the stream, insert the event, upsert
the projection row (``ON DUPLICATE KEY UPDATE``), commit. Both sides' event
inserts fire the feed-clock trigger, as it is part of the event table's schema there.

Besides commands/s, CPU time per command, robust against other load on a shared machine:
this process's (``time.process_time``) plus that of the server thread serving the
subject's connection (MariaDB runs one thread per connection; on a local server the
thread is found as the one whose CPU grows while the connection runs a CPU-bound
query, and read from ``/proc``). The server's background threads (log flushes, purge)
are left out on both sides.
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
import uuid
from collections.abc import Callable

from bench.common import report, setup_django
from bench.core import CLOCK_TICKS, DB_NAME, RENAMES, run_commands, skip_backlog


def raw_run_mysql(conn, users: int) -> float:
    """The same commands as MariaDB SQL through a bare MySQLdb connection."""
    select_stream = "SELECT version, payload FROM django_fluvius_event WHERE aggregate_id = %s ORDER BY version"
    insert_event = (
        "INSERT INTO django_fluvius_event (namespace, resource, aggregate_id, version, evt_key, schema_version,"
        " payload, metadata, correlation_id, causation_id, `user`, tenant, created)"
        " VALUES ('app-user', 'user', %s, %s, %s, 1, %s, '{}', '', '', '', '', %s)"
    )
    upsert_row = (
        "INSERT INTO app_user_user (id, version, created_at, updated_at, name, email, active)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON DUPLICATE KEY UPDATE version = VALUES(version), updated_at = VALUES(updated_at),"
        " name = VALUES(name), email = VALUES(email), active = VALUES(active)"
    )
    cur = conn.cursor()

    def command(aggregate_id, evt_key, payload):
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        cur.execute(select_stream, (aggregate_id,))
        rows = cur.fetchall()
        state = {}
        for _, p in rows:
            state.update(json.loads(p))
        state.update(payload)
        version = len(rows) + 1
        cur.execute(insert_event, (aggregate_id, version, evt_key, json.dumps(payload), now))
        cur.execute(upsert_row, (aggregate_id, version, now, now, state["name"], state["email"], state["active"]))
        conn.commit()

    start = time.perf_counter()
    for i in range(users):
        aggregate_id = uuid.uuid4().hex  # Django's UUIDField is char(32) on MariaDB
        command(aggregate_id, "user-created", {"name": f"user {i}", "email": f"u{i}@example.com", "active": True})
        for n in range(RENAMES):
            command(aggregate_id, "user-renamed", {"name": f"user {i} v{n}"})
    return time.perf_counter() - start


def _task_cpu(path: str) -> float:
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _server_tasks(cursor) -> dict[str, float]:
    """CPU seconds so far of every thread of the (local) server: /proc/<pid>/task/<tid>/stat -> seconds."""
    cursor.execute("SELECT @@pid_file")
    try:
        with open(cursor.fetchone()[0]) as f:
            pid = int(f.read().split()[0])
        tids = os.listdir(f"/proc/{pid}/task")
    except (OSError, ValueError, IndexError):
        return {}
    return {path: _task_cpu(path) for path in (f"/proc/{pid}/task/{tid}/stat" for tid in tids)}


def server_thread(cursor) -> str | None:
    """The /proc stat file of the server thread serving this cursor's connection (None: not found)."""
    before = _server_tasks(cursor)
    cursor.execute("SELECT BENCHMARK(3000000, MD5('fluvius'))")
    cursor.fetchall()
    after = _server_tasks(cursor)
    if not after:
        return None
    path = max(after, key=lambda p: after[p] - before.get(p, after[p]))
    return path if after[path] - before.get(path, after[path]) >= 0.1 else None


def measured(run: Callable[[], float], thread: str | None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and of the connection's server thread) of one run."""
    cpu0, server0 = time.process_time(), _task_cpu(thread) if thread else 0.0
    wall = run()
    return wall, (time.process_time() - cpu0) + ((_task_cpu(thread) - server0) if thread else 0.0)


def framework_run(users: int, dispatch: str | None) -> float:
    from django.conf import settings
    from django.test import override_settings

    from example_project.users.domain import UserDomain

    with override_settings(FLUVIUS={**settings.FLUVIUS, "DISPATCH": dispatch}):
        if dispatch is not None:
            # As bench.core does: the run delivers its own events, not the user-created
            # events the other subjects wrote since (three times its own work, unmeasured).
            skip_backlog()
        return run_commands(UserDomain(), users)


def run(users: int, runs: int) -> dict:
    import MySQLdb

    from bench.common import mysql_params

    url = setup_django(DB_NAME, mariadb=True)
    from django.db import connection

    raw = MySQLdb.connect(**mysql_params(url))
    raw.autocommit(False)
    subjects = {
        "default": lambda: framework_run(users, "inline"),
        "no-dispatch": lambda: framework_run(users, None),
        "raw": lambda: raw_run_mysql(raw, users),
    }
    seconds: dict[str, list[float]] = {name: [] for name in subjects}
    cpus: dict[str, list[float]] = {name: [] for name in subjects}
    try:
        cur = raw.cursor()
        cur.execute("SELECT @@innodb_flush_log_at_trx_commit, VERSION()")
        flush, version = cur.fetchone()
        framework_run(2, "inline")
        framework_run(2, None)
        raw_run_mysql(raw, 2)
        with connection.cursor() as django_cursor:
            threads = {"framework": server_thread(django_cursor), "raw": server_thread(cur)}
        names = list(subjects)
        for i in range(runs):  # interleaved, the order rotating
            for name in names[i % 3:] + names[:i % 3]:
                wall, cpu = measured(subjects[name], threads["raw" if name == "raw" else "framework"])
                seconds[name].append(wall)
                cpus[name].append(cpu)
    finally:
        raw.close()
    connection.close()
    commands = users * (1 + RENAMES)
    rate = {name: commands / statistics.median(values) for name, values in seconds.items()}
    cpu = {name: statistics.median(values) / commands * 1e6 for name, values in cpus.items()}
    server = "and its server thread" if all(threads.values()) else "only (the server threads were not found)"
    return report("core-mariadb", {
        "commands per run": commands,
        "default commands/s (median)": rate["default"],
        "no-dispatch commands/s (median)": rate["no-dispatch"],
        "raw mysqlclient commands/s (median)": rate["raw"],
        "default / raw (target >= 0.7)": rate["default"] / rate["raw"],
        "no-dispatch / raw": rate["no-dispatch"] / rate["raw"],
        **{f"{name} CPU us/command (median)": value for name, value in cpu.items()},
        "CPU: raw / default": cpu["raw"] / cpu["default"],
        "CPU: raw / no-dispatch": cpu["raw"] / cpu["no-dispatch"],
    }, lines=[f"{users} users x (1 create + {RENAMES} renames), {runs} runs each, interleaved, {version}"
              f" (innodb_flush_log_at_trx_commit={flush})",
              "default: inline dispatch, the example's handler on user-created; no-dispatch: DISPATCH None",
              f"CPU: this process {server}"])
