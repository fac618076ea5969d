"""Which fields of which resources are personal, and whose they are.

A domain declares ``__personal__ = {"member": ["name", "email"]}``; a resource's
value may also be ``PersonalData(fields, subject=callable)`` when the subject is
not the aggregate itself (an order's customer): ``subject(aggregate_id, state)``
returns the subject's id from the aggregate's folded state.

Invariant: lookups on the command path are one dict access by (namespace,
resource) and give ``None`` when nothing is declared, so a domain without
personal data pays nothing for this unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured

# The key of the event ``Domain.forget`` appends to each stream it erased: it names the
# erased fields and carries no personal data (folding it sets them to None).
ERASED_EVT_KEY = "personal-data-erased"

Subject = Callable[[Any, Mapping[str, Any]], Any]


@dataclass(frozen=True)
class PersonalData:
    """The personal fields of one resource and who they belong to (None: the aggregate itself)."""

    fields: tuple[str, ...]
    subject: Subject | None = None

    def __init__(self, fields: Iterable[str], subject: Subject | None = None):
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "subject", subject)

    def subject_of(self, aggregate_id: Any, state: Mapping[str, Any]) -> str:
        """The subject's id as stored (text); the aggregate's own id when no callable names another."""
        if self.subject is not None:
            found = self.subject(aggregate_id, state)
            if found is not None and found != "":
                return str(found)
        return str(aggregate_id)


class Declarations:
    """``(namespace, resource) -> PersonalData``, filled by ``Domain`` classes as they are made."""

    def __init__(self) -> None:
        self._by_resource: dict[tuple[str, str], PersonalData] = {}
        self._owners: dict[str, str] = {}

    def declare(self, namespace: str, owner: str, personal: Mapping[str, Any]) -> None:
        if not isinstance(personal, Mapping):
            raise ImproperlyConfigured(f"{owner}.__personal__ must be a dict resource -> fields, "
                                       f"not {type(personal).__name__}.")
        previous = self._owners.get(namespace)
        if previous is not None and previous != owner:
            # A subclass re-declaring its parent's namespace replaces it (as the domain registry allows).
            self.forget_namespace(namespace)
        self.forget_namespace(namespace)
        for resource, value in personal.items():
            spec = value if isinstance(value, PersonalData) else PersonalData(_field_list(owner, resource, value))
            if not spec.fields:
                continue
            self._by_resource[(namespace, resource)] = spec
        self._owners[namespace] = owner

    def forget_namespace(self, namespace: str) -> None:
        for key in [k for k in self._by_resource if k[0] == namespace]:
            del self._by_resource[key]
        self._owners.pop(namespace, None)

    def get(self, namespace: str, resource: str) -> PersonalData | None:
        return self._by_resource.get((namespace, resource))

    def items(self) -> list[tuple[tuple[str, str], PersonalData]]:
        return list(self._by_resource.items())

    def __bool__(self) -> bool:
        return bool(self._by_resource)


def _field_list(owner: str, resource: str, value: Any) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ImproperlyConfigured(f"{owner}.__personal__[{resource!r}] must be a list of field names "
                                   f"or a PersonalData, not {value!r}.")
    fields = list(value)
    for name in fields:
        if not isinstance(name, str) or not name:
            raise ImproperlyConfigured(f"{owner}.__personal__[{resource!r}] holds {name!r}: not a field name.")
    return fields


declarations = Declarations()
