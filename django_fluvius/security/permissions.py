"""Who may run which command: Django permissions per command, and policies on ``@action``.

Two sources, both enforced by ``AuthorizationMiddleware`` (below, a command-bus middleware) for every
context that is not a system one (REST, admin, Python code acting for a user):

1. **Command permissions.** Every command gets a Django ``Permission``, created
   after ``migrate`` (``create_command_permissions``, a ``post_migrate``
   handler) on the content type of the model of the command's resource:
   codename ``run_<command key with underscores>``, so ``create-user`` of a
   domain whose user model is ``app_user.User`` is ``app_user.run_create_user``
   ("Can run create-user"). Assign them like any permission (groups, the admin).
   They are required when ``FLUVIUS['COMMAND_PERMISSIONS']`` is True.

2. **Policies.** ``@action(permission=...)`` takes

   - a permission string, ``"app_user.deactivate_user"``: ``user.has_perm`` before
     the aggregate is loaded;
   - a ``Policy`` (class or instance): ``has_permission(context, command)``
     before loading, ``has_object_permission(context, command, aggregate)``
     inside the transaction, once the aggregate is loaded (a guard: see
     ``Command.add_guard``); combine them with ``&``, ``|`` and ``~``;
   - a function ``(context, command, aggregate) -> bool``: an object-level check;
   - a list or tuple of any of these: all must pass.

A refusal is ``PermissionDenied`` (HTTP 403): nothing is stored, the attempt is
in the command log. System contexts (``DomainContext.system``) run every command.
Django caches a user's permissions on the user object (``ModelBackend``), so a
request checks them with at most one pair of queries, and none when nothing is
required.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, router

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import ConfigurationError, PermissionDenied
from django_fluvius.registry import domains

if TYPE_CHECKING:
    from django_fluvius.write.aggregate import ActionSpec, Aggregate
    from django_fluvius.write.bus import Command, CommandResult, Handler

logger = logging.getLogger("django_fluvius.permissions")

CODENAME_PREFIX = "run_"


# -- command permissions ---------------------------------------------------------------------


def command_codename(command_key: str) -> str:
    """``create-user`` -> ``run_create_user``."""
    return CODENAME_PREFIX + command_key.replace("-", "_")


def command_permission_model(domain_class: Any, spec: ActionSpec) -> Any:
    """The model whose content type holds a command's permission: its (first) resource's, or None."""
    resource = spec.resources[0] if spec.resources else domain_class.default_resource()
    try:
        return domain_class.projection_model(resource)
    except Exception:  # noqa: BLE001 - a broken resource is reported by fluvius.E004
        return None


def command_permission(domain_class: Any, spec: ActionSpec) -> str | None:
    """``"app_label.run_<command>"`` of a command, or None when its resource has no model."""
    model = command_permission_model(domain_class, spec)
    if model is None:
        return None
    return f"{model._meta.app_label}.{command_codename(spec.name)}"


def create_command_permissions(app_config: Any = None, verbosity: int = 2, using: str = DEFAULT_DB_ALIAS,
                               **kwargs: Any) -> int:
    """``post_migrate``: make the ``run_<command>`` permissions of the models of ``app_config``.

    Like Django's own ``create_permissions``: idempotent, per app, on the database
    being migrated. Returns how many were created.
    """
    from django.apps import apps as global_apps

    if not (global_apps.is_installed("django.contrib.auth") and global_apps.is_installed(
            "django.contrib.contenttypes")):
        return 0
    state = kwargs.get("apps")
    if state is not None:
        # As Django's own: a migrate that has not made their tables yet (``migrate
        # django_fluvius 0008`` on a new database) has nothing to add permissions to.
        try:
            state.get_model("contenttypes", "ContentType")
            state.get_model("auth", "Permission")
        except LookupError:
            return 0
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    if not router.allow_migrate_model(using, Permission):
        return 0
    label = getattr(app_config, "label", None)
    wanted: dict[tuple[Any, str], str] = {}
    for domain_class in domains:
        for spec in domain_class.commands().values():
            model = command_permission_model(domain_class, spec)
            if model is None or (label is not None and model._meta.app_label != label):
                continue
            wanted[(model, command_codename(spec.name))] = f"Can run {spec.name}"[:255]
    if not wanted:
        return 0
    types = {model: ContentType.objects.db_manager(using).get_for_model(model, for_concrete_model=False)
             for model, _codename in wanted}
    existing = set(Permission.objects.using(using).filter(content_type__in=set(types.values()))
                   .values_list("content_type", "codename"))
    new = [Permission(codename=codename, name=name, content_type=types[model])
           for (model, codename), name in wanted.items()
           if (types[model].pk, codename) not in existing]
    Permission.objects.using(using).bulk_create(new, ignore_conflicts=True)
    if verbosity >= 2:
        for permission in new:
            print(f"Adding permission '{permission}'")
    return len(new)


# -- policies --------------------------------------------------------------------------------


def _user(context: Any) -> Any:
    return getattr(context, "user", None)


def _active(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", True))


class Policy:
    """Who may run a command; DRF's ``BasePermission`` in two steps.

    ``has_permission`` runs before the aggregate is loaded (no transaction yet);
    ``has_object_permission`` inside the command's transaction with the loaded
    aggregate (``aggregate.state``, ``.tenant``, ``.version``; a new, empty one for
    a create command). Override either; ``message`` is the refusal's text.
    """

    message: str | None = None

    def has_permission(self, context: Any, command: Command) -> bool:
        return True

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        return True

    def refusal(self, context: Any, command: Any, aggregate: Any = None) -> str | None:
        """The message of a refusal by this policy (``message``; combinations name the part
        that refused)."""
        return self.message

    @property
    def checks_objects(self) -> bool:
        """Whether the bus must call ``has_object_permission`` (skipped when not overridden)."""
        return type(self).has_object_permission is not Policy.has_object_permission

    def __and__(self, other: Any) -> Policy:
        return AllOf(self, _policy(other))

    def __or__(self, other: Any) -> Policy:
        return AnyOf(self, _policy(other))

    def __invert__(self) -> Policy:
        return Not(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class AllowAny(Policy):
    pass


class IsAuthenticated(Policy):
    message = "You must be signed in to run this command."

    def has_permission(self, context: Any, command: Command) -> bool:
        return _active(_user(context))


class IsStaff(Policy):
    def has_permission(self, context: Any, command: Command) -> bool:
        user = _user(context)
        return _active(user) and bool(getattr(user, "is_staff", False))


class HasPerm(Policy):
    """The user holds every one of these Django permissions (``"app_label.codename"``)."""

    def __init__(self, *perms: str):
        if not perms or not all(isinstance(p, str) and "." in p for p in perms):
            raise ConfigurationError(f"HasPerm takes 'app_label.codename' strings, not {perms!r}.")
        self.perms = perms

    def has_permission(self, context: Any, command: Command) -> bool:
        user = _user(context)
        return _active(user) and user.has_perms(self.perms)

    def __repr__(self) -> str:
        return f"<HasPerm {', '.join(self.perms)}>"


class OwnedBy(Policy):
    """The aggregate's ``state[field]`` is the acting user's id (``context.user_id``)."""

    def __init__(self, field: str = "owner"):
        self.field = field

    def has_permission(self, context: Any, command: Command) -> bool:
        return _active(_user(context))

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        if command.spec.create:
            return True
        owner = aggregate.state.get(self.field)
        return owner is not None and str(owner) == context.user_id


class FunctionPolicy(Policy):
    """A plain function ``(context, command, aggregate) -> bool``, run with the loaded aggregate."""

    def __init__(self, func: Callable[[Any, Any, Any], bool]):
        self.func = func

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        return bool(self.func(context, command, aggregate))

    def __repr__(self) -> str:
        return f"<FunctionPolicy {getattr(self.func, '__qualname__', self.func)!r}>"


class AllOf(Policy):
    def __init__(self, *policies: Policy):
        self.policies = policies

    def has_permission(self, context: Any, command: Command) -> bool:
        return all(p.has_permission(context, command) for p in self.policies)

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        return all(p.has_object_permission(context, command, aggregate) for p in self.policies)

    @property
    def checks_objects(self) -> bool:
        return any(p.checks_objects for p in self.policies)

    def refusal(self, context: Any, command: Any, aggregate: Any = None) -> str | None:
        # The message of the part that refused, not of the first part: a signed-in user
        # refused by HasPerm was told "You must be signed in".
        for policy in self.policies:
            allowed = policy.has_permission(context, command)
            if allowed and aggregate is not None and policy.checks_objects:
                allowed = policy.has_object_permission(context, command, aggregate)
            if not allowed:
                return policy.refusal(context, command, aggregate)
        return None


class AnyOf(Policy):
    """One of the policies allows it, in both steps (DRF's ``|``)."""

    def __init__(self, *policies: Policy):
        self.policies = policies

    def has_permission(self, context: Any, command: Command) -> bool:
        return any(p.has_permission(context, command) for p in self.policies)

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        return any(p.has_permission(context, command) and p.has_object_permission(context, command, aggregate)
                   for p in self.policies)

    @property
    def checks_objects(self) -> bool:
        return any(p.checks_objects for p in self.policies)


class Not(Policy):
    def __init__(self, policy: Policy):
        self.policy = policy

    def has_permission(self, context: Any, command: Command) -> bool:
        if self.policy.checks_objects:
            return True  # decided with the aggregate
        return not self.policy.has_permission(context, command)

    def has_object_permission(self, context: Any, command: Command, aggregate: Aggregate) -> bool:
        return not (self.policy.has_permission(context, command)
                    and self.policy.has_object_permission(context, command, aggregate))

    @property
    def checks_objects(self) -> bool:
        return self.policy.checks_objects


def as_policy(value: Any) -> Policy | None:
    """What ``@action(permission=...)`` holds, as one ``Policy`` (None when nothing is declared)."""
    if value is None:
        return None
    if isinstance(value, Policy):
        return value
    if isinstance(value, type) and issubclass(value, Policy):
        return value()
    if isinstance(value, str):
        return HasPerm(value)
    if isinstance(value, list | tuple):
        parts = [p for p in (as_policy(v) for v in value) if p is not None]
        return AllOf(*parts) if parts else None
    if callable(value):
        return FunctionPolicy(value)
    raise ConfigurationError(f"{value!r} is not a permission: give a permission string, a Policy, a function "
                             f"(context, command, aggregate) -> bool, or a list of them.")


def _policy(value: Any) -> Policy:
    policy = as_policy(value)
    if policy is None:
        raise ConfigurationError(f"{value!r} is no policy to combine with.")
    return policy


def policy_for(spec: ActionSpec, namespace: str, *, require_run_permission: bool) -> Policy | None:
    """Everything a command requires: its declared policy, and its run permission when asked."""
    parts: list[Policy] = []
    if require_run_permission:
        domain_class = domains.get(namespace)
        permission = command_permission(domain_class, spec)
        if permission is None:
            raise ConfigurationError(
                f"FLUVIUS['COMMAND_PERMISSIONS'] is on but command {spec.name!r} of {namespace!r} has no "
                f"resource model to hold its permission.")
        parts.append(HasPerm(permission))
    declared = as_policy(spec.permission)
    if declared is not None:
        parts.append(declared)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else AllOf(*parts)


def denied(policy: Policy, command: Command, context: Any = None, aggregate: Any = None) -> PermissionDenied:
    """The ``PermissionDenied`` of a refusal: the refusing policy's message, or a plain one."""
    message = policy.refusal(context, command, aggregate) if context is not None else policy.message
    return PermissionDenied(message or f"You may not run {command.key} in {command.namespace}.")


def check_permission_values(specs: Iterable[tuple[Any, ActionSpec]]) -> list[tuple[Any, str]]:
    """(domain, problem) for each action whose ``permission=`` cannot be used."""
    problems = []
    for domain_class, spec in specs:
        try:
            as_policy(spec.permission)
        except ConfigurationError as exc:
            problems.append((domain_class, f"Action {spec.name!r}: {exc.message}"))
    return problems


# -- enforcement: the command-bus middleware and its object guard --------------------------


class AuthorizationMiddleware:
    """Command permissions and ``@action(permission=...)`` policies (see permissions.py).

    For every context but a system one: the command's ``run_`` permission when
    ``FLUVIUS['COMMAND_PERMISSIONS']`` is True, and the action's declared policy.
    Checks that need no aggregate run here, before any transaction; object checks
    are handed to the bus as a guard (``Command.add_guard``), which runs them
    inside the transaction with the loaded aggregate — after the tenant check, so
    another tenant's aggregate is a 404 before anyone asks about permissions.

    With nothing declared and ``COMMAND_PERMISSIONS`` off, every command is
    allowed here (over REST the views' DRF permission classes still apply).
    """

    def __init__(self) -> None:
        self.require_run_permission = bool(fluvius_settings.COMMAND_PERMISSIONS)
        # Per action: its policy (None: nothing required) and the guard of its object checks.
        self._policies: dict[ActionSpec, tuple[Policy | None, ObjectGuard | None]] = {}

    def policy(self, command: Command) -> tuple[Policy | None, ObjectGuard | None]:
        spec = command.spec
        try:
            return self._policies[spec]
        except KeyError:
            policy = policy_for(spec, command.namespace, require_run_permission=self.require_run_permission)
            guard = ObjectGuard(policy) if policy is not None and policy.checks_objects else None
            self._policies[spec] = (policy, guard)
            return policy, guard

    def __call__(self, command: Command, call_next: Handler) -> CommandResult:
        context = command.context
        if context is None or getattr(context, "is_system", False):
            return call_next(command)
        policy, guard = self.policy(command)
        if policy is None:
            return call_next(command)
        if not policy.has_permission(context, command):
            raise denied(policy, command, context)
        if guard is not None:
            command.add_guard(guard)
        return call_next(command)


class ObjectGuard:
    """A policy's object check, run by the bus with the loaded aggregate."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def __call__(self, command: Command, aggregate: Aggregate) -> None:
        if not self.policy.has_object_permission(command.context, command, aggregate):
            raise denied(self.policy, command, command.context, aggregate)


# -- system checks (fluvius.E072-E073, W071-W072) --------------------------------------------


def check_authorization(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    from django.core import checks

    errors: list[Any] = []
    specs = [(domain_class, spec) for domain_class in domains for spec in domain_class.commands().values()]
    for domain_class, problem in check_permission_values(specs):
        errors.append(checks.Error(problem, hint="See docs/security.md.", obj=domain_class, id="fluvius.E072"))
    declared = [spec.name for _d, spec in specs if spec.permission is not None]
    try:
        chain = list(fluvius_settings.COMMAND_MIDDLEWARE)
    except ImportError:
        chain = []
    enforced = any(item is AuthorizationMiddleware or isinstance(item, AuthorizationMiddleware)
                   or (isinstance(item, type) and issubclass(item, AuthorizationMiddleware)) for item in chain)
    if (declared or fluvius_settings.COMMAND_PERMISSIONS) and not enforced:
        what = "FLUVIUS['COMMAND_PERMISSIONS'] is on" if fluvius_settings.COMMAND_PERMISSIONS else (
            f"actions declare permissions ({', '.join(sorted(declared)[:5])})")
        errors.append(checks.Warning(
            f"{what} but FLUVIUS['COMMAND_MIDDLEWARE'] has no AuthorizationMiddleware: nothing enforces them.",
            hint="Add 'django_fluvius.security.permissions.AuthorizationMiddleware' to FLUVIUS['COMMAND_MIDDLEWARE'].",
            id="fluvius.W071"))
    seen: dict[str, Any] = {}
    for domain_class, spec in specs:
        permission = command_permission(domain_class, spec)
        if permission is None:
            if fluvius_settings.COMMAND_PERMISSIONS:
                errors.append(checks.Error(
                    f"Command {spec.name!r} of {domain_class.__qualname__} has no resource model to hold its "
                    f"run permission, and FLUVIUS['COMMAND_PERMISSIONS'] is on: nobody but system code could run it.",
                    hint="Give the action a resource with a model, or turn COMMAND_PERMISSIONS off.",
                    obj=domain_class, id="fluvius.E073"))
            continue
        other = seen.setdefault(permission, domain_class)
        if other is not domain_class:
            errors.append(checks.Warning(
                f"Commands {spec.name!r} of {other.__qualname__} and of {domain_class.__qualname__} share the "
                f"permission {permission!r}: granting it grants both.",
                hint="Name one of the commands differently (@action(name=...)).", obj=domain_class,
                id="fluvius.W072"))
    return errors
