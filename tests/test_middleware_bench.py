"""The middleware benchmark keeps working: a --quick run finishes with its figures.
Speed itself is judged by the full run (bench/middleware.py on PostgreSQL), not here."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.bench


def test_middleware_benchmark_quick_run():
    env = {**os.environ, "BENCH_DB_PREFIX": os.environ.get("BENCH_DB_PREFIX", "")
           + os.environ.get("FLUVIUS_TEST_DB_NAME", "") + "_"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.middleware", "--quick", "--sqlite"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((ROOT / "bench" / "results" / "middleware-quick.json").read_text())["figures"]
    assert figures["commands per run"] == 55
    assert figures["default chain commands/s (median)"] > 0
    assert figures["empty chain commands/s (median)"] > 0
    assert figures["default chain / empty chain (target <= 1.05)"] > 0
    assert figures["chain alone, default: microseconds per command"] > figures[
        "chain alone, empty: microseconds per command"]
