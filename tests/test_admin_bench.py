"""The admin list benchmark still runs (a --quick smoke run, not a measurement)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
def test_admin_list_benchmark_quick_run():
    env = {**os.environ, "BENCH_POSTGRES_URL": os.environ.get("DATABASE_URL", "")}
    done = subprocess.run([sys.executable, "-m", "bench.admin_list", "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((ROOT / "bench" / "results" / "admin_list.json").read_text())["figures"]
    assert figures["events"] == 20_000
    for name in ("admin event list ms (median)", "plain ModelAdmin list ms (median)",
                 "raw page SQL ms (median)", "timeline of a 10-event aggregate ms (median)"):
        assert figures[name] > 0
