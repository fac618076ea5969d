"""Settings of the example project (also the base of the test settings).

``DATABASE_URL`` chooses the database: SQLite in ``.data/`` by default,
``postgres://127.0.0.1:5432/test`` for PostgreSQL, ``mysql://root@127.0.0.1:3306/test``
for MariaDB / MySQL (the ``[mysql]`` extra).
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FLUVIUS_DATA_DIR", BASE_DIR / ".data"))
DATA_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-for-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver",
                 *filter(None, os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(","))]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    # Swagger UI and ReDoc from the project's static files: the docs pages work offline.
    "drf_spectacular_sidecar",
    "django_fluvius",
    "example_project.users",
    "example_project.orders",
    "example_project.scenario",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request's DomainContext (user, tenant, correlation id): django_fluvius/middleware.py.
    "django_fluvius.middleware.DomainContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "example_project.wsgi.application"


def database_from_env() -> dict:
    return database_from_env_url(os.environ.get("DATABASE_URL") or f"sqlite:///{DATA_DIR / 'example.sqlite3'}")


def database_from_env_url(url: str) -> dict:
    # Seconds a connection is kept between requests (0: one per request); checked before reuse.
    config = dj_database_url.parse(url, conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", 0)),
                                   conn_health_checks=True)
    if config["ENGINE"] == "django.db.backends.postgresql":
        # Bind parameters on the server and prepare statements a connection runs
        # repeatedly (the command bus runs the same few): the PostgreSQL planner
        # then skips parsing and planning them. Off behind PgBouncer in transaction
        # mode (DATABASE_PGBOUNCER=1), where the next transaction may get another
        # server connection that never saw the prepared statement.
        if os.environ.get("DATABASE_PGBOUNCER") == "1":
            config["OPTIONS"] = {"prepare_threshold": None}
            config["DISABLE_SERVER_SIDE_CURSORS"] = True
        else:
            config["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Writers queue for the lock instead of failing with "database is locked".
        config["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE"}
    if config["ENGINE"] == "django.db.backends.mysql":
        # MariaDB / MySQL: four-byte UTF-8 (emoji in payloads), strict mode (a too-long value
        # is an error, not silently cut), READ COMMITTED like PostgreSQL (Django's default
        # too, spelled out: the feed and the bus's retries are written for it).
        config["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed",
                             "init_command": "SET sql_mode = CONCAT(@@sql_mode, ',STRICT_TRANS_TABLES')"}
    test_name = os.environ.get("FLUVIUS_TEST_DB_NAME")
    if test_name and config["ENGINE"] != "django.db.backends.sqlite3":
        # Lets several test runs share one PostgreSQL server without clashing.
        config["TEST"] = {"NAME": f"test_{test_name}"}
    if config["ENGINE"] == "django.db.backends.mysql":
        config.setdefault("TEST", {}).update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"})
    return config


DATABASES = {"default": database_from_env()}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MariaDB has no partial indexes: the pending-receipts index is created whole, which
    # serves the same queries (docs/databases.md). Django warns (models.W037) about it.
    SILENCED_SYSTEM_CHECKS = ["models.W037"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
MEDIA_ROOT = DATA_DIR / "media"

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
if os.environ.get("EMAIL_FILE_PATH"):
    # Where the file-based backend writes (EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend).
    EMAIL_FILE_PATH = os.environ["EMAIL_FILE_PATH"]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every DRF view of the project answers errors in django-fluvius's JSON shape.
    "EXCEPTION_HANDLER": "django_fluvius.rest.errors.exception_handler",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "django-fluvius example project",
    "DESCRIPTION": "Commands and resources of the users and orders domains.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

FLUVIUS = {
    "DOMAINS": [
        "example_project.users.domain.UserDomain",
        "example_project.orders.domain.OrderDomain",
    ],
    "DISPATCH": os.environ.get("FLUVIUS_DISPATCH", "inline"),
}

# Celery (example_project/celery.py): event handlers and async projections in
# workers when FLUVIUS_DISPATCH=celery.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Fluvius tasks acknowledge late: one message in hand per worker process.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis: seconds before a message a dead worker held goes to another worker.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": int(os.environ.get("CELERY_VISIBILITY_TIMEOUT", 3600))}
CELERY_BEAT_SCHEDULE = {
    # Optional: a relay round from beat (the workers' own relays LISTEN and poll already).
    "fluvius-relay": {"task": "fluvius.relay", "schedule": 10.0},
    # Async projections catch up even when no commit woke them.
    "fluvius-catch-up": {"task": "fluvius.catch_up_all", "schedule": 30.0},
    # Staged uploads a killed worker left behind (FLUVIUS['MEDIA_STAGE_MAX_AGE']).
    "fluvius-sweep-uploads": {"task": "fluvius.sweep_uploads", "schedule": 600.0},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    # One stream (stderr) per process; the supervisor (journald, the platform) collects it.
    "loggers": {"django_fluvius": {"handlers": ["console"], "level": os.environ.get("FLUVIUS_LOG_LEVEL", "WARNING")}},
}
