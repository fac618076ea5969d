"""Serializers of the REST face.

- Command payloads: each action's own ``ActionSpec.serializer_class`` (built from
  its signature, or the ``@action(serializer=...)`` one), so the browsable API
  shows one form per command and errors come back per field.
- Resources: a read-only ``ModelSerializer`` of the projection model, built once
  per (domain, resource) unless a viewset names its own ``serializer_class``.
- Responses: ``CommandResultSerializer``, ``EventSerializer`` and
  ``ErrorSerializer`` describe the bodies (for the schema and the events list).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from django_fluvius.write.bus import event_as_dict


def camel(name: str) -> str:
    """``app-user`` -> ``AppUser``: component names for the schema."""
    return "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").replace(".", "-").split("-"))


@cache
def resource_serializer(domain_class: Any, resource: str) -> type[serializers.ModelSerializer]:
    """A read-only ModelSerializer of every field of the resource's model.

    ``domain_class`` is a ``Domain`` class (typed ``Any``: mypy does not take classes for
    the hashable arguments ``@cache`` wants).
    """
    model = domain_class.resource_model(resource)
    name = f"{camel(domain_class.__namespace__)}{camel(resource)}"
    field_names = [f.name for f in model._meta.concrete_fields]
    attrs: dict[str, Any] = {"__doc__": f"A {resource} of {domain_class.__namespace__}."}
    if "url" not in field_names:  # a model's own url field wins
        field_names = ["url", *field_names]
        attrs["url"] = ItemURLField()
    attrs["Meta"] = type("Meta", (), {
        "model": model,
        "fields": field_names,
        "read_only_fields": field_names,
        "ref_name": name,
    })
    return type(f"{name}Serializer", (serializers.ModelSerializer,), attrs)


@extend_schema_field(OpenApiTypes.URI)
class ItemURLField(serializers.Field):
    """The absolute URL of an item's detail endpoint (DRF's ``url`` convention), asked of the
    serializing view (``item_url(pk)``); None where the item has no routed detail."""

    def __init__(self, **kwargs: Any):
        kwargs.update(source="*", read_only=True)
        super().__init__(**kwargs)

    def to_representation(self, instance: Any) -> str | None:
        view = self.context.get("view")
        item_url = getattr(view, "item_url", None)
        path = item_url(instance.pk) if callable(item_url) else None
        request = self.context.get("request")
        if path is None or request is None:
            return path
        return request.build_absolute_uri(path)


class EventSerializer(serializers.Serializer):
    """One stored event of an aggregate's stream."""

    position = serializers.IntegerField()
    namespace = serializers.CharField()
    resource = serializers.CharField()
    aggregate_id = serializers.UUIDField()
    version = serializers.IntegerField()
    evt_key = serializers.CharField()
    schema_version = serializers.IntegerField()
    payload = serializers.DictField(child=serializers.JSONField())
    metadata = serializers.DictField(child=serializers.JSONField())
    created = serializers.DateTimeField(allow_null=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        # The bus's own encoding: the events list and command responses agree.
        return event_as_dict(instance)


class CommandResultSerializer(serializers.Serializer):
    """What a command produced: the aggregate's new version, its events and state."""

    command = serializers.CharField()
    command_id = serializers.UUIDField()
    aggregate_id = serializers.UUIDField()
    resource = serializers.CharField()
    version = serializers.IntegerField()
    events = EventSerializer(many=True)
    state = serializers.DictField(child=serializers.JSONField())


class ErrorSerializer(serializers.Serializer):
    """Every error body: a stable code, a readable message, field errors where they apply."""

    code = serializers.CharField()
    message = serializers.CharField()
    # DRF's metaclass takes declared fields off the class, so this shadows nothing at run time.
    errors = serializers.DictField(child=serializers.ListField(child=serializers.CharField()),  # type: ignore[assignment]
                                   required=False)
    details = serializers.DictField(child=serializers.JSONField(), required=False)


class CommandInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    url = serializers.CharField()
    method = serializers.CharField()
    create = serializers.BooleanField()  # type: ignore[assignment]  # a field, not the method (see above)
    needs_aggregate_id = serializers.BooleanField()
    resources = serializers.ListField(child=serializers.CharField())
    evt_key = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    schema = serializers.DictField(child=serializers.JSONField())


class ResourceInfoSerializer(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField()
    url = serializers.CharField()
    schema = serializers.DictField(child=serializers.JSONField())
    query = serializers.DictField(child=serializers.JSONField())


class DomainMetaSerializer(serializers.Serializer):
    """What ``GET /<namespace>/_meta/`` answers: the domain's commands and resources."""

    namespace = serializers.CharField()
    commands = CommandInfoSerializer(many=True)
    resources = ResourceInfoSerializer(many=True)
