"""Settings of the ``fluvius_relay --loop`` processes of tests/test_relay_processes.py.

The worker settings (the test database named in the environment), delivering inline
in the relay process itself, small batches (many leases taken and given up) and the
handlers of tests/relay_handlers.py.
"""

import os

from tests.worker_settings import *  # noqa: F403
from tests.worker_settings import FLUVIUS

os.environ["FLUVIUS_TEST_INSTALL_HANDLERS"] = "0"
os.environ["FLUVIUS_TEST_RELAY_HANDLERS"] = "1"

FLUVIUS = {
    **FLUVIUS,
    "DISPATCH": "inline",
    "HANDLERS": [*FLUVIUS["HANDLERS"], "tests.relay_handlers"],
    "RELAY_BATCH_SIZE": 5,
    "RELAY_POLL": 0.5,
}
