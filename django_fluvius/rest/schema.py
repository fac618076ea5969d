"""Schemas: JSON Schema of a serializer (for ``_meta``) and OpenAPI (drf-spectacular).

``json_schema(serializer_class)`` maps each field through ``FIELD_SCHEMAS`` (a
lookup table walked along the field's MRO). The ``*Schema`` classes are
drf-spectacular ``AutoSchema`` subclasses the viewsets carry, so every command's
request body and response, every resource's fields, filters and pagination,
and every error body are in the project's OpenAPI document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from django_fluvius.rest.serializers import (
    CommandResultSerializer,
    DomainMetaSerializer,
    ErrorSerializer,
    EventSerializer,
    ItemURLField,
    camel,
)

# -- JSON Schema of a serializer (used by _meta) -----------------------------


def _string(fmt: str | None = None) -> Callable[[Any], dict[str, Any]]:
    def build(field: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string"}
        if fmt:
            schema["format"] = fmt
        if getattr(field, "max_length", None) is not None:
            schema["maxLength"] = field.max_length
        if getattr(field, "min_length", None) is not None:
            schema["minLength"] = field.min_length
        elif not getattr(field, "allow_blank", True):
            schema["minLength"] = 1
        return schema
    return build


def _number(kind: str) -> Callable[[Any], dict[str, Any]]:
    def build(field: Any) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": kind}
        if getattr(field, "min_value", None) is not None:
            schema["minimum"] = field.min_value
        if getattr(field, "max_value", None) is not None:
            schema["maximum"] = field.max_value
        return schema
    return build


FIELD_SCHEMAS: dict[type, Callable[[Any], dict[str, Any]]] = {
    serializers.BooleanField: lambda f: {"type": "boolean"},
    serializers.IntegerField: _number("integer"),
    serializers.FloatField: _number("number"),
    serializers.DecimalField: lambda f: {"type": ["string", "number"], "format": "decimal"},
    serializers.CharField: _string(),
    serializers.EmailField: _string("email"),
    serializers.URLField: _string("uri"),
    serializers.UUIDField: lambda f: {"type": "string", "format": "uuid"},
    serializers.DateTimeField: lambda f: {"type": "string", "format": "date-time"},
    serializers.DateField: lambda f: {"type": "string", "format": "date"},
    serializers.TimeField: lambda f: {"type": "string", "format": "time"},
    serializers.DurationField: lambda f: {"type": "string", "format": "duration"},
    serializers.ChoiceField: lambda f: {"enum": list(f.choices)},
    serializers.ListField: lambda f: {"type": "array", "items": field_schema(f.child)},
    serializers.DictField: lambda f: {"type": "object", "additionalProperties": field_schema(f.child)},
    serializers.JSONField: lambda f: {},
    ItemURLField: lambda f: {"type": ["string", "null"], "format": "uri"},
    serializers.ListSerializer: lambda f: {"type": "array", "items": field_schema(f.child)},
    serializers.Serializer: lambda f: json_schema(f),
}


def field_schema(field: Any) -> dict[str, Any]:
    build = next((FIELD_SCHEMAS[k] for k in type(field).__mro__ if k in FIELD_SCHEMAS), None)
    schema = dict(build(field)) if build else {}
    if getattr(field, "allow_null", False) and "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        schema["type"] = [*types, "null"]
    if getattr(field, "help_text", None):
        schema["description"] = str(field.help_text)
    default = getattr(field, "default", serializers.empty)
    if default is not serializers.empty and not callable(default):
        schema["default"] = default
    if getattr(field, "read_only", False):
        schema["readOnly"] = True
    return schema


def json_schema(serializer: Any) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a serializer class or instance."""
    instance = serializer() if isinstance(serializer, type) else serializer
    properties = {name: field_schema(f) for name, f in instance.fields.items()}
    required = [name for name, f in instance.fields.items() if f.required and not f.read_only]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    if _is_strict(instance):
        schema["additionalProperties"] = False
    doc = type(instance).__doc__
    if doc:
        schema["description"] = doc.strip()
    return schema


def _is_strict(serializer: Any) -> bool:
    from django_fluvius.write.payload import StrictSerializer

    return isinstance(serializer, StrictSerializer)


# -- OpenAPI (drf-spectacular) -------------------------------------------------

def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


