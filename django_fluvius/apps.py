"""The app's start-up: system checks, the run_<command> permissions, domains, handlers, upcasters.

Django imports this module while it reads ``INSTALLED_APPS``, before any model can
be defined: everything that imports models is imported inside ``ready()``.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class FluviusConfig(AppConfig):
    name = "django_fluvius"
    label = "django_fluvius"
    verbose_name = "Fluvius event store"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connects delivery to the bus's events_appending signal (a wake-up after every commit).
        import django_fluvius.delivery.dispatch  # noqa: F401
        from django_fluvius.checks import register_checks
        from django_fluvius.events.upcasting import autodiscover as autodiscover_upcasters
        from django_fluvius.loading import load_domains, load_handler_modules
        from django_fluvius.security.permissions import create_command_permissions

        register_checks()
        # The run_<command> permission of every command (security/permissions.py), made after migrate.
        post_migrate.connect(create_command_permissions, dispatch_uid="fluvius_command_permissions")
        load_domains()
        load_handler_modules()
        autodiscover_upcasters()
        sweep_upload_stages()

    def handler_starts(self) -> dict[str, object]:
        """Every declared event handler's name and ``start`` (migration 0004 drains the outbox with it)."""
        from django_fluvius.delivery.handlers import handlers

        return {spec.name: spec.start for spec in handlers}


def sweep_upload_stages() -> None:
    """At start: remove the staged uploads of processes that died mid-upload (a worker
    replaced after SIGKILL or a timeout sweeps its predecessor's). Never fails a start."""
    import logging

    from django_fluvius.media.storage import sweep_stages

    try:
        removed = sweep_stages()
    except Exception:  # noqa: BLE001 - a misconfigured storage is reported by fluvius.E060
        logging.getLogger("django_fluvius.media").debug("Could not sweep staged uploads.", exc_info=True)
        return
    if removed:
        logging.getLogger("django_fluvius.media").warning(
            "Removed %d staged upload(s) left by dead processes or unwritten for too long.", len(removed))
