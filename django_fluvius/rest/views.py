"""The viewsets behind ``DomainRouter``: commands, resources and ``_meta``.

Each is an ordinary DRF view: subclass it to change ``permission_classes``,
``authentication_classes``, ``throttle_classes``, ``pagination_class``,
``serializer_class`` ... and hand the subclass to ``DomainRouter.register``.
The router builds one view per command and per resource with ``as_view``
keyword arguments (``domain_class``, ``command`` / ``resource``), so each has
its own serializer, form in the browsable API and operation in the schema.

Every response carries ``X-Correlation-ID``; every error is the JSON body of
``django_fluvius.rest.errors`` (the views use that handler whatever
``REST_FRAMEWORK['EXCEPTION_HANDLER']`` says).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db.models import Max
from django.http import QueryDict
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import escape
from django.utils.safestring import mark_safe
from drf_spectacular.utils import extend_schema
from rest_framework import mixins
from rest_framework.exceptions import MethodNotAllowed
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import BrowsableAPIRenderer
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.viewsets import GenericViewSet

from django_fluvius.conf import fluvius_settings
from django_fluvius.domain import Domain
from django_fluvius.exceptions import (
    AggregateNotFound,
    CommandValidationError,
    ConcurrencyConflict,
    InvalidRequest,
    PreconditionFailed,
    RequestTooLarge,
)
from django_fluvius.middleware import CORRELATION_HEADER, context_from_request, correlation_id
from django_fluvius.ops.catalog import first_paragraph, label
from django_fluvius.read import consistency
from django_fluvius.read.projections import row_values
from django_fluvius.read.state import parse_aggregate_id
from django_fluvius.rest.errors import exception_handler
from django_fluvius.rest.filters import ResourceFilterBackend
from django_fluvius.rest.idempotency import IdempotencyStore, fingerprint, idempotency_key, run_once
from django_fluvius.rest.pagination import ResourcePagination
from django_fluvius.rest.parsers import read_chunked_body, safe_parsers
from django_fluvius.rest.schema import CommandSchema, MetaSchema, ResourceSchema, json_schema
from django_fluvius.rest.serializers import EventSerializer, resource_serializer
from django_fluvius.write.aggregate import ActionSpec
from django_fluvius.write.bus import CommandResult
from django_fluvius.write.payload import check_payload

# The feed position of the last event a response shows (commands, events endpoints), and
# the position a read must reflect (read/consistency.py; docs/consistency.md).
POSITION_HEADER = "Fluvius-Position"
MIN_POSITION_HEADER = "Fluvius-Min-Position"
MIN_POSITION_PARAM = "min_position"

# A strong ETag of this API: a quoted version, "3". A bare 3 is accepted too.
_ETAG = re.compile(r'^\s*(?:"(\d{1,18})"|(\d{1,18}))\s*$')
_VERSION = re.compile(r"^\d{1,18}$")
CSRF_FIELD = "csrfmiddlewaretoken"


def describe_as_text(paragraphs: list[str], html: bool) -> str:
    """A view's description for people: plain paragraphs (escaped for the browsable API).

    Built from the domain's and the action's docstrings, never from the view
    class's own docstring, which documents the code (and is reStructuredText).
    """
    paragraphs = [p for p in paragraphs if p]
    if not html:
        return "\n\n".join(paragraphs)
    return mark_safe("".join(f"<p>{escape(p)}</p>" for p in paragraphs))  # noqa: S308 - escaped above


def is_browsable(request: Any) -> bool:
    return isinstance(getattr(request, "accepted_renderer", None), BrowsableAPIRenderer)


def etag(version: int) -> str:
    return f'"{version}"'


def url_name(namespace: str, name: str, kind: str | None = None) -> str:
    """The URL name the router gives a route: ``app-user-user-detail``, ``app-user-create-user``."""
    return f"{namespace}-{name}" + (f"-{kind}" if kind else "")


def check_body_size(request: Any) -> None:
    """413 for a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (DRF's parsers read the stream
    directly, past Django's own check). File uploads (multipart) are Django's business."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    meta = request.META
    raw = meta.get("CONTENT_LENGTH") or "0"
    try:
        length = int(raw)
    except ValueError:
        raise InvalidRequest("The Content-Length header is not a number.",
                             errors={"Content-Length": [f"{raw[:30]!r} is not a number."]}) from None
    if limit is None or length <= limit:
        return
    if meta.get("CONTENT_TYPE", "").startswith("multipart/"):
        return
    raise RequestTooLarge(
        f"The request body has {length} bytes, more than the {limit} this server accepts "
        f"(DATA_UPLOAD_MAX_MEMORY_SIZE)."
    )


# The mixin is used with DRF views only: type it as one (at run time it stays a plain class).
if TYPE_CHECKING:
    _ViewBase = APIView
else:
    _ViewBase = object


class FluviusAPIMixin(_ViewBase):
    """What every view of the REST face shares: its domain, errors, correlation id."""

    # Set by the router through as_view(domain_class=...); DRF wants the attribute to exist.
    domain_class: type[Domain] = None  # type: ignore[assignment]

    def get_exception_handler(self):
        return exception_handler

    def get_parsers(self) -> list[Any]:
        return safe_parsers(super().get_parsers())

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        read_chunked_body(request._request)
        check_body_size(request)
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response[CORRELATION_HEADER] = correlation_id(request)
        return response

    @property
    def namespace(self) -> str:
        return self.domain_class.__namespace__

    def get_domain_context(self) -> Any:
        return context_from_request(self.request, self.namespace)

    def get_domain(self) -> Domain:
        """The domain, built once per request with the request's context."""
        domain = getattr(self, "_domain", None)
        if domain is None:
            domain = self._domain = self.domain_class(self.get_domain_context())
        return domain

    def reverse_route(self, name: str, **kwargs: Any) -> str | None:
        """The path of one of the router's routes (None if it is not routed)."""
        match = getattr(self.request, "resolver_match", None)
        prefix = f"{match.namespace}:" if match is not None and match.namespace else ""
        try:
            return reverse(prefix + name, kwargs=kwargs or None)
        except NoReverseMatch:
            return None


# -- event metadata ------------------------------------------------------------


def metadata_filter(request: Any) -> Any:
    """What of an event's metadata this request may see: a function ``metadata -> metadata``.

    Every reader sees the keys of ``FLUVIUS['EXPOSED_METADATA']`` (correlation and
    command ids ...); who acted and from where (``user``, ``username``,
    ``client_address``, ``tenant`` ...) only a user holding
    ``FLUVIUS['EVENT_METADATA_PERMISSION']`` sees. Reading an aggregate is not
    knowing who changed it.
    """
    exposed = fluvius_settings.EXPOSED_METADATA
    permission = fluvius_settings.EVENT_METADATA_PERMISSION
    user = getattr(request, "user", None)
    if exposed is None or (permission and user is not None and user.has_perm(permission)):
        return lambda metadata: metadata
    keep = frozenset(exposed)
    return lambda metadata: {k: v for k, v in (metadata or {}).items() if k in keep}


def with_visible_metadata(events: Any, request: Any) -> list[dict[str, Any]]:
    visible = metadata_filter(request)
    return [{**event, "metadata": visible(event.get("metadata"))} for event in events]


# -- commands ------------------------------------------------------------------


def parse_if_match(request: Any) -> int | None:
    """The version ``If-Match`` asks for; None when absent or ``*`` (any version)."""
    value = request.META.get("HTTP_IF_MATCH")
    if value is None or value.strip() == "*":
        return None
    match = _ETAG.match(value)
    if match is None:
        raise InvalidRequest(
            'If-Match must be one ETag of this API: the quoted version, such as "3", or *.',
            code="invalid_if_match",
            errors={"If-Match": [f"{value[:50]!r} is not a version ETag."]},
        )
    return int(match.group(1) or match.group(2))


class CommandViewSet(FluviusAPIMixin, GenericViewSet):
    """``POST /<namespace>/<command>/[<aggregate_id>/]``: validate and run one command.

    201 for a create command, 200 otherwise; the body is ``CommandResult.as_dict()``
    (``aggregate_id``, ``version``, ``events``, ``state``) and ``ETag`` is the new
    version. ``If-Match`` sets the expected version (412 when stale); a race lost
    at commit is 409; ``Idempotency-Key`` makes a retry return the first response.
    """

    command: str = None  # type: ignore[assignment]  # set by the router through as_view()
    on_aggregate: bool = False
    schema = CommandSchema()

    def get_spec(self) -> ActionSpec:
        return self.domain_class.commands()[self.command]

    def get_serializer_class(self) -> Any:
        return self.get_spec().serializer_class

    def get_view_name(self) -> str:
        return f"{label(self.command)} ({self.namespace})"

    def get_view_description(self, html: bool = False) -> str:
        spec = self.get_spec()
        target = (f"a new {spec.resources[0] if spec.resources else 'aggregate'}" if spec.create
                  else "the aggregate in the address")
        return describe_as_text([
            spec.description or first_paragraph(spec.func.__doc__),
            f"POST the payload below to run “{spec.name}” on {target}; it records the event "
            f"“{spec.evt_key}”.",
        ], html)

    @property
    def allowed_methods(self) -> list[str]:
        """``Allow`` names GET only to the browsable API, the one client its page is for.

        A JSON client's GET is a 405, and the schema leaves GET out: advertising it would
        contradict both (schemathesis's ST205 says so).
        """
        methods = super().allowed_methods
        request = getattr(self, "request", None)
        if request is not None and is_browsable(request):
            return methods
        return [method for method in methods if method not in ("GET", "HEAD")]

    def finalize_response(self, request: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        # DRF computes Allow before content negotiation; the renderer is known only now.
        response["Allow"] = ", ".join(self.allowed_methods)
        return response

    @extend_schema(exclude=True)
    def form(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        """The browsable API's page of a command: what it does and its form (JSON clients: 405).

        A command runs on POST only; this page exists so that following a command's
        link in the browsable API opens on the form rather than a 405 banner.
        """
        if not is_browsable(request):
            raise MethodNotAllowed(request.method)
        spec = self.get_spec()
        return Response({"command": spec.name, "create": spec.create, "evt_key": spec.evt_key,
                         "payload": json_schema(spec.serializer_class)})

    def get_payload(self, request: Any) -> Any:
        data = request.data
        if data is None:  # a JSON `null` body (an empty body is already {}): not "no fields"
            raise CommandValidationError({"non_field_errors": ["Expected a JSON object of fields, got null."]})
        if isinstance(data, QueryDict):  # a form (browsable API): drop the CSRF token
            data = data.copy()
            data.pop(CSRF_FIELD, None)
        return data

    def run(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        pk = parse_aggregate_id(aggregate_id) if aggregate_id is not None else None
        expected_version = parse_if_match(request)
        if expected_version is not None and self.get_spec().create:
            # Also with the client's own id (<command>/<id>/): a create has no version to match.
            raise InvalidRequest("If-Match applies to a command on an existing aggregate.",
                                 code="invalid_if_match",
                                 errors={"If-Match": ["Not allowed on a create command."]})
        key = idempotency_key(request)
        payload = self.get_payload(request)
        # Before anything walks or hashes it (the Idempotency-Key's fingerprint): too deep,
        # NUL or lone surrogates are a 400 here.
        check_payload(payload)
        if key is None:
            return self.command_response(self.execute(payload, pk, expected_version))
        domain = self.get_domain()
        body = {k: payload.getlist(k) for k in payload} if isinstance(payload, QueryDict) else payload
        return run_once(
            store=IdempotencyStore(domain.store.using),
            user=domain.context.user_id,
            tenant=domain.context.tenant or "",
            key=key,
            print_=fingerprint(self.namespace, self.command, str(pk or ""), expected_version, body),
            namespace=self.namespace,
            command=self.command,
            aggregate_id=pk,
            run=lambda: self.command_response(self.execute(payload, pk, expected_version, key)),
        )

    def execute(self, payload: Any, aggregate_id: Any, expected_version: int | None,
                key: str | None = None) -> CommandResult:
        domain = self.get_domain()
        command = domain.create_command(self.command, payload, aggregate_id=aggregate_id,
                                        expected_version=expected_version, idempotency_key=key)
        try:
            return domain.process_command(command)
        except ConcurrencyConflict as exc:
            if expected_version is not None and exc.code == "stale_version":
                raise PreconditionFailed(
                    f"If-Match asked for version {expected_version} of {command.aggregate_id}, "
                    f"but it is at version {exc.actual_version}.",
                    expected_version=expected_version, actual_version=exc.actual_version,
                ) from exc
            raise

    def command_response(self, result: CommandResult) -> Response:
        created = self.get_spec().create
        body = result.as_dict()
        body["events"] = with_visible_metadata(body["events"], self.request)
        response = Response(body, status=201 if created else 200)
        response["ETag"] = etag(result.version)
        positions = [e.position for e in result.events if e.position is not None]
        if positions:
            response[POSITION_HEADER] = str(max(positions))
        if created:
            location = self.reverse_route(url_name(self.namespace, result.resource, "detail"),
                                          aggregate_id=result.aggregate_id)
            if location:
                response["Location"] = location
        return response


# -- resources -----------------------------------------------------------------


class StrictLimitOffsetPagination(LimitOffsetPagination):
    """``?limit=`` (1..max_limit) and ``?offset=``, as DRF's class, but a bad limit or
    offset is a 400 (DRF silently ignores it), and the schema says the bounds."""

    default_limit = 100
    max_limit = 1000

    def get_limit(self, request: Any) -> int:
        limit = _non_negative_int(request, self.limit_query_param, minimum=1)
        return self.default_limit if limit is None else min(limit, self.max_limit)

    def get_offset(self, request: Any) -> int:
        return _non_negative_int(request, self.offset_query_param) or 0

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {"name": self.limit_query_param, "required": False, "in": "query",
             "description": f"How many per page (default {self.default_limit}, at most {self.max_limit}).",
             "schema": {"type": "integer", "minimum": 1}},
            {"name": self.offset_query_param, "required": False, "in": "query",
             "description": "How many to skip.",
             "schema": {"type": "integer", "minimum": 0}},
        ]


class EventPagination(StrictLimitOffsetPagination):
    """Pages of an aggregate's event stream, oldest first."""


def min_position(request: Any) -> int | None:
    """The position a read must reflect: ``Fluvius-Min-Position`` or ``?min_position=`` (the
    larger if both); None if neither. ``InvalidPosition`` (400) for anything but an integer >= 0."""
    found = [consistency.parse_position(raw, name) for name, raw in (
        (MIN_POSITION_HEADER, request.META.get("HTTP_FLUVIUS_MIN_POSITION")),
        (MIN_POSITION_PARAM, request.query_params.get(MIN_POSITION_PARAM))) if raw is not None]
    return max(found) if found else None


def _non_negative_int(request: Any, name: str, *, minimum: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _VERSION.match(raw) or int(raw) < minimum:
        raise InvalidRequest(f"The {name} parameter must be an integer >= {minimum}.",
                             code="invalid_parameter", errors={name: [f"{raw[:50]!r} is not allowed."]})
    return int(raw)


class ResourceViewSet(FluviusAPIMixin, mixins.ListModelMixin, GenericViewSet):
    """``GET /<namespace>/<resource>/``, ``.../<id>/`` and ``.../<id>/events/``.

    Lists are filtered by ``ResourceFilterBackend`` and paged by
    ``ResourcePagination``; an item carries ``ETag: "<version>"`` and answers
    ``?version=N`` / ``?at=<ISO time>`` from the event store (time travel).
    """

    resource: str = None  # type: ignore[assignment]  # set by the router through as_view()
    filter_backends = [ResourceFilterBackend]
    pagination_class = ResourcePagination
    event_pagination_class = EventPagination
    lookup_url_kwarg = "aggregate_id"
    schema = ResourceSchema()

    @property
    def model(self) -> Any:
        return self.domain_class.resource_model(self.resource)

    def get_view_name(self) -> str:
        suffix = {"retrieve": " item", "events": " events"}.get(getattr(self, "action", ""), "")
        return f"{self.namespace}: {self.resource}{suffix}"

    def get_view_description(self, html: bool = False) -> str:
        domain = self.domain_class
        about = first_paragraph(domain.__doc__)
        action = getattr(self, "action", "list")
        if action == "events":
            return describe_as_text([f"The events of one {self.resource}, oldest first: what happened "
                                     f"to it, by which command."], html)
        if action == "retrieve":
            commands = [f"{label(name)} — POST …/{self.namespace}/{name}/<id>/ — "
                        f"{spec.description or first_paragraph(spec.func.__doc__) or spec.evt_key}"
                        for name, spec in domain.commands().items()
                        if not spec.create and spec.applies_to(self.resource)]
            return describe_as_text([
                about,
                f"One {self.resource} as it is now; ?version=N or ?at=<ISO time> shows it as it was.",
                *(["Commands on it:", *commands] if commands else []),
            ], html)
        creates = [label(name) for name, spec in domain.commands().items()
                   if spec.create and spec.applies_to(self.resource)]
        return describe_as_text([
            about,
            f"Every {self.resource} you may read, kept from the events of {self.namespace}. "
            "Filter, sort and search with the Filters button (or ?field=, ?ordering=, ?search=).",
            *([f"New ones are made by: {', '.join(creates)}."] if creates else []),
        ], html)

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.action in ("list", "retrieve"):
            # After authentication and permissions: an anonymous client does not get to wait.
            self.get_domain().statemgr.wait(self.resource, min_position(request))

    def get_queryset(self) -> Any:
        """The rows this request may see (the domain's ``scope_queryset`` applies)."""
        return self.get_domain().statemgr.queryset(self.resource)

    def get_serializer_class(self) -> Any:
        return self.serializer_class or resource_serializer(cast(Any, self.domain_class), self.resource)

    def item_url(self, pk: Any) -> str | None:
        """The path of an item's detail (the ``url`` of each listed item)."""
        return self.reverse_route(url_name(self.namespace, self.resource, "detail"), aggregate_id=pk)

    def get_visible(self, pk: Any) -> Any:
        instance = self.get_queryset().filter(pk=pk).first()
        if instance is None:
            raise AggregateNotFound(f"No {self.resource} with id {pk}.")
        return instance

    def time_travel(self, request: Any) -> tuple[int | None, Any]:
        version = _non_negative_int(request, "version", minimum=1)
        raw_at = request.query_params.get("at")
        at = None
        if raw_at is not None:
            try:
                at = parse_datetime(raw_at.replace(" ", "+"))  # a "+" arrives as a space
            except ValueError:
                at = None
            if at is None:
                raise InvalidRequest("The at parameter must be an ISO 8601 date and time.",
                                     code="invalid_parameter",
                                     errors={"at": [f"{raw_at[:50]!r} is not a date and time."]})
            if timezone.is_naive(at):
                at = timezone.make_aware(at)
        if version is not None and at is not None:
            raise InvalidRequest("Ask for a version or a time, not both.", code="invalid_parameter",
                                 errors={"version": ["Not with at."], "at": ["Not with version."]})
        return version, at

    def retrieve(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        pk = parse_aggregate_id(aggregate_id)
        version, at = self.time_travel(request)
        if version is None and at is None:
            instance = self.get_visible(pk)
            current = getattr(instance, "version", None)
            if not isinstance(current, int):
                current = self.get_domain().store.events.filter(aggregate_id=pk).aggregate(
                    v=Max("version"))["v"]
        else:
            instance, current = self.past_instance(pk, version, at)
        tag = etag(current) if current is not None else None
        if tag is not None and tag in request.META.get("HTTP_IF_NONE_MATCH", ""):
            response = Response(status=304)
        else:
            response = Response(self.get_serializer(instance).data)
        if tag is not None:
            response["ETag"] = tag
        return response

    def past_instance(self, pk: Any, version: int | None, at: Any) -> tuple[Any, int]:
        """The item as it was, rebuilt from the event store (not the projection row)."""
        self.get_visible(pk)
        aggregate = self.get_domain().load(pk, version=version, at=at)
        if aggregate.resource != self.resource:
            raise AggregateNotFound(f"No {self.resource} with id {pk}.")
        fields = aggregate.projection(self.resource)
        if fields is None:
            raise AggregateNotFound(f"{self.resource} {pk} had no row at version {aggregate.version}.")
        model = self.model
        return model(pk=aggregate.id, **row_values(model, aggregate, fields)), aggregate.version

    def events(self, request: Any, aggregate_id: str | None = None, **kwargs: Any) -> Response:
        pk = parse_aggregate_id(aggregate_id)
        after = _non_negative_int(request, "after_version")
        self.get_visible(pk)
        store = self.get_domain().store
        events = store.events.filter(aggregate_id=pk, namespace=self.namespace, resource=self.resource)
        if after:
            events = events.filter(version__gt=after)
        paginator = self.event_pagination_class()
        page: list[Any] = paginator.paginate_queryset(events.order_by("version"), request, view=self) or []
        data = EventSerializer([store.decode(e) for e in page], many=True).data
        response = paginator.get_paginated_response(with_visible_metadata(data, request))
        last = events.order_by("-position").values_list("position", flat=True).first()
        if last is not None:  # the aggregate's latest event: a read at it shows this state
            response[POSITION_HEADER] = str(last)
        return response


# -- _meta -----------------------------------------------------------------------


class MetaView(FluviusAPIMixin, APIView):
    """``GET /<namespace>/_meta/``: the domain's commands (with JSON schemas) and resources."""

    schema = MetaSchema()
    # Set by the router: the viewset serving each resource (to describe its query surface).
    resource_views: dict[str, type] | None = None

    def get_view_name(self) -> str:
        return f"{self.namespace}: _meta"

    def get(self, request: Any, **kwargs: Any) -> Response:
        return Response(self.describe())

    def describe(self) -> dict[str, Any]:
        domain = self.domain_class
        commands = [self.describe_command(spec) for spec in domain.commands().values()]
        resources = [self.describe_resource(name) for name in domain.__resources__]
        return {"namespace": self.namespace, "commands": commands, "resources": resources}

    def describe_command(self, spec: ActionSpec) -> dict[str, Any]:
        needs_id = not spec.create
        if needs_id:
            path = self.reverse_route(url_name(self.namespace, spec.name, "aggregate"),
                                      aggregate_id="00000000-0000-0000-0000-000000000000")
            url = path.replace("00000000-0000-0000-0000-000000000000", "{aggregate_id}") if path else ""
        else:
            url = self.reverse_route(url_name(self.namespace, spec.name)) or ""
        return {
            "name": spec.name,
            "url": url,
            "method": "POST",
            "create": spec.create,
            "needs_aggregate_id": needs_id,
            "resources": list(spec.resources),
            "evt_key": spec.evt_key,
            "description": spec.description,
            "schema": json_schema(spec.serializer_class),
        }

    def describe_resource(self, resource: str) -> dict[str, Any]:
        model = self.domain_class.resource_model(resource)
        view_class = (self.resource_views or {}).get(resource, ResourceViewSet)
        serializer = getattr(view_class, "serializer_class", None) or resource_serializer(
            cast(Any, self.domain_class), resource)
        return {
            "name": resource,
            "model": model._meta.label,
            "url": self.reverse_route(url_name(self.namespace, resource, "list")) or "",
            "schema": json_schema(serializer),
            "query": self.describe_query(resource, view_class),
        }

    def describe_query(self, resource: str, view_class: type) -> dict[str, Any]:
        """The query surface of a resource list (filters, ordering, search, pagination).

        Each filter backend and the pagination class of the resource's viewset may
        describe itself with a ``describe(view) -> dict`` method; their answers are
        merged here.
        """
        view = view_class(domain_class=self.domain_class, resource=resource)
        view.request = self.request
        view.format_kwarg = None
        surface: dict[str, Any] = {}
        parts = [*(backend() for backend in view.filter_backends)]
        if view.pagination_class is not None:
            parts.append(view.pagination_class())
        for part in parts:
            describe = getattr(part, "describe", None)
            if callable(describe):
                surface.update(describe(view))
        return surface
