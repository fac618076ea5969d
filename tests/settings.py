"""Test settings: the example project plus a test app with domains made for the tests."""

import os
import sys
from pathlib import Path

import dj_database_url

from example_project.settings import *  # noqa: F403
from example_project.settings import (
    DATA_DIR,
    DATABASES,
    FLUVIUS,
    INSTALLED_APPS,
    database_from_env_url,
)

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


def _reachable(url: str) -> bool:
    """Is the database server of ``url`` listening, and its driver installed? (Asked once, quickly.)"""
    import socket
    from importlib.util import find_spec
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    driver = {"postgres": "psycopg", "mysql": "MySQLdb"}[parts.scheme]
    if find_spec(driver) is None:
        return False
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=0.5).close()
    except OSError:
        return False
    return True


# The shared store suite (tests/test_store_backends.py): the same store tests on each
# database in one run, whatever DATABASE_URL says. A server that is not running (or whose
# driver is missing) leaves its alias out and its tests skip, saying so.
STORE_DATABASE_URLS = {
    "store_postgresql": os.environ.get("FLUVIUS_STORE_POSTGRES_URL", "postgres://127.0.0.1:5432/test"),
    "store_mariadb": os.environ.get("FLUVIUS_STORE_MARIADB_URL", "mysql://root@127.0.0.1:3306/test"),
}
_store_name = os.environ.get("FLUVIUS_TEST_DB_NAME", "default")
DATABASES["store_sqlite"] = {
    **dj_database_url.parse(f"sqlite:///{DATA_DIR / 'store.sqlite3'}"),
    "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
    "TEST": {"NAME": str(DATA_DIR / f"test-{_store_name}-store.sqlite3"), "DEPENDENCIES": []},
}
for _alias, _url in STORE_DATABASE_URLS.items():
    if _reachable(_url):
        _config = database_from_env_url(_url)
        _config["TEST"] = {**_config.get("TEST", {}), "NAME": f"test_{_store_name}_store", "DEPENDENCIES": []}
        DATABASES[_alias] = _config
