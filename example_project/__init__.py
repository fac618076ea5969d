"""The example project; its Celery app is loaded with it so @shared_task uses it."""

from .celery import app as celery_app

__all__ = ["celery_app"]
