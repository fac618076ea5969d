"""Test settings: the example project plus a test app with domains made for the tests."""

import os
import sys
from pathlib import Path

from example_project.settings import *  # noqa: F403
from example_project.settings import DATA_DIR, DATABASES, FLUVIUS, INSTALLED_APPS

# The documentation's sample app, importable as `myapp` like in the docs (tests/test_docs.py).
sys.path.insert(0, str(Path(__file__).resolve().parent / "docs_project"))

INSTALLED_APPS = [*INSTALLED_APPS, "tests.testapp", "myapp"]

FLUVIUS = {
    **FLUVIUS,
    "DOMAINS": [*FLUVIUS["DOMAINS"], "tests.testapp.domain.NoteDomain"],
    "DISPATCH": "inline",
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory: threads and worker processes must see the same database.
    DATABASES["default"].setdefault("TEST", {}).setdefault(
        "NAME", str(DATA_DIR / f"test-{os.environ.get('FLUVIUS_TEST_DB_NAME', 'default')}.sqlite3")
    )

# A second alias on the same database, standing in for a read replica: tests turn on
# FLUVIUS['READ_DATABASE'] = "replica" and see the read side's queries go there.
DATABASES["replica"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
DATABASE_ROUTERS = ["django_fluvius.read.replicas.ReadReplicaRouter"]

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
