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
        load_domains()
        load_handler_modules()
        autodiscover_upcasters()
