"""The example project's Celery app: event handlers and async projections run here.

Start a worker (and, for the periodic relay and catch-up, beat) with::

    FLUVIUS_DISPATCH=celery celery -A example_project worker -l info
    FLUVIUS_DISPATCH=celery celery -A example_project beat -l info

Settings prefixed ``CELERY_`` in settings.py configure it (broker URL ...).
``django_fluvius`` is an installed app, so its tasks (``fluvius.deliver``,
``fluvius.project``, ``fluvius.relay``, ``fluvius.catch_up_all``) are found by
``autodiscover_tasks()``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
