from django.apps import AppConfig


class FluviusConfig(AppConfig):
    name = "django_fluvius"
    label = "django_fluvius"
    verbose_name = "Fluvius event store"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import register_checks
        from .loading import load_domains, load_handler_modules
        from .upcasting import autodiscover as autodiscover_upcasters

        register_checks()
        # The run_<command> permission of every command (permissions.py), made after migrate.
        from django.db.models.signals import post_migrate

        from .permissions import create_command_permissions

        post_migrate.connect(create_command_permissions, dispatch_uid="fluvius_command_permissions")
        load_domains()
        load_handler_modules()
        autodiscover_upcasters()
