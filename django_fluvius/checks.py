"""System checks (``manage.py check``): ids ``fluvius.E001`` and up.

| id            | problem                                                      |
|---------------|--------------------------------------------------------------|
| fluvius.E001  | a ``FLUVIUS['DOMAINS']`` path does not import                |
| fluvius.E002  | two domains share a namespace                                |
| fluvius.E003  | two actions of an aggregate share a command key              |
| fluvius.E004  | a resource has no model (or names one that does not exist)   |
| fluvius.E005  | a ``FLUVIUS['DOMAINS']`` entry is not a complete Domain class |
| fluvius.W006  | an action writes a state key the projection model has no field for, while a field of a close name is never written (a typo: a stale column) |
| fluvius.E020  | a name is both a command and a resource of a domain (rest/checks.py) |
| fluvius.E021  | a namespace, command or resource name is not a usable URL segment |
| fluvius.E022  | ``FLUVIUS['IDEMPOTENCY_TTL']`` is not None or seconds >= 0   |
| fluvius.E030  | ``__query__`` names a resource the domain does not have      |
| fluvius.E031  | a ``__query__`` entry is not a QuerySurface (or cannot import) |
| fluvius.E032  | a query surface names a field the model cannot query/sort    |
| fluvius.E033  | a query surface allows an operator the field's kind does not |
| fluvius.E034  | a query surface searches a non-text or excluded field        |
| fluvius.E035  | a query surface's default_limit is not within 1..max_limit   |
| fluvius.E036  | ``FLUVIUS['READ_DATABASE']`` is not an alias of DATABASES    |
| fluvius.E040-E049 | event handlers, async projections, dispatch settings (delivery/checks.py) |
| fluvius.E050  | stored events carry a key no action or ``@apply`` knows (db)  |
| fluvius.E051  | stored events have a schema version no upcaster chain covers |
| fluvius.E052  | stored events have a schema version newer than the code      |
| fluvius.E053  | a renamed event key is still used by an action or ``@apply`` |
| fluvius.E054  | the upcasters of an event key skip a version                 |
| fluvius.E060-E063 | the MEDIA_* settings: storage, size limit, types, URL expiry (media/storage.py) |
| fluvius.E070  | a tenant-scoped domain's resource model has no ``tenant`` field (security/tenancy.py) |
| fluvius.E071  | ``FLUVIUS['TENANCY']`` is malformed (unknown key, resolver that does not import) |
| fluvius.E072  | an ``@action(permission=...)`` is not a permission, policy or function (security/permissions.py) |
| fluvius.E073  | ``COMMAND_PERMISSIONS`` is on and a command has no model to hold its permission |
| fluvius.W070  | a domain sets ``__tenancy__ = True`` while ``FLUVIUS['TENANCY']`` is off |
| fluvius.W071  | permissions are declared but no ``AuthorizationMiddleware`` is in the chain |
| fluvius.W072  | two domains' commands share one run permission |
| fluvius.E080  | personal data is declared but no usable ``PRIVACY_KEK``/``PRIVACY_KMS`` is configured |
| fluvius.E081  | a ``__personal__`` field no action produces, or a resource the domain does not have |
| fluvius.E082  | the stored subject keys do not unwrap with the configured KEK (db)  |
| fluvius.E090  | a setting needs an optional extra that is not installed (names the extra) |
| fluvius.E091  | ``FLUVIUS['HEALTH_MAX_DELIVERY_LAG']`` is not None or seconds > 0 |
| fluvius.E095  | ``FLUVIUS['COMMAND_LOG']`` is not one of its choices          |
| fluvius.E096  | ``FLUVIUS['PREPARED_STATEMENTS']`` is not None, True or False |
| fluvius.E100  | the event store's database is a backend not supported (names the supported ones; events/databases.py) |
| fluvius.E101  | the MariaDB / MySQL server is older than the minimum supported (db) |
| fluvius.E102  | MariaDB / MySQL: the feed clock's trigger is missing (db)    |
| fluvius.W050  | stored events belong to a namespace no domain declares (db)  |
| fluvius.W051  | an event key is renamed to a key no code knows               |
| fluvius.W052  | upcasters are registered for a key no code knows             |
"""

from __future__ import annotations

import ast
import difflib
import inspect
import textwrap
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError

