"""The registry of domains, and the resource lookup the read side builds on.

Invariant: a namespace names one domain; registering a second domain with a
namespace already taken is refused (``ImproperlyConfigured``), so events, command
keys and URLs can never be claimed by two bounded contexts.

It lives at the ground so the event store, the read side and the checks can find
a domain or a resource by name without importing ``domain``; it names domain
classes through ``protocols.DomainProtocol``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured

from django_fluvius.exceptions import UnknownDomain, UnknownResource

if TYPE_CHECKING:
    from collections.abc import Iterator

    from django.db.models import Model

    from django_fluvius.protocols import DomainProtocol as Domain


class DomainRegistry:
    def __init__(self) -> None:
        self._domains: dict[str, type[Domain]] = {}

    def register(self, domain_class: type[Domain]) -> type[Domain]:
        namespace = getattr(domain_class, "__namespace__", None)
        if not namespace:
            raise ImproperlyConfigured(f"{domain_class.__qualname__} has no __namespace__.")
        existing = self._domains.get(namespace)
        if existing is not None and existing is not domain_class:
            raise ImproperlyConfigured(
                f"Namespace {namespace!r} is taken by {existing.__module__}.{existing.__qualname__}; "
                f"{domain_class.__module__}.{domain_class.__qualname__} cannot register it again."
            )
        self._domains[namespace] = domain_class
        return domain_class

    def unregister(self, namespace: str) -> None:
        self._domains.pop(namespace, None)

    def clear(self) -> None:
        self._domains.clear()

    def get(self, namespace: str) -> type[Domain]:
        try:
            return self._domains[namespace]
        except KeyError:
            known = ", ".join(sorted(self._domains)) or "none"
            raise UnknownDomain(f"No domain has the namespace {namespace!r} (known: {known}).") from None

    def __contains__(self, namespace: str) -> bool:
        return namespace in self._domains

    def __iter__(self) -> Iterator[type[Domain]]:
        return iter(list(self._domains.values()))

    def __len__(self) -> int:
        return len(self._domains)

    def find_resource(self, name: str) -> tuple[type[Domain], str]:
        """Find ``'user'`` or ``'app-user.user'``; return (domain class, resource name)."""
        if "." in name:
            namespace, resource = name.rsplit(".", 1)
            domain = self.get(namespace)
            if resource not in getattr(domain, "__resources__", {}):
                raise UnknownResource(f"Domain {namespace!r} has no resource {resource!r}.")
            return domain, resource
        matches = [d for d in self._domains.values() if name in getattr(d, "__resources__", {})]
        if not matches:
            raise UnknownResource(f"No registered domain has a resource named {name!r}.")
        if len(matches) > 1:
            options = ", ".join(f"'{d.__namespace__}.{name}'" for d in matches)
            raise UnknownResource(f"Resource {name!r} is ambiguous; use one of {options}.")
        return matches[0], name


def resolve_model(value: Any) -> type[Model]:
    """A model class, or an ``"app_label.Model"`` string resolved through the app registry."""
    if isinstance(value, str):
        try:
            return django_apps.get_model(value)
        except (LookupError, ValueError) as exc:
            raise ImproperlyConfigured(f"Projection model {value!r} cannot be found: {exc}") from exc
    return value


domains = DomainRegistry()
