"""Shared plumbing for benchmarks: a database of their own, timing, medians, reports.

Every benchmark measures its subject and its baseline in the same run, several
times, and reports medians and the ratio subject/baseline (machines are shared
and noisy: ratios travel, absolute times don't).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DEFAULT_PG = "postgres://127.0.0.1:5432/test"
DEFAULT_MARIADB = "mysql://root@127.0.0.1:3306/test"


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--runs", type=int, default=5, help="repetitions; the median is reported")
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite instead of PostgreSQL")
    parser.add_argument("--mariadb", action="store_true",
                        help="run on MariaDB/MySQL (BENCH_MARIADB_URL) instead of PostgreSQL")
    return parser


def pg_server_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL", DEFAULT_PG)


def create_pg_database(name: str, *, drop: bool = True) -> str:
    """(Re)create a PostgreSQL database of the benchmark's own; return its URL.

    ``BENCH_DB_PREFIX`` is put before the name, so two runs on one server (the test
    suite of two checkouts, say) never drop each other's database.
    """
    import psycopg

    name = os.environ.get("BENCH_DB_PREFIX", "") + name

    base = pg_server_url()
    with psycopg.connect(_dsn(base), autocommit=True) as conn:
        if drop:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


def create_mysql_database(name: str, *, drop: bool = True) -> str:
    """(Re)create a MariaDB / MySQL database of the benchmark's own; return its URL."""
    import MySQLdb

    name = os.environ.get("BENCH_DB_PREFIX", "") + name
    base = os.environ.get("BENCH_MARIADB_URL", DEFAULT_MARIADB)
    conn = MySQLdb.connect(**mysql_params(base, db=""))
    try:
        cursor = conn.cursor()
        if drop:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    finally:
        conn.close()
    return base.rsplit("/", 1)[0] + "/" + name


def mysql_params(url: str, **overrides: Any) -> dict[str, Any]:
    """mysql://user:password@host:port/db -> MySQLdb.connect keyword arguments."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    params = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 3306, "user": parts.username or "root",
              "password": parts.password or "", "db": parts.path.lstrip("/"), "charset": "utf8mb4"}
    return {**params, **overrides}


def _dsn(url: str) -> str:
    """postgres://host:port/db -> a libpq URL psycopg accepts."""
    return url.replace("postgres://", "postgresql://", 1)


def setup_django(db_name: str, *, sqlite: bool = False, mariadb: bool = False, drop: bool = True,
                 migrate: bool = True) -> str:
    """Point Django at a fresh benchmark database, set it up and migrate it.

    Returns the database URL (usable with ``psycopg.connect(dsn(url))``).
    """
    if sqlite:
        path = ROOT / ".data" / f"bench-{os.environ.get('BENCH_DB_PREFIX', '')}{db_name}.sqlite3"
        path.parent.mkdir(exist_ok=True)
        if drop and path.exists():
            path.unlink()
        url = f"sqlite:///{path}"
    elif mariadb:
        url = create_mysql_database(db_name, drop=drop)
    else:
        url = create_pg_database(db_name, drop=drop)
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
    return url


def dsn(url: str) -> str:
    return _dsn(url)


def timed(func: Callable[[], Any]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median_of(func: Callable[[], float], runs: int) -> tuple[float, list[float]]:
    """Call ``func`` (which returns one measurement) ``runs`` times; the median and all values."""
    values = [func() for _ in range(runs)]
    return statistics.median(values), values


def interleaved(subject: Callable[[], float], baseline: Callable[[], float], runs: int) -> dict[str, Any]:
    """Alternate subject and baseline runs so drifting machine load hits both alike."""
    subject_values: list[float] = []
    baseline_values: list[float] = []
    for i in range(runs):
        order = (subject, baseline) if i % 2 == 0 else (baseline, subject)
        for func in order:
            value = func()
            (subject_values if func is subject else baseline_values).append(value)
    return {
        "subject": statistics.median(subject_values),
        "baseline": statistics.median(baseline_values),
        "subject_runs": subject_values,
        "baseline_runs": baseline_values,
    }


def machine() -> dict[str, str]:
    import django

    info = {
        "python": platform.python_version(),
        "django": django.get_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }
    try:
        from django.db import connection

        versions = {"sqlite": lambda: ".".join(map(str, connection.Database.sqlite_version_info)),
                    "postgresql": lambda: connection.pg_version,
                    "mysql": lambda: ".".join(map(str, connection.mysql_version))}
        info["database"] = f"{connection.vendor} {versions[connection.vendor]()}"
    except Exception:  # noqa: BLE001 - informational only
        pass
    return info


def report(name: str, figures: dict[str, float], *, lines: list[str] | None = None) -> dict[str, float]:
    """Print the figures and save them as JSON under bench/results/<name>.json."""
    print(f"\n== {name}")
    for line in lines or []:
        print(f"   {line}")
    for key, value in figures.items():
        print(f"   {key:<40} {value:,.4g}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(
        json.dumps({"name": name, "figures": figures, "machine": machine(), "lines": lines or []}, indent=2)
    )
    return figures
