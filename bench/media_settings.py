"""Settings of the media benchmark's server: the bench settings, uploads to a LocalStorage
root the benchmark chose, and a size limit above the benchmark's file."""

import os

from bench.settings import *  # noqa: F403
from bench.settings import FLUVIUS

FLUVIUS = {
    **FLUVIUS,
    "MEDIA_STORAGE": {"strategy": "local", "path": os.environ["BENCH_MEDIA_ROOT"]},
    "MEDIA_MAX_SIZE": int(os.environ.get("BENCH_MEDIA_MAX_SIZE", str(200 * 1024 * 1024))),
}
