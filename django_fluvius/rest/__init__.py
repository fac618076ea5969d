"""The REST face of django-fluvius, over Django REST framework.

``DomainRouter`` registers domains; ``CommandViewSet``, ``ResourceViewSet`` and
``MetaView`` serve them (subclass them to change permissions, authentication,
throttling, pagination); ``exception_handler`` gives every error one JSON shape.
Names load lazily, so importing the package does not need Django set up.
"""

from __future__ import annotations

from django_fluvius.lazy import lazy_names

_PUBLIC = {
    "DomainRouter": "router",
    "CommandViewSet": "views",
    "ResourceViewSet": "views",
    "MetaView": "views",
    "exception_handler": "errors",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)

