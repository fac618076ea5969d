"""Event-sourcing operations (issue 6): aggregate loads with and without snapshots, and
a rebuild of a million events.

Loads (``domain.load``), medians of several timed rounds:
  - an aggregate with 10 events                      (the baseline)
  - an aggregate with 10,000 events, no snapshot
  - an aggregate with 10,000 events, snapshots every 100 events
    target: within 1.5x the 10-event load
  - the same with 50 more events after its last snapshot (shown, not a target)

Rebuild: 100,000 users x 10 events (1,000,000 events) loaded with COPY, then
``rebuild(['app-user.user'])`` over the full projection table, in a child
process whose peak RSS (``getrusage``) is the memory figure. Baseline in the
same run: a raw psycopg rebuild of the same rows (server-side cursor, fold,
multi-row upserts, a commit per batch) in a child process of its own.
Targets: >= 20,000 events/s and peak RSS < 300 MB on PostgreSQL.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

from bench.common import ROOT, arg_parser, dsn, report, setup_django

DB_NAME = "fluvius_bench_esops"
EVENT_COLUMNS = ("namespace", "resource", "aggregate_id", "version", "evt_key", "schema_version", "payload",
                 "metadata", "correlation_id", "causation_id", "user", "tenant", "created")


# -- loading data fast -------------------------------------------------------------------


def user_stream_lines(aggregate_id: uuid.UUID, events: int, start: datetime.datetime,
                      first: int = 1) -> list[str]:
    """COPY text lines of one user's stream (versions first..events): created, then renamed."""
    agg = str(aggregate_id)
    lines = []
    for version in range(first, events + 1):
        if version == 1:
            evt_key, payload = "user-created", {"name": f"user {agg[:8]}", "email": f"{agg[:8]}@example.com",
                                                "active": True}
        else:
            evt_key, payload = "user-renamed", {"name": f"user {agg[:8]} v{version}"}
        created = (start + datetime.timedelta(microseconds=version)).isoformat()
        lines.append("\t".join(("app-user", "user", agg, str(version), evt_key, "1", json.dumps(payload),
                                '{"source": "bench"}', "", "", "", "", created)))
    return lines


def copy_streams(url: str, streams: list[tuple[uuid.UUID, int]], *, first: int = 1) -> None:
    import psycopg

    start = datetime.datetime.now(datetime.UTC)
    cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    with psycopg.connect(dsn(url)) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY django_fluvius_event ({cols}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for aggregate_id, events in streams:
                buffer.write("\n".join(user_stream_lines(aggregate_id, events, start, first)))
                buffer.write("\n")
                if buffer.tell() > 8_000_000:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE django_fluvius_event")


# -- loads -------------------------------------------------------------------------------


def time_loads(domain, aggregate_id, loads: int) -> float:
    """Seconds per load: the best estimate from ``loads`` back-to-back loads."""
    start = time.perf_counter()
    for _ in range(loads):
        domain.load(aggregate_id)
    return (time.perf_counter() - start) / loads


def load_benchmark(url: str, *, long_events: int, runs: int) -> dict[str, float]:
    from django.db import connection

    from django_fluvius.events.snapshots import take_snapshots
    from example_project.users.domain import UserAggregate, UserDomain

    short, long_plain, long_snap, long_tail = (uuid.uuid4() for _ in range(4))
    copy_streams(url, [(short, 10), (long_plain, long_events), (long_snap, long_events),
                       (long_tail, long_events)])
    UserAggregate.snapshot_every = 100
    try:
        # Snapshots as the command path leaves them: the latest one at the last multiple of 100.
        assert take_snapshots(UserDomain, [long_snap, long_tail]) == 2
        copy_streams(url, [(long_tail, long_events + 50)], first=long_events + 1)  # 50 events after it
        domain = UserDomain()
        assert domain.load(long_snap).version == long_events
        tail = domain.load(long_tail)
        assert tail.version == long_events + 50 and tail.state["name"].endswith(f"v{long_events + 50}")
        rounds: dict[str, list[float]] = {"short": [], "snap": [], "tail": [], "plain": []}
        for _ in range(runs):
            rounds["short"].append(time_loads(domain, short, 50))
            rounds["snap"].append(time_loads(domain, long_snap, 50))
            rounds["tail"].append(time_loads(domain, long_tail, 50))
        UserAggregate.snapshot_every = None  # "no snapshot": the plain path, as a project without them
        assert domain.load(long_plain).version == long_events
        for _ in range(runs):
            rounds["plain"].append(time_loads(domain, long_plain, 3))
    finally:
        UserAggregate.snapshot_every = None
        connection.close()
    ms = {k: statistics.median(v) * 1000 for k, v in rounds.items()}
    return {
        "load 10 events (ms, baseline)": ms["short"],
        f"load {long_events:,} events, no snapshot (ms)": ms["plain"],
        f"load {long_events:,} events, snapshots (ms)": ms["snap"],
        f"load {long_events + 50:,} events, 50 after the snapshot (ms)": ms["tail"],
        "no snapshot / 10 events": ms["plain"] / ms["short"],
        "snapshots / 10 events (target <= 1.5)": ms["snap"] / ms["short"],
        "50 after snapshot / 10 events": ms["tail"] / ms["short"],
    }


# -- rebuild (each run in a child process: its peak RSS is the run's) -------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not getrusage's ru_maxrss: Linux carries that over
    exec from the parent, so a child would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_rebuild(url: str, batch_size: int) -> dict:
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    import django

    django.setup()
    from django_fluvius.ops.rebuild import rebuild

    base_rss = peak_rss_mb()
    start = time.perf_counter()
    run = rebuild(["app-user.user"], restart=True, progress=False, batch_size=batch_size)[0]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": run.events_done, "rows": run.rows_written,
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base_rss}


