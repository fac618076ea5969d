"""Command throughput of the core against a raw psycopg loop (issue 2).

Scenario: N users, each created then renamed 10 times, one command at a time,
each command its own durable transaction (synchronous_commit on).

Baseline, in the same run and on the same tables: a raw psycopg loop doing the
least work per command — read the stream, insert the event, upsert the
projection row, commit.

``--mariadb``: the same on MariaDB / MySQL against a raw ``mysqlclient`` loop
(the same statements in MariaDB's SQL; the event insert fires the feed-clock
trigger for both sides, as it is part of the event table's schema there).
"""

from __future__ import annotations

import json
import time
import uuid

from bench.common import arg_parser, dsn, interleaved, report, setup_django

RENAMES = 10


def framework_run(users: int) -> float:
    from django.test import override_settings

    from example_project.users.domain import UserDomain

    # The core alone: handlers (the example's welcome email) and their delivery
    # are measured by bench.delivery.
    with override_settings(FLUVIUS={**settings_fluvius(), "DISPATCH": None}):
        return run_commands(UserDomain(), users)


def settings_fluvius() -> dict:
    from django.conf import settings

    return dict(settings.FLUVIUS)


def run_commands(domain, users: int) -> float:
    """The scenario through a domain: each user created, then renamed RENAMES times."""
    start = time.perf_counter()
    for i in range(users):
        result = domain.process_command(
            domain.create_command("create-user", {"name": f"user {i}", "email": f"u{i}@example.com"})
        )
        for n in range(RENAMES):
            domain.process_command(
                domain.create_command("rename-user", {"name": f"user {i} v{n}"}, aggregate_id=result.aggregate_id)
            )
    return (time.perf_counter() - start)


def raw_run(conn, users: int) -> float:
    """The same commands as SQL: what any event store must do per command, and no more."""
    from django.utils import timezone

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
        now = timezone.now()
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

    start = time.perf_counter()
    for i in range(users):
        aggregate_id = uuid.uuid4()
        command(aggregate_id, "user-created", {"name": f"user {i}", "email": f"u{i}@example.com", "active": True})
        for n in range(RENAMES):
            command(aggregate_id, "user-renamed", {"name": f"user {i} v{n}"})
    return time.perf_counter() - start


def raw_run_mysql(conn, users: int) -> float:
    """The same commands as MariaDB SQL through a bare MySQLdb connection."""
    import datetime

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


def main_mariadb(users: int, runs: int) -> dict:
    import MySQLdb

    from bench.common import mysql_params

    url = setup_django("fluvius_bench_core", mariadb=True)
    from django.db import connection

    raw = MySQLdb.connect(**mysql_params(url))
    raw.autocommit(False)
    try:
        cur = raw.cursor()
        cur.execute("SELECT @@innodb_flush_log_at_trx_commit, VERSION()")
        flush, version = cur.fetchone()
        framework_run(2)
        raw_run_mysql(raw, 2)
        timings = interleaved(lambda: framework_run(users), lambda: raw_run_mysql(raw, users), runs)
    finally:
        raw.close()
    connection.close()
    commands = users * (1 + RENAMES)
    framework_rate = commands / timings["subject"]
    raw_rate = commands / timings["baseline"]
    return report("core-mariadb", {
        "commands per run": commands,
        "framework commands/s (median)": framework_rate,
        "raw mysqlclient commands/s (median)": raw_rate,
        "framework / raw (target >= 0.7)": framework_rate / raw_rate,
    }, lines=[f"{users} users x (1 create + {RENAMES} renames), {runs} runs each, interleaved, {version}"
              f" (innodb_flush_log_at_trx_commit={flush})"])


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args(argv)
    users = 10 if args.quick else args.users
    runs = 1 if args.quick else args.runs
    if args.mariadb:
        return main_mariadb(users, runs)
    url = setup_django("fluvius_bench_core", sqlite=args.sqlite)
    commands = users * (1 + RENAMES)

    from django.db import connection

    if args.sqlite:
        raise SystemExit("The raw baseline is written for PostgreSQL; run without --sqlite.")
    import psycopg

    with psycopg.connect(dsn(url), autocommit=True) as raw:
        assert raw.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        framework_run(2)  # warm up both paths (imports, caches, connections)
        raw_run(raw, 2)
        timings = interleaved(lambda: framework_run(users), lambda: raw_run(raw, users), runs)
    connection.close()
    framework_rate = commands / timings["subject"]
    raw_rate = commands / timings["baseline"]
    return report("core", {
        "commands per run": commands,
        "framework commands/s (median)": framework_rate,
        "raw psycopg commands/s (median)": raw_rate,
        "framework / raw (target >= 0.7)": framework_rate / raw_rate,
    }, lines=[f"{users} users x (1 create + {RENAMES} renames), {runs} runs each, interleaved, PostgreSQL"])


if __name__ == "__main__":
    main()
