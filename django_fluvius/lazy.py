"""Lazily loaded public names for the package's facades (PEP 562).

``django_fluvius``, ``django_fluvius.rest``, ``.media`` and ``.testing`` each
offer names that live in deeper modules. Importing those modules eagerly would
import Django models, which fails while ``INSTALLED_APPS`` is being read (and
in a ``settings.py`` that names a media strategy, or a pytest plugin loaded
before Django is set up). ``lazy_names`` gives a facade a module ``__getattr__``
that imports a name's module on first access and caches the value in the
facade's namespace, so later lookups cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_names(package: str, namespace: dict[str, Any],
               public: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``; ``public`` maps a name to its module, relative
    to ``package`` (``"write.aggregate"``)."""

    def __getattr__(name: str) -> Any:
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
