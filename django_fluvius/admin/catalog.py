"""The domain map in the admin: one page listing the domains, one drawn map per domain.

What each page draws comes from ``ops.catalog.domain_map()`` (the registered code),
as HTML and CSS rendered on the server: no script, no CDN, so the map shows on a
machine without internet and in a screenshot. It hangs on the admin index as the
``DomainMap`` proxy model (``django_fluvius.view_domainmap``).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _

from django_fluvius.admin.base import ADMIN_CSS, ReadOnlyAdmin, admin_url, error_response
from django_fluvius.exceptions import UnknownDomain
from django_fluvius.ops.catalog import domain_map


class DomainMapAdmin(ReadOnlyAdmin):
    map_template = "admin/django_fluvius/domain_map.html"

    class Media:
        css = {"all": (ADMIN_CSS,)}

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path("", self.admin_site.admin_view(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("<str:namespace>/", self.admin_site.admin_view(self.domain_view),
                 name="{}_{}_domain".format(*info)),
        ]

    def _context(self, request, title, maps, current=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        request.current_app = self.admin_site.name
        info = self.opts.app_label, self.opts.model_name
        namespaces = [m.namespace for m in domain_map()] if current else [m.namespace for m in maps]
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "maps": maps,
            "current": current,
            "media": self.media,
            "index_url": admin_url(self.admin_site, "{}_{}_changelist".format(*info)),
            "domain_urls": {ns: admin_url(self.admin_site, "{}_{}_domain".format(*info), ns)
                            for ns in namespaces},
        }

    def changelist_view(self, request, extra_context=None):
        context = self._context(request, _("Domain map"), domain_map())
        return TemplateResponse(request, self.map_template, {**context, **(extra_context or {})})

    def domain_view(self, request, namespace):
        maps = [m for m in domain_map() if m.namespace == namespace]
        if not maps:
            if not self.has_view_or_change_permission(request):
                raise PermissionDenied
            return error_response(request, self.admin_site, UnknownDomain(
                f"No domain has the namespace {namespace!r}."), title=_("Domain map"),
                back_url=admin_url(self.admin_site, "django_fluvius_domainmap_changelist"))
        context = self._context(request, _("Domain map of %(namespace)s") % {"namespace": namespace},
                                maps, current=namespace)
        return TemplateResponse(request, self.map_template, context)
