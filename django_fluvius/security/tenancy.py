"""Multi-tenancy: every aggregate and projection row of a tenant-scoped domain belongs to one tenant.

Turned on by ``FLUVIUS['TENANCY']`` (a dict, below; ``True`` takes the defaults)
for every domain, or per domain with ``__tenancy__ = True`` / ``False``. For a
tenant-scoped domain:

- a create command stamps the context's tenant on the new aggregate (it is the
  ``tenant`` column of each of its events and of its projection row), and needs
  one (``TenantRequired`` otherwise);
- a command, ``domain.load``, ``statemgr.fetch/find``, ``QueryBuilder`` and the
  REST endpoints only see the context's tenant: another tenant's aggregate is
  ``AggregateNotFound`` (404), exactly as one that does not exist;
- a context without a tenant is refused (``TenantRequired``) unless it is a
  system context (``DomainContext.system``: Celery tasks, management commands,
  code that built a domain without a context), which sees every tenant, or a
  superuser when ``SUPERUSER_ALL_TENANTS`` is on.

The checks live here and are called by the core (``Domain.load_for_command``,
``Domain.load``, ``StateManager.queryset``), not by a removable middleware: a
cached aggregate (cache.py) carries its tenant and is checked like a loaded one.

A request's tenant comes from ``RESOLVER`` (see ``resolve_tenant``), never from
a payload: a forged tenant in a header is ignored unless the user is a member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import AggregateNotFound, ConfigurationError, TenantRequired

logger = logging.getLogger("django_fluvius.tenancy")

# The projection models' field (and the events' column) that holds the tenant id.
TENANT_FIELD = "tenant"
# Longest tenant id: the width of Event.tenant and CommandLog.tenant.
MAX_TENANT_LENGTH = 100

TENANCY_DEFAULTS: dict[str, Any] = {
    # (request, user) -> tenant id or None: how a request's tenant is found (dotted path or callable).
    "RESOLVER": "django_fluvius.security.tenancy.resolve_tenant",
    # The default resolver: attribute path on the user giving its tenant ("tenant", "profile.org_id").
    "USER_TENANT": "tenant",
    # The default resolver: (user) -> the tenant ids the user belongs to (dotted path or callable);
    # needed for HEADER, and a user of exactly one tenant acts for it.
    "USER_TENANTS": None,
    # The default resolver: a request header naming which of the user's tenants to act for
    # ("X-Tenant-ID"); a tenant the user does not belong to is ignored.
    "HEADER": None,
    # Superusers whose request resolves to no tenant see every tenant (as a system context).
    "SUPERUSER_ALL_TENANTS": False,
}


@dataclass(frozen=True)
class TenancyConfig:
    resolver: Callable[[Any, Any], Any]
    user_tenant: str | None
    user_tenants: Callable[[Any], Iterable[Any]] | None
    header: str | None
    superuser_all_tenants: bool


def _callable(value: Any) -> Any:
    return import_string(value) if isinstance(value, str) else value


@cache
def _parse() -> TenancyConfig | None:
    raw = fluvius_settings.TENANCY
    if not raw:
        return None
    options = dict(TENANCY_DEFAULTS)
    if isinstance(raw, dict):
        unknown = set(raw) - set(TENANCY_DEFAULTS)
        if unknown:
            raise ConfigurationError(f"FLUVIUS['TENANCY'] has unknown keys: {', '.join(sorted(unknown))} "
                                     f"(known: {', '.join(TENANCY_DEFAULTS)}).")
        options.update(raw)
    return TenancyConfig(
        resolver=_callable(options["RESOLVER"]),
        user_tenant=options["USER_TENANT"] or None,
        user_tenants=_callable(options["USER_TENANTS"]) if options["USER_TENANTS"] else None,
        header=options["HEADER"] or None,
        superuser_all_tenants=bool(options["SUPERUSER_ALL_TENANTS"]),
    )


def config() -> TenancyConfig | None:
    """The parsed ``FLUVIUS['TENANCY']``, or None when tenancy is off."""
    return _parse()


def _clear(*, setting: str, **kwargs: Any) -> None:
    if setting == "FLUVIUS":
        _parse.cache_clear()


setting_changed.connect(_clear)


def enabled() -> bool:
    return bool(fluvius_settings.TENANCY)


def is_scoped(domain: Any) -> bool:
    """Is this domain (class or instance) tenant-scoped? ``__tenancy__`` wins over the setting."""
    flag = getattr(domain, "__tenancy__", None)
    if flag is None:
        return bool(fluvius_settings.TENANCY)
    return bool(flag)


def sees_all_tenants(context: Any) -> bool:
    """A context with no tenant that may see every tenant: system work, or a superuser if allowed."""
    if context is None or getattr(context, "is_system", False):
        return True
    cfg = config()
    user = getattr(context, "user", None)
    return bool(cfg and cfg.superuser_all_tenants and getattr(user, "is_superuser", False)
                and getattr(user, "is_active", False))


def scope_of(context: Any) -> str | None:
    """The tenant a context is confined to; None when it sees every tenant.

    Raises ``TenantRequired`` for a context that has no tenant and may not see all.
    """
    tenant = getattr(context, "tenant", None)
    if tenant:
        return str(tenant)
    if sees_all_tenants(context):
        return None
    raise TenantRequired(
        "Tenancy is on and this request has no tenant: the user belongs to no tenant, or to several "
        "without saying which."
    )


def not_found(domain: Any, aggregate_id: Any) -> AggregateNotFound:
    """The error for another tenant's aggregate: word for word the one for a missing aggregate."""
    return AggregateNotFound(f"No {domain.__namespace__} aggregate with id {aggregate_id}.")


