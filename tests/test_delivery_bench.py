"""The delivery benchmark keeps working: a --quick run finishes with its figures.
Speed itself is judged by the full run (bench/delivery.py on PostgreSQL), not here."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .dispatch_support import broker_reachable

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.bench, pytest.mark.broker]


def test_delivery_benchmark_quick_run():
    if not broker_reachable():
        if os.environ.get("CI"):
            pytest.fail("bench.delivery needs the Redis broker at 127.0.0.1:6379, and CI must run it")
        pytest.skip("bench.delivery needs the Redis broker at 127.0.0.1:6379 (unreachable)")
    result = subprocess.run(
        [sys.executable, "-m", "bench.delivery", "--quick", "--sqlite"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((ROOT / "bench" / "results" / "delivery.json").read_text())["figures"]
    assert figures["subscribed + celery commands/s (median)"] > 0
    assert figures["dispatch off commands/s (median)"] > 0
    assert figures["events caught up"] == 2000
    assert figures["subscription catch-up events/s (median, target >= 15000)"] > 0
    assert figures["handler subscription hand-over events/s (from zero)"] > 0
    assert figures["inline commit->handler ms (median)"] > 0
    assert figures["celery commit->handler ms (median)"] > 0
    if shutil.which("valgrind"):
        assert figures["request thread: celery / off (instructions)"] > 0