from django_fluvius import privacy
from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery.checks import register as register_dispatch_checks
from django_fluvius.delivery.dispatch import celery_app
from django_fluvius.events.databases import (
    check_database_backends,
    check_database_versions,
    check_feed_clock,
)
from django_fluvius.events.upcasting import check_stored_event_types, check_upcasters
from django_fluvius.exceptions import KeyEncryptionKeyError
from django_fluvius.loading import load_problems
from django_fluvius.media.storage import S3Storage, check_media_settings
from django_fluvius.privacy import keys as privacy_keys
from django_fluvius.read.projections import (
    CREATED_FIELD,
    TENANT_FIELD,
    UPDATED_FIELD,
    VERSION_FIELD,
    writable_fields,
)
from django_fluvius.read.replicas import check_read_database
from django_fluvius.read.surface import check_query_surfaces
from django_fluvius.registry import domains, resolve_model
from django_fluvius.rest.checks import check_routes
from django_fluvius.security.permissions import check_authorization
from django_fluvius.security.tenancy import check_tenancy
from django_fluvius.write.aggregate import Aggregate


def check_domain_loading(app_configs=None, **kwargs):
    return [checks.Error(msg, hint=hint, id=check_id) for check_id, msg, hint in load_problems]


def check_domains(app_configs=None, **kwargs):
    errors = []
    for domain in domains:
        label = f"{domain.__module__}.{domain.__qualname__}"
        aggregate = getattr(domain, "__aggregate__", None)
        resources = dict(getattr(domain, "__resources__", {}) or {})
        if aggregate is not None:
            for name, first, second in getattr(aggregate, "_action_conflicts", []):
                errors.append(checks.Error(
                    f"{aggregate.__qualname__} declares the command key {name!r} twice "
                    f"({first} and {second}).",
                    hint="Rename one method or pass @action(name=...).",
                    obj=aggregate, id="fluvius.E003",
                ))
            for spec in aggregate.actions().values():
                for resource in spec.resources:
                    if resource not in resources:
                        errors.append(checks.Error(
                            f"Action {spec.name!r} of {label} names resource {resource!r}, "
                            f"which __resources__ does not map to a model.",
                            hint=f"Add {resource!r} to {domain.__qualname__}.__resources__.",
                            obj=domain, id="fluvius.E004",
                        ))
        for resource, model in resources.items():
            if model is None:
                errors.append(checks.Error(
                    f"Resource {resource!r} of {label} has no model.",
                    obj=domain, id="fluvius.E004",
                ))
                continue
            try:
                resolve_model(model)
            except ImproperlyConfigured as exc:
                errors.append(checks.Error(
                    f"Resource {resource!r} of {label}: {exc}", obj=domain, id="fluvius.E004",
                ))
    return errors


def literal_keys(func: Any) -> set[str]:
    """The constant string keys of the dict literals ``func`` returns (``{"name": ..}``).

    What a check can know of an aggregate's state without running it: a key built at
    run time, or a dict returned through a variable, is not seen (so a check built on
    this may only warn about what it does see).
    """
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return set()
    keys: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Dict):
            keys.update(k.value for k in node.value.keys
                        if isinstance(k, ast.Constant) and isinstance(k.value, str))
    return keys


def _state_keys(aggregate: Any, resource: str) -> Iterator[tuple[str, str]]:
    """(state key, who writes it) from the actions on ``resource`` and the @apply folds."""
    for spec in aggregate.actions().values():
        if spec.applies_to(resource):
            for key in sorted(literal_keys(spec.func)):
                yield key, f"action {spec.name!r}"
    for evt_key, attr in getattr(aggregate, "_appliers", {}).items():
        for key in sorted(literal_keys(getattr(aggregate, attr))):
            yield key, f"@apply({evt_key!r})"


