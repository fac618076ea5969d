"""The WSGI application ``bench.rest_create --concurrency`` serves with gunicorn.

The command endpoint and the plain ``ModelViewSet`` of ``bench.rest_create``, on
the database named by ``DATABASE_URL``, with persistent database connections and
the example's handlers unregistered (as in the in-process mode).
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.db import connections  # noqa: E402
from django.urls import clear_url_caches  # noqa: E402

from bench.rest_create import build_urlconf, without_handlers  # noqa: E402

without_handlers()
settings.ROOT_URLCONF = build_urlconf()
clear_url_caches()
connections["default"].settings_dict["CONN_MAX_AGE"] = 600
application = WSGIHandler()
