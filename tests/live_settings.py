"""Settings of the gunicorn processes of test_live_gunicorn.py: the example project (its URLs:
commands need a signed-in user, orders take media), uploads to a LocalStorage root the test
chose, the database the test names in DATABASE_URL."""

import os

from example_project.settings import *  # noqa: F403
from example_project.settings import FLUVIUS

DEBUG = False
FLUVIUS = {
    **FLUVIUS,
    "MEDIA_STORAGE": {"strategy": "local", "path": os.environ["LIVE_MEDIA_ROOT"]},
    "MEDIA_MAX_SIZE": 64 * 1024 * 1024,
}
# The test process makes the users: the same (fast) hasher must read their passwords.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
