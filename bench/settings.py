"""Settings for benchmarks: the test settings (example project + test app) on the
database bench.common chose through DATABASE_URL."""

from tests.settings import *  # noqa: F403

DEBUG = False  # Django keeps every query in memory when DEBUG is on
LOGGING = {"version": 1, "disable_existing_loggers": False}