def check_aggregate(domain: Any, aggregate: Any, context: Any) -> None:
    """``AggregateNotFound`` unless ``context`` may see ``aggregate`` (tenant-scoped domains only)."""
    if not is_scoped(domain):
        return
    tenant = scope_of(context)
    if tenant is not None and (aggregate.tenant or "") != tenant:
        raise not_found(domain, aggregate.id)


def tenant_for_new(domain: Any, context: Any) -> str | None:
    """The tenant of an aggregate a create command makes: the context's (required when scoped)."""
    tenant = getattr(context, "tenant", None) or None
    if tenant is None and is_scoped(domain):
        raise TenantRequired(f"Creating a {domain.__namespace__} aggregate needs a tenant, and the "
                             f"context has none.")
    return str(tenant) if tenant is not None else None


def has_tenant_field(model: Any) -> bool:
    return any(f.name == TENANT_FIELD for f in model._meta.concrete_fields)


def scope_queryset(domain: Any, resource: str, queryset: Any) -> Any:
    """Narrow a resource's rows to the context's tenant (tenant-scoped domains only)."""
    if not is_scoped(domain):
        return queryset
    tenant = scope_of(domain.context)
    if tenant is None:
        return queryset
    if not has_tenant_field(queryset.model):
        # Fail closed: an unscoped read would show every tenant's rows (check fluvius.E070).
        raise ConfigurationError(f"{domain.__namespace__} is tenant-scoped but the model of its resource "
                                 f"{resource!r} ({queryset.model._meta.label}) has no {TENANT_FIELD!r} field.")
    return queryset.filter(**{TENANT_FIELD: tenant})


def scope_rows(queryset: Any, context: Any, field: str = TENANT_FIELD) -> Any:
    """Narrow rows of the framework's own tables (events, command log) to the context's tenant.

    Used by the admin's event browser when tenancy is on; a context that sees all tenants
    reads everything, one without a tenant reads nothing.
    """
    if not enabled():
        return queryset
    try:
        tenant = scope_of(context)
    except TenantRequired:
        return queryset.none()
    return queryset if tenant is None else queryset.filter(**{field: tenant})


def row_visible(tenant: str | None, context: Any) -> bool:
    """May ``context`` see a row of the framework's tables stamped with ``tenant`` (tenancy on)?"""
    if not enabled():
        return True
    try:
        scope = scope_of(context)
    except TenantRequired:
        return False
    return scope is None or (tenant or "") == scope


# -- finding a request's tenant -----------------------------------------------------------------


