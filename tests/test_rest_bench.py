"""The REST create benchmark keeps working: a --quick run finishes with its figures.
Speed itself is judged by the full run (bench/rest_create.py), not here."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_rest_create_benchmark_quick_run():
    result = subprocess.run(
        [sys.executable, "-m", "bench.rest_create", "--quick", "--sqlite"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((ROOT / "bench" / "results" / "rest_create.json").read_text())["figures"]
    assert figures["command endpoint ms/request (median)"] > 0
    assert figures["plain ModelViewSet create ms/request (median)"] > 0
    assert figures["command / plain (target <= 1.5)"] > 0