ERRORS: dict[int, OpenApiResponse] = {
    400: _error("Malformed request: invalid payload (per field), JSON, header or parameter."),
    401: _error("Not authenticated."),
    403: _error("Not allowed."),
    404: _error("No such aggregate, command or resource (or the id is not a UUID)."),
    406: _error("No acceptable response format."),
    409: _error("A concurrent writer won the race, or the aggregate already exists."),
    412: _error("If-Match names a version the aggregate is not at."),
    413: _error("The body is larger than DATA_UPLOAD_MAX_MEMORY_SIZE."),
    415: _error("The body's content type is not supported."),
    422: _error("A business rule refused the command, or the Idempotency-Key was used for "
                "another request."),
    429: _error("Throttled."),
    503: _error("The read models had not processed Fluvius-Min-Position within MIN_POSITION_TIMEOUT "
                "(code position_not_reached; Retry-After says when to ask again)."),
}
# Versions are parsed from at most 18 digits (they must fit a database integer).
MAX_VERSION = 10**18 - 1
COMMAND_ERRORS = (400, 401, 403, 404, 406, 409, 412, 413, 415, 422, 429)
READ_ERRORS = (400, 401, 403, 404, 406, 429)

AGGREGATE_ID = OpenApiParameter(
    "aggregate_id", OpenApiTypes.UUID, OpenApiParameter.PATH,
    description="The aggregate's id (a UUID).",
)
CORRELATION_IN = OpenApiParameter(
    "X-Correlation-ID", str, OpenApiParameter.HEADER, required=False,
    description="Correlation id to carry into the events' metadata (made when absent).",
)
CORRELATION_OUT = OpenApiParameter(
    "X-Correlation-ID", str, OpenApiParameter.HEADER, response=True,
    description="The request's correlation id.",
)
ETAG_OUT = OpenApiParameter(
    "ETag", str, OpenApiParameter.HEADER, response=[200, 201],
    description='The aggregate\'s version, quoted: "3".',
)
POSITION_OUT = OpenApiParameter(
    "Fluvius-Position", {"type": "integer", "minimum": 0}, OpenApiParameter.HEADER, response=[200, 201],
    description="The event position of the last event shown: send it as Fluvius-Min-Position to read "
                "your own write (docs/consistency.md).",
)
MIN_POSITION_IN = OpenApiParameter(
    "Fluvius-Min-Position", {"type": "integer", "minimum": 0}, OpenApiParameter.HEADER, required=False,
    description="Answer only once the read models of this resource have processed this event position "
                "(a command's Fluvius-Position); 503 with Retry-After if they have not within "
                "MIN_POSITION_TIMEOUT. Inline projections never wait.",
)
MIN_POSITION_QUERY = OpenApiParameter(
    "min_position", {"type": "integer", "minimum": 0}, OpenApiParameter.QUERY, required=False,
    description="As the Fluvius-Min-Position header.",
)
IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, required=False, pattern=r'^(\*|"[0-9]{1,18}"|[0-9]{1,18})$',
    description='Run only if the aggregate is at this version ("3"); 412 otherwise. * = any version.',
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", str, OpenApiParameter.HEADER, required=False, pattern=r"^[!-~]{1,255}$",
    description="Makes a retry safe: the same key and request return the first response "
                "(1 to 255 printable ASCII characters, no spaces).",
)


class FluviusAutoSchema(AutoSchema):
    """Common ground: tags by namespace, JSON-only bodies, error responses."""

    error_statuses: tuple[int, ...] = READ_ERRORS
    # One of our views (the stubs say APIView, which has none of their attributes).
    view: Any

    def get_tags(self) -> list[str]:
        return [self.view.domain_class.__namespace__]

    def map_parsers(self) -> list[str]:
        # Forms still work (browsable API); clients are told to send JSON.
        return ["application/json"]

    def errors(self) -> dict[int, OpenApiResponse]:
        return {code: ERRORS[code] for code in self.error_statuses}


