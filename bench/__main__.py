"""``python -m bench``: run every benchmark and write the report (see bench/run_all.py)."""

import sys

from bench.run_all import main

sys.exit(1 if main().get("failed") else 0)
