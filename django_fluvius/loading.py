"""Loading ``FLUVIUS['DOMAINS']`` into the registry at start-up.

Problems are collected rather than raised, so ``manage.py check`` can report all
of them with their ids (see ``checks.py``) instead of the first one crashing
start-up.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import fluvius_settings
from .registry import domains

# (check id, message, hint) for each problem met while loading.
load_problems: list[tuple[str, str, str]] = []


def load_domains() -> None:
    from .domain import Domain, register  # the loader sits above domain in the layering

    load_problems.clear()
    for path in fluvius_settings.DOMAINS:
        try:
            domain_class = import_string(path) if isinstance(path, str) else path
        except ImportError as exc:
            load_problems.append(("fluvius.E001", f"FLUVIUS['DOMAINS'] entry {path!r} cannot be imported: {exc}",
                                  "Check the dotted path."))
            continue
        if not (isinstance(domain_class, type) and issubclass(domain_class, Domain)):
            load_problems.append(("fluvius.E005", f"FLUVIUS['DOMAINS'] entry {path!r} is not a Domain subclass.",
                                  "List classes that subclass django_fluvius.Domain."))
            continue
        missing = [attr for attr in ("__aggregate__", "__namespace__") if not getattr(domain_class, attr, None)]
        if missing:
            load_problems.append(("fluvius.E005", f"Domain {path!r} does not set {', '.join(missing)}.",
                                  "Every domain needs an aggregate class and a namespace."))
            continue
        try:
            register(domain_class)
        except ImproperlyConfigured as exc:
            load_problems.append(("fluvius.E002", str(exc), "Give each domain its own __namespace__."))


def load_handler_modules() -> None:
    from importlib import import_module

    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("handlers")
    for path in fluvius_settings.HANDLERS:
        try:
            import_module(path)
        except ImportError as exc:
            load_problems.append(("fluvius.E006", f"FLUVIUS['HANDLERS'] module {path!r} cannot be imported: {exc}",
                                  "Check the dotted path."))


def reload() -> None:
    """Load again from the current settings (for tests that override FLUVIUS['DOMAINS'])."""
    domains.clear()
    load_domains()


__all__ = ["load_domains", "load_handler_modules", "load_problems", "reload", "ImproperlyConfigured"]