class CommandSchema(FluviusAutoSchema):
    error_statuses = COMMAND_ERRORS

    @property
    def spec(self):
        return self.view.get_spec()

    def get_operation_id(self) -> str:
        suffix = "_on_aggregate" if self.view.on_aggregate else ""
        return f"{self.view.domain_class.__namespace__}_{self.spec.name}{suffix}".replace("-", "_")

    def get_summary(self) -> str:
        return self.spec.name

    def get_description(self) -> str:  # type: ignore[override]  # drf-spectacular's takes no arguments
        return self.spec.description or f"Run the {self.spec.name} command."

    def get_override_parameters(self) -> list[Any]:
        params = [IDEMPOTENCY_KEY, CORRELATION_IN, CORRELATION_OUT, ETAG_OUT, POSITION_OUT]
        if self.view.on_aggregate:
            params = [AGGREGATE_ID, IF_MATCH, *params]
        return params

    def get_request_serializer(self) -> Any:
        return self.spec.serializer_class

    def get_examples(self) -> list[OpenApiExample]:
        # @action(..., example={...}) shows a ready-made payload (Swagger UI, fuzzers).
        example = self.spec.extra.get("example")
        if example is None:
            return []
        return [OpenApiExample(self.spec.name, value=example, request_only=True)]

    def get_response_serializers(self) -> Any:
        success = 201 if self.spec.create else 200
        return {success: CommandResultSerializer, **self.errors()}

    def get_serializer_name(self, serializer: Any, direction: Literal["request", "response"]) -> str:
        if isinstance(serializer, self.spec.serializer_class):
            return f"{camel(self.view.domain_class.__namespace__)}{camel(self.spec.name)}Payload"
        return super().get_serializer_name(serializer, direction)

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema = super()._map_basic_serializer(serializer, direction)
        if _is_strict(serializer):
            # The payload refuses unknown fields; say so, so clients (and fuzzers) know.
            schema["additionalProperties"] = False
        return schema

    def _map_serializer_field(self, field: Any, direction: str, bypass_extensions: bool = False) -> Any:
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if (direction == "request" and isinstance(field, serializers.CharField)
                and not field.allow_blank and isinstance(schema, dict) and "minLength" not in schema):
            schema["minLength"] = 1  # DRF refuses "" unless allow_blank
        return schema


class ResourceSchema(FluviusAutoSchema):
    @property
    def view_action(self) -> str:
        return getattr(self.view, "action", None) or "list"

    def get_operation_id(self) -> str:
        ns = self.view.domain_class.__namespace__.replace("-", "_")
        return f"{ns}_{self.view.resource}_{self.view_action}".replace("-", "_")

    def get_override_parameters(self) -> list[Any]:
        action = self.view_action
        if action == "list":
            return [CORRELATION_IN, CORRELATION_OUT, MIN_POSITION_IN, MIN_POSITION_QUERY]
        params = [AGGREGATE_ID, CORRELATION_IN, CORRELATION_OUT]
        if action == "retrieve":
            params += [
                MIN_POSITION_IN,
                MIN_POSITION_QUERY,
                OpenApiParameter("version", {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                                 OpenApiParameter.QUERY, required=False,
                                 description="Time travel: the item as it was at this version."),
                OpenApiParameter("at", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, required=False,
                                 description="Time travel: the item as it was at this time (ISO 8601; "
                                             "without an offset, the project's time zone). "
                                             "Not with version."),
                ETAG_OUT,
            ]
        if action == "events":
            params.append(OpenApiParameter(
                "after_version", {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
                OpenApiParameter.QUERY, required=False, description="Only events after this version."))
            params.append(POSITION_OUT)
        return params

    def errors(self) -> dict[int, OpenApiResponse]:
        found = super().errors()
        if self.view_action in ("list", "retrieve"):
            found[503] = ERRORS[503]
        return found

    def _is_list_view(self, serializer: Any = None) -> bool:
        return self.view_action in ("list", "events")

    def get_response_serializers(self) -> Any:
        if self.view_action == "events":
            return {200: EventSerializer, **self.errors()}
        return {200: self.view.get_serializer_class(), **self.errors()}

    def get_filter_backends(self) -> list[Any]:
        if self.view_action != "list":
            return []
        # A backend that cannot describe its parameters is left out, not fatal.
        return [b for b in super().get_filter_backends() if hasattr(b, "get_schema_operation_parameters")]

    def _get_paginator(self) -> Any:
        if self.view_action == "events":
            return self.view.event_pagination_class()
        return super()._get_paginator() if self.view_action == "list" else None


class MetaSchema(FluviusAutoSchema):
    def get_operation_id(self) -> str:
        return f"{self.view.domain_class.__namespace__}_meta".replace("-", "_")

    def get_override_parameters(self) -> list[Any]:
        return [CORRELATION_IN, CORRELATION_OUT]

    def get_response_serializers(self) -> Any:
        return {200: DomainMetaSerializer, **self.errors()}
