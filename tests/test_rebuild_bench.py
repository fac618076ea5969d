"""bench.eventsourcing_ops keeps working: a --quick smoke run (not a measurement) on PostgreSQL."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_eventsourcing_ops_benchmark_quick_run():
    env = {**os.environ, "BENCH_POSTGRES_URL": os.environ.get("DATABASE_URL", "")}
    done = subprocess.run([sys.executable, "-m", "bench.eventsourcing_ops", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((ROOT / "bench" / "results" / "eventsourcing_ops-quick.json").read_text())["figures"]
    assert figures["rebuild events"] == 20_000
    assert figures["load 1,000 events, snapshots (ms)"] < figures["load 1,000 events, no snapshot (ms)"]
    for name in ("rebuild events/s (median, target >= 20,000)", "raw psycopg rebuild events/s (median, baseline)",
                 "rebuild peak RSS MB (max, target < 300)"):
        assert figures[name] > 0
