"""System checks of the REST face (ids fluvius.E020 and up).

| id            | problem                                                             |
|---------------|---------------------------------------------------------------------|
| fluvius.E020  | a name is both a command and a resource of one domain (one URL)     |
| fluvius.E021  | a namespace, command key or resource name is not a usable URL part  |
| fluvius.E022  | ``FLUVIUS['IDEMPOTENCY_TTL']`` is not None or a number of seconds >= 0 |

They run at start-up so a route that two names would share, or a name a URL
cannot carry, fails ``manage.py check`` rather than answering the wrong view.
"""

from __future__ import annotations

from django.core import checks

from django_fluvius.conf import fluvius_settings
from django_fluvius.registry import domains


def check_routes(app_configs=None, **kwargs):
    from django_fluvius.rest.router import route_problems

    errors = []
    for domain in domains:
        for check_id, problem in route_problems(domain):
            errors.append(checks.Error(
                f"{domain.__module__}.{domain.__qualname__}: {problem}; DomainRouter cannot route it.",
                hint="Rename the command (@action(name=...)) or the resource, using letters, digits, "
                     "'-', '_' and '.' (not first).",
                obj=domain, id=check_id,
            ))
    ttl = fluvius_settings.IDEMPOTENCY_TTL
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0):
        errors.append(checks.Error(
            f"FLUVIUS['IDEMPOTENCY_TTL'] is {ttl!r}.",
            hint="Give a number of seconds >= 0, or None to keep idempotency records forever.",
            id="fluvius.E022",
        ))
    return errors
