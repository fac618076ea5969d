"""Settings of the uvicorn processes of tests/test_stream_live.py: the test settings, the stream
URLs (tests/stream_urls.py), the database the test names in DATABASE_URL (its own test
database). ``FLUVIUS_TEST_TENANCY=1`` turns tenancy on (every domain tenant-scoped), as the
tenancy tests do."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import FLUVIUS

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "tests.stream_urls"
FLUVIUS = {
    **FLUVIUS,
    "DOMAINS": [*FLUVIUS["DOMAINS"], "tests.testapp.tickets.TicketDomain", "tests.testapp.activity.ActivityDomain"],
    "TENANCY": ({"USER_TENANT": None, "USER_TENANTS": "tests.testapp.tickets.user_tenants", "HEADER": "X-Tenant-ID"}
                if os.environ.get("FLUVIUS_TEST_TENANCY") == "1" else None),
    # Heartbeats and polls short enough for a test to see them.
    "STREAM_HEARTBEAT": 1.0,
}
