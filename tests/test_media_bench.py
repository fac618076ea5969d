"""The media upload benchmark keeps working: a --quick run (a real gunicorn server, a 4 MiB
upload) finishes and reports its figures. Speed itself is judged by the full run, not here."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_media_upload_benchmark_quick_run():
    result = subprocess.run(
        [sys.executable, "-m", "bench.media_upload", "--quick", "--sqlite"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    figures = json.loads((ROOT / "bench" / "results" / "media_upload.json").read_text())["figures"]
    assert figures["file size (MiB)"] == 4
    assert figures["upload through the endpoint (s, median)"] > 0
    assert figures["storage API copy (s, median)"] > 0
    # A sanity bound only: the parser test in test_media_rest.py proves the streaming.
    assert figures["server peak above idle, MiB (median; target < 64)"] < 64
