"""System checks fluvius.E100 (a database backend not supported) and E101 (a MariaDB / MySQL too old)."""

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.db import connection, connections
from django.test import override_settings

from django_fluvius.events.databases import check_database_backends, check_database_versions
from tests.dispatch_support import fluvius


def test_an_oracle_event_store_is_refused_naming_the_supported_databases(monkeypatch):
    monkeypatch.setitem(settings.DATABASES, "legacy", {"ENGINE": "django.db.backends.oracle", "NAME": "xe"})
    with override_settings(FLUVIUS=fluvius(DATABASE="legacy")):
        errors = check_database_backends()
    assert [e.id for e in errors] == ["fluvius.E100"]
    assert "django.db.backends.oracle" in errors[0].msg and "'legacy'" in errors[0].msg
    for name in ("PostgreSQL", "SQLite", "MariaDB >= 10.6", "MySQL >= 8.0.11"):
        assert name in errors[0].hint


def test_an_unsupported_read_database_is_refused_too(monkeypatch):
    monkeypatch.setitem(settings.DATABASES, "warehouse", {"ENGINE": "mssql", "NAME": "dw"})
    with override_settings(FLUVIUS=fluvius(READ_DATABASE="warehouse")):
        errors = check_database_backends()
    assert [e.id for e in errors] == ["fluvius.E100"] and "'warehouse'" in errors[0].msg


def test_the_database_of_this_run_is_supported():
    assert check_database_backends() == []


@pytest.mark.django_db
def test_the_server_of_this_run_is_new_enough():
    assert check_database_versions(databases=["default"]) == []
    call_command("check", databases=["default"], fail_level="ERROR")


@pytest.mark.mysql
@pytest.mark.django_db
@pytest.mark.parametrize("mariadb, version, minimum", [(True, (10, 5, 27), "10.6"), (False, (5, 7, 44), "8.0.11")])
def test_a_mariadb_or_mysql_below_the_minimum_is_an_error(monkeypatch, mariadb, version, minimum):
    # The real connection, told it reached an older server (Django caches both on the connection).
    wrapper = connections["default"]  # not the `connection` proxy: the object the check reads
    wrapper.ensure_connection()
    monkeypatch.setitem(wrapper.__dict__, "mysql_is_mariadb", mariadb)
    monkeypatch.setitem(wrapper.__dict__, "mysql_version", version)
    errors = check_database_versions(databases=["default"])
    assert [e.id for e in errors] == ["fluvius.E101"]
    assert f">= {minimum}" in errors[0].msg and ".".join(map(str, version)) in errors[0].msg
    with pytest.raises(SystemCheckError, match="fluvius.E101"):
        call_command("check", databases=["default"])


@pytest.mark.mysql
@pytest.mark.django_db
def test_the_mariadb_here_is_read_from_the_server():
    with connection.cursor() as cursor:
        cursor.execute("SELECT VERSION()")
        reported = cursor.fetchone()[0]
    assert "MariaDB" in reported and connection.mysql_is_mariadb
    assert reported.startswith(".".join(map(str, connection.mysql_version)))


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_a_missing_feed_clock_trigger_is_an_error_and_migrating_again_restores_it():
    from django.db.migrations.loader import MigrationLoader

    from django_fluvius.events.databases import FEED_TICK_TRIGGER, check_feed_clock

    assert check_feed_clock(databases=["default"]) == []
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER {FEED_TICK_TRIGGER}")  # a copy made with --skip-triggers
    errors = check_feed_clock(databases=["default"])
    assert [e.id for e in errors] == ["fluvius.E102"] and FEED_TICK_TRIGGER in errors[0].msg
    # The hint's remedy: back to the migration before the clock's, then forward.
    graph = MigrationLoader(connection).graph
    clock = next(key for key in graph.leaf_nodes() + list(graph.nodes)
                 if key[0] == "django_fluvius" and key[1].endswith("mysql_feed_clock"))
    before = next(parent for parent in graph.node_map[clock].parents if parent.key[0] == "django_fluvius").key
    call_command("migrate", "django_fluvius", before[1], verbosity=0)
    call_command("migrate", "django_fluvius", verbosity=0)
    assert check_feed_clock(databases=["default"]) == []
