"""The databases the event store runs on, and the checks that say so (docs/databases.md).

The drivers are Django's own database backends. The event store needs from them
what the feed (feed.py) and the hot SQL (sql.py) are written for; a backend is
recognised by its ``vendor``, so wrappers of these backends (PostGIS, metrics
wrappers) count as the one they wrap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.db import connections

from django_fluvius.conf import fluvius_settings


@dataclass(frozen=True)
class Supported:
    label: str
    # The lowest server version supported (None: whatever Django accepts), and why.
    minimum: tuple[int, ...] | None = None
    why: str = ""


# vendor -> what is supported of it. MariaDB and MySQL share Django's "mysql" vendor and
# differ in the minimum (MARIADB below).
SUPPORTED: dict[str, Supported] = {
    "postgresql": Supported("PostgreSQL"),
    "sqlite": Supported("SQLite"),
    "mysql": Supported("MySQL", (8, 0, 11), "Django's own minimum: JSON columns, expression defaults"),
}
MARIADB = Supported("MariaDB", (10, 6), "INSERT ... RETURNING and SELECT ... FOR UPDATE SKIP LOCKED")

# ENGINE -> vendor for backends whose module may not import here (no driver installed).
KNOWN_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.sqlite3": "sqlite",
    "django.db.backends.mysql": "mysql",
    "django.db.backends.oracle": "oracle",
}


def supported_names() -> str:
    return "PostgreSQL, SQLite, MariaDB >= {} and MySQL >= {}".format(
        ".".join(map(str, MARIADB.minimum or ())), ".".join(map(str, SUPPORTED["mysql"].minimum or ())))


# Errors that say the database rolled the whole transaction back to break a deadlock:
# running it again is the remedy (InnoDB's docs: "try restarting transaction").
# MySQL / MariaDB error numbers, PostgreSQL SQLSTATEs.
DEADLOCK_ERRNOS = frozenset({1213})  # ER_LOCK_DEADLOCK
DEADLOCK_SQLSTATES = frozenset({"40P01"})  # deadlock_detected


def is_deadlock(error: BaseException) -> bool:
    """Did the database end this transaction to break a deadlock (Django's wrapper or the driver's error)?"""
    cause = error.__cause__ or error
    if getattr(cause, "sqlstate", None) in DEADLOCK_SQLSTATES:
        return True
    code = next(iter(getattr(cause, "args", ())), None)  # MySQLdb: (errno, message)
    return isinstance(code, int) and code in DEADLOCK_ERRNOS


def _aliases() -> list[str]:
    """The event store's database, and the read database when one is set."""
    aliases = [fluvius_settings.DATABASE]
    read = getattr(fluvius_settings, "READ_DATABASE", None)
    if read and read not in aliases:
        aliases.append(read)
    return [alias for alias in aliases if alias in settings.DATABASES]


def vendor_of(alias: str) -> str:
    engine = settings.DATABASES[alias].get("ENGINE", "")
    try:
        return connections[alias].vendor
    except Exception:  # noqa: BLE001 - a backend whose driver is missing: go by its name
        return KNOWN_ENGINES.get(engine, engine.rsplit(".", 1)[-1])


def check_database_backends(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """fluvius.E100: the event store's (or read) database is a backend django-fluvius does not support."""
    errors: list[checks.CheckMessage] = []
    for alias in _aliases():
        vendor = vendor_of(alias)
        if vendor not in SUPPORTED:
            engine = settings.DATABASES[alias].get("ENGINE", "")
            errors.append(checks.Error(
                f"DATABASES[{alias!r}] uses {engine} (vendor {vendor!r}): the event store does not support it.",
                hint=f"Supported databases: {supported_names()} (docs/databases.md).",
                id="fluvius.E100",
            ))
    return errors


def server_requirement(connection: Any) -> tuple[Supported, tuple[int, ...] | None]:
    """What the connected server must be, and what it is (None when nothing is required)."""
    if connection.vendor != "mysql":
        return SUPPORTED.get(connection.vendor, Supported(connection.vendor)), None
    required = MARIADB if connection.mysql_is_mariadb else SUPPORTED["mysql"]
    return required, tuple(connection.mysql_version)


FEED_CLOCK = "django_fluvius_feedclock"
FEED_TICK_TRIGGER = "django_fluvius_event_feed_tick"  # both made by migration 0008 (feed.py)


def check_feed_clock(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """fluvius.E102: on MariaDB / MySQL the feed clock is there but its trigger is not.

    Without the trigger new events keep ``txid`` 0 and sort before older ones: async
    projections and handlers would miss them. It goes missing when a database is copied
    without triggers (``mysqldump --skip-triggers``) or re-created by hand.
    """
    errors: list[checks.CheckMessage] = []
    alias = fluvius_settings.DATABASE
    if alias not in settings.DATABASES or databases is None or alias not in databases:
        return errors  # only with --database, as Django's own database checks
    if vendor_of(alias) != "mysql":
        return errors
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                       " AND TABLE_NAME = %s", [FEED_CLOCK])
        if not cursor.fetchone()[0]:
            return errors  # not migrated yet: Django's own warning says so
        cursor.execute("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE()"
                       " AND TRIGGER_NAME = %s", [FEED_TICK_TRIGGER])
        if cursor.fetchone()[0]:
            return errors
    errors.append(checks.Error(
        f"DATABASES[{alias!r}] has the feed clock table but not its trigger {FEED_TICK_TRIGGER!r}: new "
        "events would sort before older ones and async projections and handlers would miss them.",
        hint="Recreate it: migrate django_fluvius back to the migration before 'mysql_feed_clock', then "
             "forward again (docs/databases.md); copy databases with their triggers.",
        id="fluvius.E102",
    ))
    return errors


def check_database_versions(app_configs: Any = None, databases: Any = None,
                            **kwargs: Any) -> list[checks.CheckMessage]:
    """fluvius.E101: the MariaDB / MySQL server is older than the minimum supported (asks the server)."""
    errors: list[checks.CheckMessage] = []
    for alias in _aliases():
        if databases is None or alias not in databases:
            continue  # as Django's database checks: only with --database (manage.py check, migrate)
        if vendor_of(alias) != "mysql":
            continue
        required, version = server_requirement(connections[alias])
        if required.minimum is not None and version is not None and version < required.minimum:
            errors.append(checks.Error(
                f"DATABASES[{alias!r}] is {required.label} {'.'.join(map(str, version))}: the event store "
                f"needs {required.label} >= {'.'.join(map(str, required.minimum))} ({required.why}).",
                hint="Upgrade the database server.",
                id="fluvius.E101",
            ))
    return errors
