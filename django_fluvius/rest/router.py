"""``DomainRouter``: the URLs of one or more domains.

::

    router = DomainRouter()
    router.register(UserDomain)
    urlpatterns = [path("api/", include(router.urls))]

gives, for the namespace ``app-user``:

| method | path                                  | view                            | URL name                      |
|--------|---------------------------------------|---------------------------------|-------------------------------|
| GET    | ``app-user/_meta/``                   | ``MetaView``                    | ``app-user-meta``             |
| GET    | ``app-user/_stream/``                 | ``StreamView`` (SSE)            | ``app-user-stream``           |
| POST   | ``app-user/<create command>/``        | ``CommandViewSet.run`` (201)    | ``app-user-<command>``        |
| POST   | ``app-user/<command>/<aggregate_id>/``| ``CommandViewSet.run`` (200)    | ``app-user-<command>-aggregate`` |
| GET    | ``app-user/<resource>/``              | ``ResourceViewSet.list``        | ``app-user-<resource>-list``  |
| GET    | ``app-user/<resource>/<id>/``         | ``ResourceViewSet.retrieve``    | ``app-user-<resource>-detail``|
| GET    | ``app-user/<resource>/<id>/events/``  | ``ResourceViewSet.events``      | ``app-user-<resource>-events``|

plus, for the resources that opt in (``Domain.__media__`` or ``register(..., media=...)``),
the media routes of ``rest/media.py`` (``<resource>/<id>/media/`` to list and upload,
``.../media/<media_id>/`` and ``.../download/``), ``GET /`` (the namespaces) and, last, a catch-all answering every other
path under the prefix with a JSON 404 that says what is wrong (unknown
namespace, command or resource, a missing aggregate id or trailing slash).
Include the router last under its prefix, or pass ``catch_all=False``.

Create commands also answer ``<command>/<aggregate_id>/`` (201): the client
chooses the new aggregate's id.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.urls import Resolver404, path, re_path, register_converter, resolve
from django.urls.converters import get_converters
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import APIView

from django_fluvius.domain import Domain
from django_fluvius.exceptions import RouteNotFound, UnknownCommand, UnknownDomain, UnknownResource
from django_fluvius.rest.media import MediaViewSet
from django_fluvius.rest.stream import StreamView
from django_fluvius.rest.views import (
    CommandViewSet,
    FluviusAPIMixin,
    MetaView,
    ResourceViewSet,
    url_name,
)

META = "_meta"
STREAM = "_stream"
# Names that become one path segment: letters, digits, "-", "_", "."; not "_"-first
# (the router's own routes start with "_").
URL_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AnySegmentConverter:
    """Any one path segment: a malformed id still reaches the view, which answers a
    JSON 404 naming it (instead of Django's HTML 404 for a path that does not match)."""

    regex = "[^/]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: Any) -> str:
        return str(value)


if "fluvius_id" not in get_converters():
    register_converter(AnySegmentConverter, "fluvius_id")
AGGREGATE_ID = "<fluvius_id:aggregate_id>"
# A command runs on POST; GET opens its page (description and form) in the browsable
# API only, JSON clients still get a 405 (views.CommandViewSet.form).
COMMAND_METHODS = {"get": "form", "post": "run"}

# A DRF view or viewset class (typed Any: the stubs give `type` no `as_view`).
ViewClass = Any


def route_problems(domain_class: Any) -> list[tuple[str, str]]:
    """What keeps a domain from being routed, as (system check id, message); empty if nothing."""
    namespace = getattr(domain_class, "__namespace__", "") or ""
    problems = []
    if not URL_SAFE.match(namespace):
        problems.append(("fluvius.E021", f"namespace {namespace!r} is not usable as a URL segment"))
    commands = set(domain_class.commands()) if getattr(domain_class, "__aggregate__", None) else set()
    resources = set(getattr(domain_class, "__resources__", {}) or {})
    for kind, names in (("command", commands), ("resource", resources)):
        for name in sorted(names):
            if not URL_SAFE.match(name):
                problems.append(("fluvius.E021", f"{kind} {name!r} is not usable as a URL segment"))
    for name in sorted(commands & resources):
        problems.append(("fluvius.E020", f"{name!r} is both a command and a resource (one URL)"))
    return problems


@dataclass
class Registration:
    domain_class: type[Domain]
    command_views: Mapping[str, ViewClass] = field(default_factory=dict)
    resource_views: Mapping[str, ViewClass] = field(default_factory=dict)
    meta_view: ViewClass = MetaView
    # resource -> who may upload (None: the default policy); only these get media routes.
    media: Mapping[str, Any] = field(default_factory=dict)


def _per_name(value: Any, names: list[str], default: ViewClass) -> dict[str, ViewClass]:
    """One class for every name, or a mapping of some names to classes (the rest: default)."""
    if value is None:
        return dict.fromkeys(names, default)
    if isinstance(value, Mapping):
        unknown = set(value) - set(names)
        if unknown:
            raise ImproperlyConfigured(f"No such names to route: {', '.join(sorted(unknown))}.")
        return {name: value.get(name, default) for name in names}
    return dict.fromkeys(names, value)


class DomainRouter:
    """Builds the URL patterns of registered domains (see the module docstring)."""

    command_viewset_class: ViewClass = CommandViewSet
    resource_viewset_class: ViewClass = ResourceViewSet
    meta_view_class: ViewClass = MetaView
    # GET <namespace>/_stream/: the committed events as Server-Sent Events (rest/stream.py);
    # None: no stream routes.
    stream_view_class: ViewClass | None = StreamView
    # Uploads/downloads under <resource>/<id>/media/ (rest/media.py); None: no media routes.
    media_viewset_class: ViewClass | None = MediaViewSet

    def __init__(self, *, catch_all: bool = True, root_view: bool = True):
        self.catch_all = catch_all
        self.root_view = root_view
        self.registry: dict[str, Registration] = {}
        self._urls: list[Any] | None = None

    def register(self, domain: type[Domain] | str, *, command_viewset: Any = None,
                 resource_viewset: Any = None, meta_view: ViewClass | None = None,
                 media: Any = None) -> None:
        """Route a domain class (or its dotted path).

        ``command_viewset`` / ``resource_viewset``: a viewset class for all the
        domain's commands / resources, or a mapping of some names to classes.
        ``media``: the resources with media endpoints, a list or a dict resource -> who
        may upload (overrides the domain's ``__media__``; ``[]`` turns them off).
        """
        domain_class = import_string(domain) if isinstance(domain, str) else domain
        if not (isinstance(domain_class, type) and issubclass(domain_class, Domain)):
            raise ImproperlyConfigured(f"{domain!r} is not a Domain subclass.")
        problems = route_problems(domain_class)
        if problems:
            raise ImproperlyConfigured(
                f"{domain_class.__qualname__} cannot be routed: {'; '.join(m for _, m in problems)}."
            )
        namespace = domain_class.__namespace__
        if namespace in self.registry:
            raise ImproperlyConfigured(f"Namespace {namespace!r} is already registered with this router.")
        self.registry[namespace] = Registration(
            domain_class=domain_class,
            command_views=_per_name(command_viewset, list(domain_class.commands()), self.command_viewset_class),
            resource_views=_per_name(resource_viewset, list(domain_class.__resources__),
                                     self.resource_viewset_class),
            meta_view=meta_view or self.meta_view_class,
            media=media_resources(domain_class, domain_class.__media__ if media is None else media),
        )
        self._urls = None

    @property
    def urls(self) -> list[Any]:
        if self._urls is None:
            self._urls = self.get_urls()
        return self._urls

    def get_urls(self) -> list[Any]:
        patterns: list[Any] = []
        if self.root_view:
            patterns.append(path("", RootView.as_view(router=self), name="fluvius-root"))
        for registration in self.registry.values():
            patterns.extend(self.domain_urls(registration))
        if self.catch_all:
            patterns.append(re_path(r"^(?P<unmatched>.*)$", hidden_view(NotFoundView.as_view(router=self))))
        return patterns

    def domain_urls(self, reg: Registration) -> list[Any]:
        domain = reg.domain_class
        ns = domain.__namespace__
        patterns = [
            path(f"{ns}/{META}/", reg.meta_view.as_view(domain_class=domain,
                                                        resource_views=dict(reg.resource_views)),
                 name=url_name(ns, "meta")),
        ]
        if self.stream_view_class is not None:
            # The stream reads what the resource endpoints read: it asks for their permissions.
            read_views = list(dict.fromkeys(reg.resource_views.values()))
            patterns.append(path(f"{ns}/{STREAM}/", self.stream_view_class.as_view(
                domain_class=domain, read_views=read_views), name=url_name(ns, "stream")))
        for name, spec in domain.commands().items():
            view = reg.command_views[name]
            if spec.create:
                patterns.append(path(
                    f"{ns}/{name}/",
                    view.as_view(COMMAND_METHODS, domain_class=domain, command=name),
                    name=url_name(ns, name),
                ))
            patterns.append(path(
                f"{ns}/{name}/{AGGREGATE_ID}/",
                view.as_view(COMMAND_METHODS, domain_class=domain, command=name, on_aggregate=True),
                name=url_name(ns, name, "aggregate"),
            ))
        for resource, view in reg.resource_views.items():
            base = f"{ns}/{resource}/"
            kwargs = {"domain_class": domain, "resource": resource}
            patterns += [
                path(base, view.as_view({"get": "list"}, **kwargs),
                     name=url_name(ns, resource, "list")),
                path(f"{base}{AGGREGATE_ID}/", view.as_view({"get": "retrieve"}, **kwargs),
                     name=url_name(ns, resource, "detail")),
                path(f"{base}{AGGREGATE_ID}/events/", view.as_view({"get": "events"}, **kwargs),
                     name=url_name(ns, resource, "events")),
            ]
            if self.media_viewset_class is not None and resource in reg.media:
                patterns += self.media_urls(self.media_viewset_class, domain, resource, view,
                                            upload_policy=reg.media[resource])
        return patterns

    @staticmethod
    def media_urls(viewset: type[MediaViewSet], domain_class: Any, resource: str,
                   resource_view: type, *, upload_policy: Any = None) -> list[Any]:
        """The URL patterns of one resource's media (the views are ``rest/media.py``'s)."""
        ns = domain_class.__namespace__
        base = f"{ns}/{resource}/{AGGREGATE_ID}/media/"
        entry = f"{base}<fluvius_id:media_id>/"
        kwargs = {"domain_class": domain_class, "resource": resource, "resource_view": resource_view,
                  "upload_policy": upload_policy}
        return [
            path(base, viewset.as_view({"get": "list", "post": "upload"}, **kwargs),
                 name=url_name(ns, resource, "media")),
            path(entry, viewset.as_view({"get": "retrieve"}, **kwargs),
                 name=url_name(ns, resource, "media-detail")),
            path(f"{entry}download/", viewset.as_view({"get": "download"}, **kwargs),
                 name=url_name(ns, resource, "media-download")),
        ]


def media_resources(domain_class: Any, declared: Any) -> dict[str, Any]:
    """``__media__`` / ``media=`` as resource -> upload policy (None: the default)."""
    if not declared:
        return {}
    found = dict(declared) if isinstance(declared, Mapping) else dict.fromkeys(
        [declared] if isinstance(declared, str) else declared)
    unknown = set(found) - set(domain_class.__resources__)
    if unknown:
        raise ImproperlyConfigured(f"{domain_class.__qualname__}: media for {', '.join(sorted(unknown))}, "
                                   f"which are not among its __resources__.")
    return found


def hidden_view(view: Any) -> Any:
    """The view without the ``cls`` DRF looks for: the browsable API's breadcrumbs skip it
    (instead of naming every path prefix "Not found")."""

    @functools.wraps(view, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
    def catch_all(request: Any, *args: Any, **kwargs: Any) -> Any:
        return view(request, *args, **kwargs)

    return csrf_exempt(catch_all)


class RouterView(FluviusAPIMixin, APIView):
    """The router's own views: not part of any domain, nor of the schema."""

    router: DomainRouter = None  # type: ignore[assignment]  # set through as_view(router=...)
    schema = None


class RootView(RouterView):
    """``GET /``: the routed namespaces and where their ``_meta`` is."""

    def get_view_name(self) -> str:
        return "Domains"

    def get(self, request: Any) -> Response:
        namespaces = {
            ns: self.reverse_route(url_name(ns, "meta")) or f"{ns}/{META}/"
            for ns in self.router.registry
        }
        return Response({"namespaces": namespaces})


class NotFoundView(RouterView):
    """Every other path under the router's prefix: a JSON 404 saying what is wrong."""

    def get_view_name(self) -> str:
        return "Not found"

    def answer(self, request: Any, *args: Any, unmatched: str = "", **kwargs: Any) -> Any:
        raise self.not_found(unmatched, request)

    get = post = put = patch = delete = options = http_method_not_allowed = answer

    def perform_content_negotiation(self, request: Any, force: bool = False) -> Any:
        # The 404 is JSON whatever was asked for (an EventSource asks for text/event-stream).
        return super().perform_content_negotiation(request, force=True)

    def not_found(self, unmatched: str, request: Any) -> Exception:
        if not request.path.endswith("/"):
            try:
                resolve(request.path + "/")
            except Resolver404:
                pass
            else:
                return RouteNotFound(f"{request.path} needs a trailing slash: {request.path}/",
                                     code="missing_trailing_slash")
        segments = [s for s in unmatched.split("/") if s]
        base = request.path[: len(request.path) - len(unmatched)]  # where the router is included
        registry = self.router.registry
        if not segments:
            return RouteNotFound()
        namespace = segments[0]
        if namespace not in registry:
            known = ", ".join(sorted(registry)) or "none"
            return UnknownDomain(f"No domain has the namespace {namespace!r} (known: {known}).")
        domain = registry[namespace].domain_class
        here = f"{base}{namespace}"
        if len(segments) == 1:
            return RouteNotFound(f"Nothing at the root of {namespace!r}; see {here}/{META}/.")
        name = segments[1]
        commands = domain.commands()
        if name in commands:
            spec = commands[name]
            if len(segments) == 2 and not spec.create:
                return RouteNotFound(
                    f"Command {name!r} runs on an existing aggregate: POST {here}/{name}/<aggregate_id>/.",
                    code="aggregate_id_required",
                )
            return RouteNotFound(f"No such route for command {name!r}: POST {here}/{name}/"
                                 f"{'' if spec.create else '<aggregate_id>/'}.")
        if name in domain.__resources__:
            return RouteNotFound(f"No such route for resource {name!r}: GET {here}/{name}/, "
                                 f"{here}/{name}/<id>/ or {here}/{name}/<id>/events/.")
        if request.method == "POST":
            known = ", ".join(sorted(commands)) or "none"
            return UnknownCommand(f"Domain {namespace!r} has no command {name!r} (known: {known}).")
        known = ", ".join(sorted(domain.__resources__)) or "none"
        return UnknownResource(f"Domain {namespace!r} has no resource {name!r} (known: {known}).")