def check_personal_data(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E080: a KEK (or KMS) that works when personal data is declared; E081: each declared field is produced."""
    errors: list[checks.CheckMessage] = []
    declared = False
    for domain in domains:
        personal = dict(getattr(domain, "__personal__", {}) or {})
        if not personal:
            continue
        declared = True
        label = f"{domain.__module__}.{domain.__qualname__}"
        resources = dict(getattr(domain, "__resources__", {}) or {})
        aggregate = domain.__aggregate__
        for resource in personal:
            if resource not in resources:
                errors.append(checks.Error(
                    f"{label}.__personal__ names resource {resource!r}, which the domain does not have.",
                    hint=f"Known resources: {', '.join(sorted(resources)) or 'none'}.",
                    obj=domain, id="fluvius.E081"))
                continue
            spec = privacy.declarations.get(domain.__namespace__, resource)
            fields = spec.fields if spec is not None else ()
            produced = {key for key, _who in _state_keys(aggregate, resource)}
            for action_spec in aggregate.actions().values():
                if action_spec.applies_to(resource):
                    produced.update(action_spec.serializer_class().fields)
            for name in fields:
                if name not in produced:
                    errors.append(checks.Error(
                        f"{label}.__personal__[{resource!r}] declares {name!r}, which no action on "
                        f"{resource!r} produces: it would never be sealed.",
                        hint="Fix the field's name, or remove it from __personal__.",
                        obj=domain, id="fluvius.E081"))
    if declared:
        try:
            privacy_keys.wrapper()
        except (KeyEncryptionKeyError, ImportError) as exc:
            errors.append(checks.Error(
                f"Personal data is declared (__personal__) but the key-encryption key is not usable: "
                f"{getattr(exc, 'message', exc)}",
                hint="Set FLUVIUS['PRIVACY_KEK'] to 32 random bytes in urlsafe base64 (docs/privacy.md), "
                     "or FLUVIUS['PRIVACY_KMS'] to your KMS client. Nothing personal is stored without it.",
                id="fluvius.E080"))
    return errors


def check_subject_keys(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """E082: the configured KEK unwraps the stored subject keys (a wrong KEK reads nothing)."""
    using = fluvius_settings.DATABASE
    if databases is not None and using not in databases:
        return []
    if not privacy.declarations or not privacy_keys.configured():
        return []
    try:
        problem = privacy_keys.check_unwraps(using)
    except (KeyEncryptionKeyError, ImportError) as exc:
        problem = str(getattr(exc, "message", exc))
    except DatabaseError:
        return []  # not migrated yet: nothing stored to unwrap
    if problem is None:
        return []
    return [checks.Error(
        f"The stored subject keys do not unwrap with the configured key-encryption key: {problem}",
        hint="Restore the KEK that wrapped them (or list it after the new one in FLUVIUS['PRIVACY_KEK'] "
             "and run manage.py fluvius_rotate_kek).",
        id="fluvius.E082")]


def check_projection_fields(app_configs=None, **kwargs):
    """fluvius.W006: a state key with no column while a column of a close name is never written."""
    bookkeeping = {VERSION_FIELD, CREATED_FIELD, UPDATED_FIELD, TENANT_FIELD}
    warnings = []
    for domain in domains:
        aggregate = getattr(domain, "__aggregate__", None)
        if aggregate is None or aggregate.projection is not Aggregate.projection:
            continue  # a projection() of its own shapes the row: the state's keys say nothing
        for resource in getattr(domain, "__resources__", {}) or {}:
            try:
                model = domain.projection_model(resource)
            except Exception:  # noqa: BLE001 - fluvius.E004 reports it
                continue
            if model is None:
                continue
            columns = set(writable_fields(model))
            written = dict(_state_keys(aggregate, resource))
            unwritten = sorted(columns - set(written) - bookkeeping - {model._meta.pk.name})
            for key, writer in sorted(written.items()):
                if key in columns:
                    continue
                close = difflib.get_close_matches(key, unwritten, n=1, cutoff=0.75)
                if close:
                    warnings.append(checks.Warning(
                        f"{aggregate.__qualname__} {writer} puts {key!r} in the state of {resource!r}, "
                        f"but {model._meta.label} has no field {key!r}; its field {close[0]!r} is "
                        f"written by no action, so that column stays as it was created.",
                        hint=f"Rename the state key or the field (did you mean {close[0]!r}?).",
                        obj=model, id="fluvius.W006",
                    ))
    return warnings


# -- E090: optional extras ---------------------------------------------------------------
# Without these, a project installed without the extra its settings need fails at the
# first command that reaches the broker or the bucket (an ImportError deep in kombu or
# django-storages, after the command committed); the check names the extra instead.

# Celery URL scheme -> (module it needs, what to install).
BROKER_EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "django-fluvius[redis]"),
    "rediss": ("redis", "django-fluvius[redis]"),
    "sentinel": ("redis", "django-fluvius[redis]"),
    "sqs": ("boto3", "celery[sqs]"),
    "db+postgresql": ("sqlalchemy", "celery[sqlalchemy]"),
    "db+sqlite": ("sqlalchemy", "celery[sqlalchemy]"),
    "db+mysql": ("sqlalchemy", "celery[sqlalchemy]"),
}
S3_EXTRA = ("boto3", "django-fluvius[s3]")


def installed(module: str) -> bool:
    return find_spec(module) is not None


def _celery_urls() -> dict[str, str]:
    """The broker and result-backend URLs the Celery dispatch would use, by where they are set."""
    urls = {name: getattr(settings, name, None) for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")}
    if fluvius_settings.CELERY_APP is not None:
        try:
            conf = celery_app().conf
            urls |= {"FLUVIUS['CELERY_APP'] broker_url": conf.broker_url,
                     "FLUVIUS['CELERY_APP'] result_backend": conf.result_backend}
        except Exception:  # noqa: BLE001 - an unusable app is fluvius.E046's to report
            pass
    return {where: url for where, url in urls.items() if isinstance(url, str) and url}


def _uses_s3() -> str | None:
    """Where the media settings choose S3, if they do."""
    media = fluvius_settings.MEDIA_STORAGE
    backends = getattr(settings, "STORAGES", {}) or {}
    if isinstance(media, S3Storage) or (isinstance(media, dict) and media.get("strategy") == "s3"):
        return "FLUVIUS['MEDIA_STORAGE']"
    if isinstance(media, str) and str(backends.get(media, {}).get("BACKEND", "")).startswith("storages.backends.s3"):
        return f"STORAGES[{media!r}]"
    return None


def check_extras(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    needs: list[tuple[str, str, str, str]] = []  # (where, what, module, install)
    if fluvius_settings.DISPATCH == "celery":
        for where, url in _celery_urls().items():
            scheme = urlsplit(url).scheme.lower()
            if scheme in BROKER_EXTRAS:
                needs.append((where, f"{scheme}:// (DISPATCH='celery')", *BROKER_EXTRAS[scheme]))
    s3 = _uses_s3()
    if s3 is not None:
        needs.append((s3, "S3 media storage", *S3_EXTRA))
    return [
        checks.Error(
            f"{where} uses {what}, which needs the Python package {module!r}: it is not installed.",
            hint=f"pip install '{install}'", id="fluvius.E090",
        )
        for where, what, module, install in needs if not installed(module)
    ]


def check_health_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    limit = fluvius_settings.HEALTH_MAX_DELIVERY_LAG
    if limit is None or (isinstance(limit, int | float) and not isinstance(limit, bool) and limit > 0):
        return []
    return [checks.Error(f"FLUVIUS['HEALTH_MAX_DELIVERY_LAG'] is {limit!r}.",
                         hint="Give a number of seconds > 0, or None to leave delivery out of readiness.",
                         id="fluvius.E091")]


COMMAND_LOG_CHOICES = ("all", "failures")


def check_write_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    log = fluvius_settings.COMMAND_LOG
    if log not in COMMAND_LOG_CHOICES:
        errors.append(checks.Error(
            f"FLUVIUS['COMMAND_LOG'] is {log!r}.",
            hint="'all' (a row per command) or 'failures' (rows for rejected and failed commands only).",
            id="fluvius.E095"))
    prepared = fluvius_settings.PREPARED_STATEMENTS
    if prepared not in (None, True, False) or isinstance(prepared, int) and not isinstance(prepared, bool):
        errors.append(checks.Error(
            f"FLUVIUS['PREPARED_STATEMENTS'] is {prepared!r}.",
            hint="None (prepared unless OPTIONS has 'prepare_threshold': None), True, or False (behind PgBouncer "
                 "in transaction mode).",
            id="fluvius.E096"))
    return errors


# Every check of the package, by the id range it owns, with the tags it runs under.
# The stored-keys check reads the event store, so it is tagged "database" only, as
# Django's own database checks: Django 6 hands every alias to the checks a tag selects,
# so a "fluvius" tag would make ``check --tag fluvius`` query it.
CHECKS: tuple[tuple[Callable[..., list[Any]], str], ...] = (
    (check_domain_loading, "fluvius"),                # E001-E005: loading FLUVIUS['DOMAINS']
    (check_domains, "fluvius"),                       # E003-E004: each domain's actions and resources
    (check_projection_fields, "fluvius"),             # W006: a state key beside an unwritten column
    (check_routes, "fluvius"),                        # E020-E029: the REST face (rest/checks.py)
    (check_query_surfaces, "fluvius"),                # E030-E035: query surfaces (read/surface.py)
    (check_read_database, "fluvius"),                 # E036: the read database (read/replicas.py)
    (check_upcasters, "fluvius"),                     # E053-E054, W051-W052: renames and upcasters
    (check_stored_event_types, checks.Tags.database),  # E050-E052, W050: the keys stored (events/upcasting.py)
    (check_media_settings, "fluvius"),                # E060-E063: media settings (media/storage.py)
    (check_tenancy, "fluvius"),                       # E070-E071, W070: tenancy (security/tenancy.py)
    (check_authorization, "fluvius"),                 # E072-E073, W071-W072: security/permissions.py
    (check_personal_data, "fluvius"),                 # E080-E081: __personal__ and the KEK (privacy/)
    (check_subject_keys, checks.Tags.database),       # E082: the KEK unwraps the stored keys
    (check_extras, "fluvius"),                        # E090: settings that need an optional extra
    (check_health_settings, "fluvius"),               # E091: the health endpoints' threshold (health.py)
    (check_write_settings, "fluvius"),                # E095-E096: the command log, prepared statements
    (check_database_backends, "fluvius"),             # E100: a database backend not supported (events/databases.py)
    (check_database_versions, checks.Tags.database),  # E101: a MariaDB / MySQL server too old (asks it)
    (check_feed_clock, checks.Tags.database),         # E102: MariaDB / MySQL: the feed clock's trigger is gone
)


def register_checks() -> None:
    for check, tag in CHECKS:
        checks.register(check, tag)
    # E040-E049: event handlers, async projections, dispatch settings (delivery/checks.py).
    register_dispatch_checks()
