"""Loading ``FLUVIUS['DOMAINS']`` into the registry at start-up, then handlers and projections.

``load_domains()`` registers each listed domain; ``load_handler_modules()`` imports
every installed app's ``handlers.py`` and ``projections.py`` (like ``admin.py``) and
the entries of ``FLUVIUS['HANDLERS']``/``['PROJECTIONS']``.

Invariant: problems are collected rather than raised (``load_problems``), so
``manage.py check`` reports all of them with their ids (``checks.py``) instead of
the first one crashing start-up. Called from ``AppConfig.ready()``, after the app
registry is ready, so importing the domain (and with it the models) is safe here.
"""

from __future__ import annotations

from importlib import import_module

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules, import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.domain import Domain, register
from django_fluvius.registry import domains

# (check id, message, hint) for each problem met while loading.
load_problems: list[tuple[str, str, str]] = []


def load_domains() -> None:
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
    # handlers.py and projections.py of every installed app, like admin.py.
    autodiscover_modules("handlers", "projections")
    for path in fluvius_settings.HANDLERS:
        _load_entry("HANDLERS", path, "fluvius.E006", lambda obj: hasattr(obj, "handler_spec"),
                    "a module or an @event_handler function")
    for path in fluvius_settings.PROJECTIONS:
        _load_entry("PROJECTIONS", path, "fluvius.E047", lambda obj: hasattr(obj, "catch_up"),
                    "a module or an AsyncProjection class")


def _load_entry(setting: str, path: str, check_id: str, accepts, expected: str) -> None:
    """Import a FLUVIUS[setting] entry: a module, or a dotted path to an object in one."""
    try:
        import_module(path)
        return
    except ModuleNotFoundError as exc:
        if exc.name != path or "." not in path:
            load_problems.append((check_id, f"FLUVIUS[{setting!r}] entry {path!r} cannot be imported: {exc}",
                                  "Check the dotted path."))
            return
    except Exception as exc:  # noqa: BLE001 - a broken module: report it, don't crash start-up
        load_problems.append((check_id, f"FLUVIUS[{setting!r}] entry {path!r} cannot be imported: "
                                        f"{type(exc).__name__}: {exc}", "Fix the module."))
        return
    try:
        obj = import_string(path)
    except Exception as exc:  # noqa: BLE001
        load_problems.append((check_id, f"FLUVIUS[{setting!r}] entry {path!r} cannot be imported: "
                                        f"{type(exc).__name__}: {exc}", "Check the dotted path."))
        return
    if not accepts(obj):
        load_problems.append(("fluvius.E040", f"FLUVIUS[{setting!r}] entry {path!r} is not {expected}.",
                              f"List only {expected.replace('a module or ', 'modules or ')}s in "
                              f"FLUVIUS[{setting!r}]."))


def reload() -> None:
    """Load again from the current settings (for tests that override FLUVIUS['DOMAINS'])."""
    domains.clear()
    load_domains()

