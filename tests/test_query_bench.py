"""bench.query keeps working: a --quick smoke run on SQLite in a process of its own."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "bench" / "results" / "query.json"


def test_query_benchmark_quick_run():
    # The smoke run must not replace the figures of a real run.
    saved = RESULT.read_bytes() if RESULT.exists() else None
    try:
        done = subprocess.run([sys.executable, "-m", "bench.query", "--quick", "--sqlite"], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    finally:
        if saved is not None:
            RESULT.write_bytes(saved)
        elif RESULT.exists():
            RESULT.unlink()
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in ("QueryBuilder / QuerySet", "cursor deep / first page", "offset deep / first page"):
        assert figure in done.stdout
