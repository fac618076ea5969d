"""Settings of the Celery worker processes the dispatch tests start.

The test process passes, in the environment, the name of the test database it
created (``FLUVIUS_WORKER_DB_NAME``: the SQLite file or the PostgreSQL
database), so the worker reads and writes the very same database.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, FLUVIUS

DATABASES["default"]["NAME"] = os.environ["FLUVIUS_WORKER_DB_NAME"]
if os.environ.get("FLUVIUS_TEST_CONN_MAX_AGE"):
    # Celery's Django fixup closes a worker's connections after every task unless CONN_MAX_AGE
    # keeps them (docs/handlers.md): bench.delivery's latency run configures it as the docs do.
    DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ["FLUVIUS_TEST_CONN_MAX_AGE"])
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

os.environ.setdefault("FLUVIUS_TEST_INSTALL_HANDLERS", "1")

FLUVIUS = {
    **FLUVIUS,
    "DISPATCH": "celery",
    "HANDLERS": [*FLUVIUS.get("HANDLERS", []), "tests.dispatch_handlers",
                 *filter(None, os.environ.get("FLUVIUS_TEST_EXTRA_HANDLERS", "").split(","))],
    # Short waits, so the fault tests take seconds.
    "RETRY_BACKOFF": 0.2,
    "RETRY_JITTER": False,
    "ORDERED_WAIT": 0.2,
    "RELAY": "sync",
    # The worker's own relay polls often; what is handed over and not settled in 30 s is handed
    # over again (the broker-loss test sets 2 s: it flushes the broker).
    "RELAY_POLL": float(os.environ.get("FLUVIUS_TEST_RELAY_POLL", "0.3")),
    "REDELIVER_AFTER": float(os.environ.get("FLUVIUS_TEST_REDELIVER_AFTER", "30.0")),
    # The test run's own queue (tests/dispatch_support.py).
    "CELERY_QUEUE": os.environ.get("FLUVIUS_TEST_QUEUE") or None,
}

CELERY_BROKER_URL = os.environ.get("FLUVIUS_TEST_BROKER", "redis://127.0.0.1:6379/5")
# A message held by a worker that died is given to another one after this long.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 4, "unacked_restore_interval": 1,
                                   "unacked_restore_throttle": 1}
CELERY_WORKER_PREFETCH_MULTIPLIER = 1

# The welcome email goes to files the test can read.
EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
EMAIL_FILE_PATH = os.path.join(os.environ.get("FLUVIUS_TEST_SCRATCH", "/tmp"), "mail")
