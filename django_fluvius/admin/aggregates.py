"""Admin for a domain's resources: rows are read, and changed only by commands.

``AggregateAdmin`` is a ``ModelAdmin`` for a resource's projection model. Rows
cannot be added, edited or deleted in the admin (the read model follows the
event store, never the other way round); instead the commands listed in
``commands`` become

* admin actions on the list, run on every selected aggregate, and buttons on a
  row's page, for commands that act on an existing aggregate;
* buttons on the list (where "Add" would be), for ``create=True`` commands.

Each asks for its payload with a form built from the action's signature and goes
through ``Domain.create_command`` / ``process_command`` with a ``DomainContext``
of the admin user, so validation, business rules, the command log and every
command-bus middleware apply exactly as for any other caller::

    @admin.register(User)
    class UserAdmin(AggregateAdmin):
        list_display = ("name", "email", "active", "version")
        commands = ["create-user", "rename-user", "deactivate-user"]   # or "__all__"

Running a command needs the model's ``add`` permission (create commands) or
``change`` permission (the others) unless ``command_permissions`` names another
one for that command; with ``FLUVIUS['COMMAND_PERMISSIONS']`` on, the command's
own ``run_<command>`` permission (permissions.py). The command-bus middleware
checks again whatever the page shows (the admin is one more caller).

The rows listed are the rows the admin user may read through the domain
(``StateManager.scope``): with tenancy on, the user's tenant only; another
tenant's row is not found.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from django_fluvius.admin.base import (
    ADMIN_CSS,
    admin_url,
    command_label,
    error_response,
    time_column,
)
from django_fluvius.admin.forms import command_form_class
from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    FluviusError,
    TenantRequired,
    UnknownCommand,
)
from django_fluvius.middleware import context_from_request
from django_fluvius.registry import domains, resolve_model
from django_fluvius.security.permissions import command_permission
from django_fluvius.write.aggregate import ActionSpec

ACTION_PREFIX = "fluvius_command__"
# Selecting more than this many aggregates for one command is refused (each runs in its own transaction).
MAX_BULK = 500


class AggregateAdmin(admin.ModelAdmin):
    """A resource's projection model in the admin, changed through commands only."""

    # Command keys to expose, or "__all__" for every command applying to the resource.
    commands: list[str] | tuple[str, ...] | str = ()
    # Explicit domain class and resource name; found from the model when left unset.
    domain = None
    resource: str | None = None
    # Command key -> "app_label.codename" of the permission that command needs.
    command_permissions: dict[str, str] = {}
    command_form_template = "admin/django_fluvius/command_form.html"
    change_form_template = "admin/django_fluvius/aggregate/change_form.html"
    change_list_template = "admin/django_fluvius/aggregate/change_list.html"

    class Media:
        css = {"all": (ADMIN_CSS,)}

    # -- the domain behind the model ------------------------------------------

    def get_domain(self):
        """(domain class, resource) of this model, from the attributes or the registry."""
        if self.domain is not None:
            resource = self.resource or next(
                (name for name, model in self.domain.__resources__.items()
                 if resolve_model(model) is self.model), self.domain.default_resource())
            return self.domain, resource
        for domain in domains:
            for name, model in getattr(domain, "__resources__", {}).items():
                if (self.resource in (None, name)) and resolve_model(model) is self.model:
                    return domain, name
        raise UnknownCommand(f"No registered domain keeps {self.opts.label} as a resource; "
                             f"set {type(self).__name__}.domain.")

    def command_specs(self) -> dict[str, ActionSpec]:
        """The exposed commands, in the order ``commands`` lists them."""
        domain, resource = self.get_domain()
        available = {k: s for k, s in domain.commands().items() if s.applies_to(resource)}
        if self.commands == "__all__":
            return available
        specs = {}
        for key in self.commands:
            if key not in available:
                known = ", ".join(sorted(available)) or "none"
                raise UnknownCommand(f"{type(self).__name__}.commands lists {key!r}, which is not a "
                                     f"command of the {resource!r} resource (known: {known}).")
            specs[key] = available[key]
        return specs

    def command_permission(self, spec: ActionSpec) -> str:
        if spec.name in self.command_permissions:
            return self.command_permissions[spec.name]
        if fluvius_settings.COMMAND_PERMISSIONS:
            domain, _resource = self.get_domain()
            own = command_permission(domain, spec)
            if own is not None:
                return own
        action = "add" if spec.create else "change"
        return f"{self.opts.app_label}.{action}_{self.opts.model_name}"

    def has_command_permission(self, request, spec: ActionSpec) -> bool:
        return request.user.is_active and request.user.has_perm(self.command_permission(spec))

    def allowed_commands(self, request, *, create: bool) -> list[ActionSpec]:
        try:
            specs = self.command_specs()
        except UnknownCommand as error:  # misconfigured: say so on the page, show the rows anyway
            if not getattr(request, "_fluvius_warned", False):
                request._fluvius_warned = True
                self.message_user(request, error.message, messages.ERROR)
            return []
        return [s for s in specs.values() if s.create == create and self.has_command_permission(request, s)]

    def domain_for(self, request):
        domain_class, _resource = self.get_domain()
        return domain_class(context_from_request(request, domain_class.__namespace__, source="admin"))

    # -- times to the second ----------------------------------------------------

    def time_columns(self) -> dict[str, str]:
        """Each DateTimeField of the model -> a column showing it to the second.

        Django's format stops at the minute, and two commands a few seconds apart
        look simultaneous; the columns are added to the class once, sortable by the field.
        """
        columns = {}
        for field in self.model._meta.concrete_fields:
            if isinstance(field, models.DateTimeField):
                name = f"{field.name}_time"
                if not hasattr(type(self), name):
                    setattr(type(self), name, time_column(field.name, field.verbose_name))
                columns[field.name] = name
        return columns

    def _with_times(self, names):
        columns = self.time_columns()
        return [columns.get(n, n) if isinstance(n, str) else n for n in names]

    def get_list_display(self, request):
        return self._with_times(super().get_list_display(request))

    def get_list_display_links(self, request, list_display):
        links = super().get_list_display_links(request, list_display)
        return self._with_times(links) if links else links

    def get_fields(self, request, obj=None):
        return list(dict.fromkeys(self._with_times(super().get_fields(request, obj))))

    def get_readonly_fields(self, request, obj=None):
        return [*super().get_readonly_fields(request, obj), *self.time_columns().values()]

    # -- the rows the admin user may read ----------------------------------------

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        try:
            _domain_class, resource = self.get_domain()
        except UnknownCommand:  # not a registered resource: shown as a plain model
            return queryset
        try:
            return self.domain_for(request).statemgr.scope(resource, queryset)
        except TenantRequired as error:
            if not getattr(request, "_fluvius_warned_tenant", False):
                request._fluvius_warned_tenant = True
                self.message_user(request, error.message, messages.WARNING)
            return queryset.none()

    # -- the event store is the truth: no direct edits -------------------------

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    # -- actions on the list ---------------------------------------------------

    def get_actions(self, request, action_location: Any = None):
        # Django 6.1 asks per location (the list, or one row's page); the row page has its buttons.
        if action_location is None:
            actions = super().get_actions(request)
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[call-arg]
        if self.actions is None or getattr(action_location, "value", "CHANGE_LIST") != "CHANGE_LIST":
            return actions
        for spec in self.allowed_commands(request, create=False):
            name = ACTION_PREFIX + spec.name
            actions[name] = (self._action_for(spec), name, _("%(command)s…") % {"command": command_label(spec.name)})
        return actions

    @staticmethod
    def _action_for(spec: ActionSpec):
        def run(modeladmin, request, queryset):
            return modeladmin.command_action(request, queryset, spec)

        run.__name__ = ACTION_PREFIX + spec.name.replace("-", "_")
        return run

    def command_action(self, request, queryset, spec: ActionSpec):
        """Ask for the payload (and confirmation), then run the command on each selected aggregate."""
        if not self.has_command_permission(request, spec):
            raise PermissionDenied
        objects = list(queryset[: MAX_BULK + 1])
        if len(objects) > MAX_BULK:
            self.message_user(request, _("Select at most %(n)d rows for one command.") % {"n": MAX_BULK},
                              messages.ERROR)
            return None
        form_class = command_form_class(spec)
        form = form_class(request.POST if "_fluvius_run" in request.POST else None)
        if form.is_bound and form.is_valid():
            done, failed = self._run_on_each(request, spec, form, objects)
            if form.errors:  # the payload itself was refused: nothing ran, show the form again
                return self._render_command_form(request, spec, form, objects=objects, bulk=True)
            if done:
                self.message_user(request, ngettext(
                    "%(command)s: done on %(n)d %(name)s.", "%(command)s: done on %(n)d %(names)s.", done)
                    % {"command": command_label(spec.name), "n": done, "name": self.opts.verbose_name,
                       "names": self.opts.verbose_name_plural}, messages.SUCCESS)
            for obj, error in failed:
                self.message_user(request, _("%(command)s on %(obj)s: %(error)s")
                                  % {"command": command_label(spec.name), "obj": obj, "error": error.message},
                                  messages.ERROR)
            return None
        return self._render_command_form(request, spec, form, objects=objects, bulk=True)

    def _run_on_each(self, request, spec, form, objects):
        domain = self.domain_for(request)
        payload = form.payload()
        done: int = 0
        failed: list[tuple[Any, FluviusError]] = []
        for index, obj in enumerate(objects):
            try:
                command = domain.create_command(spec.name, payload, aggregate_id=obj.pk)
            except CommandValidationError as error:
                if index == 0 and set(error.errors) - {"aggregate_id"}:
                    form.add_command_errors(error.errors)
                    return 0, []
                failed.append((obj, error))
                continue
            try:
                domain.process_command(command)
            except FluviusError as error:
                failed.append((obj, error))
            else:
                done += 1
        return done, failed

    # -- one command, from a button -------------------------------------------

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("command/<str:key>/", wrap(self.command_view), name="{}_{}_command".format(*info)),
            path("<path:object_id>/command/<str:key>/", wrap(self.command_view),
                 name="{}_{}_object_command".format(*info)),
            *super().get_urls(),
        ]

    def command_view(self, request, key, object_id=None):
        request.current_app = self.admin_site.name
        changelist_url = admin_url(self.admin_site, f"{self.opts.app_label}_{self.opts.model_name}_changelist")
        try:
            spec = self.command_specs().get(key)
            if spec is None:
                raise UnknownCommand(f"{key!r} is not a command of this admin page.")
            if not self.has_command_permission(request, spec):
                raise PermissionDenied
            obj = None
            if spec.create and object_id is not None:
                raise UnknownCommand(f"{key!r} creates an aggregate; it does not run on one.")
            if not spec.create:
                if object_id is None:
                    raise UnknownCommand(f"{key!r} runs on an existing {self.opts.verbose_name}.")
                obj = self.get_object(request, unquote(object_id))
                if obj is None:
                    raise AggregateNotFound(f"No {self.opts.verbose_name} with id {unquote(object_id)!r}.")
        except FluviusError as error:
            return error_response(request, self.admin_site, error, title=_("Run a command"),
                                  back_url=changelist_url)

        form_class = command_form_class(spec)
        form = form_class(request.POST if request.method == "POST" else None)
        if form.is_bound and form.is_valid():
            response = self._run_one(request, spec, form, obj)
            if response is not None:
                return response
        return self._render_command_form(request, spec, form, obj=obj)

    def _run_one(self, request, spec, form, obj):
        domain = self.domain_for(request)
        expected = request.POST.get("_expected_version") or None
        try:
            command = domain.create_command(spec.name, form.payload(),
                                            aggregate_id=obj.pk if obj is not None else None,
                                            expected_version=expected)
            result = domain.process_command(command)
        except CommandValidationError as error:
            form.add_command_errors(error.errors)
            return None
        except ConcurrencyConflict as error:
            form.add_error(None, _("%(message)s Someone changed it since this page was opened: "
                                   "reload it and try again.") % {"message": error.message})
            return None
        except FluviusError as error:
            form.add_error(None, error.message)
            return None
        self.message_user(request, _("%(command)s: done, %(resource)s %(id)s is at version %(v)d.") % {
            "command": command_label(spec.name), "resource": result.resource, "id": result.aggregate_id,
            "v": result.version}, messages.SUCCESS)
        info = self.opts.app_label, self.opts.model_name
        target = None
        if self.model._default_manager.filter(pk=result.aggregate_id).exists():
            target = admin_url(self.admin_site, "{}_{}_change".format(*info), quote(result.aggregate_id))
        return HttpResponseRedirect(target or admin_url(self.admin_site, "{}_{}_changelist".format(*info))
                                    or "../")

    def _render_command_form(self, request, spec, form, *, obj=None, objects=(), bulk=False):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": command_label(spec.name),
            "spec": spec,
            "label": command_label(spec.name),
            "form": form,
            "errors": helpers.AdminErrorList(form, []),
            "object": obj,
            "objects": objects,
            "bulk": bulk,
            "action_name": ACTION_PREFIX + spec.name,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "expected_version": getattr(obj, "version", None) if obj is not None else None,
            "changelist_url": admin_url(self.admin_site,
                                        f"{self.opts.app_label}_{self.opts.model_name}_changelist"),
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.command_form_template, context)

    # -- buttons on the pages -------------------------------------------------

    def changelist_view(self, request, extra_context=None):
        info = self.opts.app_label, self.opts.model_name
        extra: dict[str, Any] = {"fluvius_create_commands": [
            (spec, admin_url(self.admin_site, "{}_{}_command".format(*info), spec.name), command_label(spec.name))
            for spec in self.allowed_commands(request, create=True)
        ]}
        return super().changelist_view(request, {**extra, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        info = self.opts.app_label, self.opts.model_name
        extra: dict[str, Any] = {
            "fluvius_commands": [
                (spec, admin_url(self.admin_site, "{}_{}_object_command".format(*info), object_id, spec.name),
                 command_label(spec.name))
                for spec in self.allowed_commands(request, create=False)
            ],
            "fluvius_timeline_url": admin_url(self.admin_site, "django_fluvius_event_timeline",
                                              unquote(object_id))
            if request.user.has_perm("django_fluvius.view_event") else None,
        }
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})
