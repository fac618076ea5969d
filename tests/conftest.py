import pytest
from django.db import connection

# marker -> (database engines it runs on, why it is skipped elsewhere)
DATABASE_MARKERS = {
    "postgres": ({"postgresql"}, "needs PostgreSQL: run with DATABASE_URL=postgres://127.0.0.1:5432/test"),
    "mysql": ({"mysql"}, "needs MariaDB/MySQL: run with DATABASE_URL=mysql://root@127.0.0.1:3306/test"),
    "server_database": ({"postgresql", "mysql"},
                        "needs concurrent writers: run on PostgreSQL or MariaDB (DATABASE_URL)"),
}


def pytest_collection_modifyitems(config, items):
    """Tests marked for a database (``postgres``, ``mysql``, ``server_database``) skip elsewhere, saying why."""
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    for marker, (engines, reason) in DATABASE_MARKERS.items():
        if engine in engines:
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def is_postgres():
    return connection.vendor == "postgresql"


@pytest.fixture
def close_async_connections():
    """Close the connection that async code opened on asgiref's worker thread.

    ``sync_to_async`` runs ORM calls on a thread of its own; its connection
    would otherwise outlive the test and block dropping the test database.
    """
    yield
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session", autouse=True)
def _database_features_known(django_db_setup, django_db_blocker):
    """Ask each database once whether it supports JSON fields.

    Django 6 runs model checks against every alias, and JSONField's check asks the
    database (once per connection). Asked here, ``manage.py check`` in a test without
    database access reads the cached answer, on Django 5.2 and 6.x alike.
    """
    from django.db import connections

    with django_db_blocker.unblock():
        for connection in connections.all():
            connection.features.supports_json_field  # noqa: B018 - cached on the connection
    yield
    # The relay thread's connections go before the test databases are dropped.
    from django_fluvius.delivery.dispatch import relay

    relay.close_connections(10)


@pytest.fixture
def strict_query(settings):
    """FLUVIUS['STRICT_QUERY_PARAMS'] on: a parameter that is no filter is a 400."""
    settings.FLUVIUS = {**settings.FLUVIUS, "STRICT_QUERY_PARAMS": True}