def child_raw(url: str, batch_size: int) -> dict:
    """The least a rebuild must do, in raw psycopg: stream, fold, upsert per batch, commit."""
    import psycopg

    base_rss = peak_rss_mb()
    upsert_head = ("INSERT INTO app_user_user (id, version, created_at, updated_at, name, email, active) VALUES ")
    upsert_tail = (" ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, created_at = EXCLUDED.created_at,"
                   " updated_at = EXCLUDED.updated_at, name = EXCLUDED.name, email = EXCLUDED.email,"
                   " active = EXCLUDED.active WHERE app_user_user.version <= EXCLUDED.version")
    start = time.perf_counter()
    events = rows = 0
    with psycopg.connect(dsn(url)) as read, psycopg.connect(dsn(url)) as write:
        with read.cursor(name="stream") as cur:
            cur.itersize = 5000
            cur.execute("SELECT aggregate_id, version, payload, created FROM django_fluvius_event"
                        " WHERE namespace = 'app-user' AND resource = 'user' ORDER BY aggregate_id, version")
            pending: list[tuple] = []
            current = None
            state: dict = {}
            first = last = None
            last_version = 0

            def flush():
                if pending:
                    marks = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(pending))
                    write.execute(upsert_head + marks + upsert_tail, [v for row in pending for v in row])
                    write.commit()
                    pending.clear()

            for aggregate_id, version, payload, created in cur:
                events += 1
                if aggregate_id != current:
                    if current is not None:
                        pending.append((current, last_version, first, last, state["name"], state["email"],
                                        state["active"]))
                        rows += 1
                        if len(pending) >= batch_size:
                            flush()
                    current, state, first = aggregate_id, {}, created
                state.update(payload)
                last, last_version = created, version
            if current is not None:
                pending.append((current, last_version, first, last, state["name"], state["email"], state["active"]))
                rows += 1
            flush()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "events": events, "rows": rows,
            "peak_rss_mb": peak_rss_mb(), "base_rss_mb": base_rss}


def in_child(mode: str, url: str, batch_size: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "bench.eventsourcing_ops", f"--child-{mode}", url,
                           "--batch-size", str(batch_size)], cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def rebuild_benchmark(url: str, *, users: int, events_per_user: int, runs: int, batch_size: int) -> dict[str, float]:
    from django.db import connection

    from example_project.users.models import User

    copy_streams(url, [(uuid.uuid4(), events_per_user) for _ in range(users)])
    total = users * events_per_user
    connection.close()
    # A first rebuild fills the (empty) table; the measured runs rebuild a full table, as in real life.
    first = in_child("rebuild", url, batch_size)
    assert first["events"] >= total and User.objects.count() >= users, first
    connection.close()
    framework, raw = [], []
    for i in range(runs):
        order = (("rebuild", framework), ("raw", raw)) if i % 2 == 0 else (("raw", raw), ("rebuild", framework))
        for mode, results in order:
            results.append(in_child(mode, url, batch_size))
    rate = statistics.median(r["events"] / r["seconds"] for r in framework)
    raw_rate = statistics.median(r["events"] / r["seconds"] for r in raw)
    return {
        "rebuild events": total,
        "first rebuild into an empty table (events/s)": first["events"] / first["seconds"],
        "rebuild events/s (median, target >= 20,000)": rate,
        "raw psycopg rebuild events/s (median, baseline)": raw_rate,
        "rebuild / raw": rate / raw_rate,
        "rebuild peak RSS MB (max, target < 300)": max(r["peak_rss_mb"] for r in framework),
        "rebuild RSS after django.setup MB": statistics.median(r["base_rss_mb"] for r in framework),
        "raw peak RSS MB (max)": max(r["peak_rss_mb"] for r in raw),
    }


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--long", type=int, default=10_000, help="events of the long aggregates")
    parser.add_argument("--users", type=int, default=100_000, help="users of the rebuild (x --events-per-user)")
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--rebuild-runs", type=int, default=3, help="rebuild repetitions (each ~1 minute)")
    parser.add_argument("--batch-size", type=int, default=500, help="aggregates per rebuild batch")
    parser.add_argument("--child-rebuild", metavar="URL", help=argparse_hidden())
    parser.add_argument("--child-raw", metavar="URL", help=argparse_hidden())
    parser.add_argument("--skip-rebuild", action="store_true")
    args = parser.parse_args(argv)
    if args.child_rebuild or args.child_raw:
        result = (child_rebuild(args.child_rebuild, args.batch_size) if args.child_rebuild
                  else child_raw(args.child_raw, args.batch_size))
        print(json.dumps(result))
        return result
    if args.sqlite:
        raise SystemExit("These figures are for PostgreSQL (COPY, server-side cursors); run without --sqlite.")
    if args.quick:
        args.long, args.users, args.runs, args.rebuild_runs = 1_000, 2_000, 1, 1
    # A quick run (the test suite's smoke run) keeps off the real run's database and results.
    url = setup_django(DB_NAME + ("_quick" if args.quick else ""))
    figures = load_benchmark(url, long_events=args.long, runs=args.runs)
    if not args.skip_rebuild:
        figures.update(rebuild_benchmark(url, users=args.users, events_per_user=args.events_per_user,
                                         runs=args.rebuild_runs, batch_size=args.batch_size))
    return report("eventsourcing_ops" + ("-quick" if args.quick else ""), figures, lines=[
        f"loads: medians of {args.runs} rounds of back-to-back loads; snapshots every 100 events",
        f"rebuild: {args.users:,} users x {args.events_per_user} events, batches of {args.batch_size} aggregates, "
        f"{args.rebuild_runs} runs interleaved with the raw baseline, each in a child process, PostgreSQL",
    ])


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