def _attribute(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def user_tenants(user: Any) -> list[str]:
    """The tenant ids a user belongs to (``USER_TENANTS``), or its one ``USER_TENANT``."""
    cfg = config()
    if cfg is None or user is None or not getattr(user, "is_authenticated", False):
        return []
    if cfg.user_tenants is not None:
        return [str(t) for t in cfg.user_tenants(user) if t is not None and str(t)]
    own = _attribute(user, cfg.user_tenant) if cfg.user_tenant else None
    return [str(own)] if own is not None and str(own) else []


def resolve_tenant(request: Any, user: Any) -> str | None:
    """The default ``RESOLVER``: the tenant a request acts for, from the authenticated user only.

    1. ``HEADER`` (when set and sent) names one of the user's tenants: that one. A tenant the
       user does not belong to is ignored (and logged), never trusted.
    2. Else the user's ``USER_TENANT`` attribute, else its only tenant.
    3. Else None: the request has no tenant (``TenantRequired`` where one is needed).

    An anonymous user has no tenant. Nothing in a payload is ever looked at.
    """
    cfg = config()
    if cfg is None or user is None or not getattr(user, "is_authenticated", False):
        return None
    tenants: list[str] | None = None
    if cfg.header:
        asked = request.headers.get(cfg.header) if hasattr(request, "headers") else None
        if asked:
            tenants = user_tenants(user)
            if asked in tenants:
                return asked
            logger.warning("Ignoring %s: %r, a tenant user %s does not belong to.", cfg.header, asked[:100],
                           getattr(user, "pk", user))
    if cfg.user_tenant:
        own = _attribute(user, cfg.user_tenant)
        if own is not None and str(own):
            return str(own)
    if tenants is None:
        tenants = user_tenants(user)
    return tenants[0] if len(tenants) == 1 else None


def request_tenant(request: Any, user: Any) -> str | None:
    """The tenant of a request through the configured ``RESOLVER`` (None when tenancy is off)."""
    cfg = config()
    if cfg is None:
        return None
    tenant = cfg.resolver(request, user)
    if tenant is None or tenant == "":
        return None
    tenant = str(tenant)
    if len(tenant) > MAX_TENANT_LENGTH:
        raise TenantRequired(f"A tenant id is at most {MAX_TENANT_LENGTH} characters.", code="invalid_tenant")
    return tenant


# -- system checks (fluvius.E070-E072, W070) ----------------------------------------------------


def check_tenancy(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.core import checks

    from django_fluvius.registry import domains, resolve_model

    errors: list[Any] = []
    raw = fluvius_settings.TENANCY
    if raw and not isinstance(raw, dict | bool):
        errors.append(checks.Error("FLUVIUS['TENANCY'] must be None, True or a dict.",
                                   hint="See docs/security.md.", id="fluvius.E071"))
        return errors
    try:
        config()
    except (ConfigurationError, ImportError) as exc:
        errors.append(checks.Error(f"FLUVIUS['TENANCY'] is wrong: {exc}", hint="See docs/security.md.",
                                   id="fluvius.E071"))
    for domain in domains:
        if not is_scoped(domain):
            continue
        if not raw:
            errors.append(checks.Warning(
                f"{domain.__qualname__} is tenant-scoped (__tenancy__ = True) but FLUVIUS['TENANCY'] is off: "
                f"requests resolve no tenant, so only system contexts can use it.",
                hint="Set FLUVIUS['TENANCY'] (True or a dict).", obj=domain, id="fluvius.W070"))
        for resource, model in (getattr(domain, "__resources__", {}) or {}).items():
            try:
                model_class = resolve_model(model)
            except Exception:  # noqa: BLE001 - fluvius.E004 reports it
                continue
            if not has_tenant_field(model_class):
                errors.append(checks.Error(
                    f"{domain.__qualname__} is tenant-scoped but the model of its resource {resource!r} "
                    f"({model_class._meta.label}) has no {TENANT_FIELD!r} field.",
                    hint=f"Add {TENANT_FIELD} = models.CharField(max_length={MAX_TENANT_LENGTH}, blank=True, "
                         f"db_index=True) to the model, or set __tenancy__ = False on the domain.",
                    obj=domain, id="fluvius.E070"))
    return errors
