"""The REST face of django-fluvius, over Django REST framework.

``DomainRouter`` registers domains; ``CommandViewSet``, ``ResourceViewSet`` and
``MetaView`` serve them (subclass them to change permissions, authentication,
throttling, pagination); ``exception_handler`` gives every error one JSON shape.
Names load lazily, so importing the package does not need Django set up.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_PUBLIC = {
    "DomainRouter": "router",
    "CommandViewSet": "views",
    "ResourceViewSet": "views",
    "MetaView": "views",
    "exception_handler": "errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'django_fluvius.rest' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
