"""Payload serializers built from an action's signature.

``build_serializer(func)`` turns ``def create_user(self, name: str, age: int = 0)``
into a DRF ``Serializer`` with a required ``CharField`` and an optional
``IntegerField``. Type hints are mapped through ``FIELD_FOR_TYPE`` (a lookup
table, not an if-chain); ``Optional``/``| None``, ``list[...]``, ``dict[...]``,
``Literal[...]`` and ``Enum`` are understood. Unknown fields are refused.

Invariant: the serializer is the one judge of a payload — the REST layer, the
admin's command forms, ``_meta``'s JSON Schema and Python callers all validate
through it — so a payload accepted anywhere is accepted everywhere, and an
action never runs on a payload it did not declare.

Before any field sees it, ``check_payload`` walks the payload once, iteratively:
nesting deeper than ``FLUVIUS['MAX_PAYLOAD_DEPTH']``, and NUL characters or lone
surrogates in any key or string, are refused with a 400 naming the field. Why
first: DRF's fields recurse (a ``[`` x 1,000 body was a ``RecursionError``, a 500),
PostgreSQL refuses NUL in text and jsonb, and a lone surrogate cannot be encoded
as UTF-8 -- such a payload passed validation and then failed in the database or
in the renderer, leaving no command-log row.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import inspect
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any

from rest_framework import serializers

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import CommandValidationError, ConfigurationError
from django_fluvius.text import safe_text, text_problem


class StrictCharField(serializers.CharField):
    """A ``CharField`` that refuses numbers and booleans: a JSON payload must send text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictUUIDField(serializers.UUIDField):
    """A ``UUIDField`` that takes text (or a ``uuid.UUID`` from Python), never a JSON number.

    DRF's own reads an integer as ``UUID(int=...)``: ``7`` became
    ``00000000-0000-0000-0000-000000000007``, which no client means.
    """

    def to_internal_value(self, data):
        if not isinstance(data, str | uuid.UUID):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


FIELD_FOR_TYPE: dict[Any, Callable[..., serializers.Field]] = {
    str: StrictCharField,
    int: serializers.IntegerField,
    float: serializers.FloatField,
    bool: serializers.BooleanField,
    decimal.Decimal: lambda **kw: serializers.DecimalField(max_digits=None, decimal_places=None, **kw),
    uuid.UUID: StrictUUIDField,
    datetime.datetime: serializers.DateTimeField,
    datetime.date: serializers.DateField,
    datetime.time: serializers.TimeField,
    datetime.timedelta: serializers.DurationField,
    dict: serializers.DictField,
    list: serializers.ListField,
    Any: serializers.JSONField,
    inspect.Parameter.empty: serializers.JSONField,
}


class StrictSerializer(serializers.Serializer):
    """A serializer that refuses fields it does not declare, and non-object payloads."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": [
                    f"Expected a JSON object of fields, got {type(data).__name__}."
                ]}
            )
        errors = {name: ["Unknown field."] for name in sorted(set(data) - set(self.fields))}
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            detail: Any = exc.detail
            raise serializers.ValidationError({**detail, **errors} if isinstance(detail, dict) else detail) from None
        if errors:
            raise serializers.ValidationError(errors)
        return value


def field_for_annotation(annotation: Any, **kwargs: Any) -> serializers.Field:
    """Return a DRF field for one type hint."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        non_null = [a for a in args if a is not type(None)]
        if len(non_null) < len(args):
            kwargs["allow_null"] = True
        if len(non_null) == 1:
            return field_for_annotation(non_null[0], **kwargs)
        return serializers.JSONField(**kwargs)
    if origin is typing.Literal:
        if "" not in args:
            kwargs.pop("allow_blank", None)
        return serializers.ChoiceField(choices=list(args), **kwargs)
    if origin is typing.Annotated:
        return field_for_annotation(args[0], **kwargs)
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set):
        kwargs.pop("allow_blank", None)
        child = field_for_annotation(args[0]) if args and args[0] is not Ellipsis else serializers.JSONField()
        return serializers.ListField(child=child, **kwargs)
    if origin is dict or annotation is dict:
        kwargs.pop("allow_blank", None)
        child = field_for_annotation(args[1]) if len(args) == 2 else serializers.JSONField()
        return serializers.DictField(child=child, **kwargs)
    if inspect.isclass(annotation) and issubclass(annotation, enum.Enum):
        choices = [m.value for m in annotation]
        if "" not in choices:
            kwargs.pop("allow_blank", None)
        return serializers.ChoiceField(choices=choices, **kwargs)
    factory = FIELD_FOR_TYPE.get(annotation)
    if factory is None:
        raise ConfigurationError(f"No payload field for the type hint {annotation!r}.")
    if "allow_blank" in kwargs and not _takes_blank(factory):
        kwargs.pop("allow_blank")  # "" as the default of a non-text field: nothing to allow
    return factory(**kwargs)


def _takes_blank(factory: Any) -> bool:
    return isinstance(factory, type) and issubclass(factory, serializers.CharField | serializers.ChoiceField)


def build_serializer(func: Callable[..., Any], name: str) -> type[serializers.Serializer]:
    """Build a serializer class whose fields are ``func``'s parameters after ``self``."""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # noqa: BLE001 - unresolvable forward references fall back to raw hints
        hints = {}
    attrs: dict[str, Any] = {}
    for param in list(signature.parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(param.name, param.annotation)
        kwargs: dict[str, Any] = {}
        if param.default is not param.empty:
            kwargs["required"] = False
            if param.default is None:
                kwargs["allow_null"] = True
            kwargs["default"] = param.default
        if param.default == "":
            # A keyword argument, not an attribute set afterwards: DRF copies each declared
            # field per serializer from its constructor arguments, and an attribute is lost.
            kwargs["allow_blank"] = True
        attrs[param.name] = field_for_annotation(annotation, **kwargs)
    class_name = "".join(part.title() for part in name.replace("-", "_").split("_")) + "Payload"
    attrs["__doc__"] = inspect.getdoc(func) or f"Payload of the {name} command."
    attrs[SIGNATURE_ATTR] = True
    return type(class_name, (StrictSerializer,), attrs)


# Set on the serializers build_serializer makes (a project's own may validate anything).
SIGNATURE_ATTR = "_fluvius_from_signature"


def validate_payload(serializer_class: type[serializers.Serializer], payload: Any) -> dict[str, Any]:
    """Validate ``payload``; raise ``CommandValidationError`` naming each bad field."""
    if payload is None:
        payload = {}
    check_payload(payload)
    quick = quick_validator(serializer_class)
    if quick is not None:
        validated = quick(payload)
        if validated is not None:
            return validated
    serializer = serializer_class(data=payload)
    if not serializer.is_valid():
        raise CommandValidationError(_flatten(serializer.errors))
    return dict(serializer.validated_data)


# -- the quick path: plain payloads of simple signatures -----------------------------
#
# A DRF serializer costs tens of microseconds per command (fields deep-copied and bound
# per instance, a validation chain per field). For a serializer built from a signature
# whose every field is plain (text without length limits, integers and booleans without
# bounds), a payload whose every value already has the exact type is accepted here with
# the very value the serializer would give. Anything else -- a missing required field,
# an unknown one, a blank string, a value of another type -- goes to the serializer,
# so every error message still comes from it, word for word.


def _quick_text(field: Any) -> Callable[[Any], Any] | None:
    if field.max_length is not None or field.min_length is not None or len(field.validators) != 2:
        return None  # the two validators it always has refuse NUL and surrogates: check_payload did
    trim = field.trim_whitespace

    def accept(value: Any) -> Any:
        if type(value) is not str:
            return _REFUSED
        text = value.strip() if trim else value
        return text or _REFUSED  # blank: the serializer decides (allow_blank, its message)

    return accept


def _quick_int(field: Any) -> Callable[[Any], Any] | None:
    if field.max_value is not None or field.min_value is not None or field.validators:
        return None

    def accept(value: Any) -> Any:
        return value if type(value) is int and -(10 ** 15) < value < 10 ** 15 else _REFUSED

    return accept


def _quick_bool(field: Any) -> Callable[[Any], Any] | None:
    if field.validators:
        return None
    return lambda value: value if type(value) is bool else _REFUSED


_REFUSED = object()
QUICK_FIELDS: dict[type[serializers.Field], Callable[[Any], Callable[[Any], Any] | None]] = {
    StrictCharField: _quick_text,
    serializers.IntegerField: _quick_int,
    serializers.BooleanField: _quick_bool,
}
_NO_QUICK = object()


def quick_validator(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict[str, Any] | None] | None:
    """The quick path of a signature's serializer, or None (then the serializer always runs).

    The validator returns the validated payload, or None when the serializer must judge it.
    Built once per serializer class.
    """
    quick = serializer_class.__dict__.get("_fluvius_quick", _NO_QUICK)
    if quick is _NO_QUICK:
        quick = _build_quick(serializer_class)
        setattr(serializer_class, "_fluvius_quick", quick)  # noqa: B010 - a class attribute of our own
    return quick


def _build_quick(serializer_class: type[serializers.Serializer]) -> Callable[[Any], dict[str, Any] | None] | None:
    if not serializer_class.__dict__.get(SIGNATURE_ATTR):
        return None
    plan: list[tuple[str, Callable[[Any], Any], bool, bool, Any]] = []
    for name, field in serializer_class._declared_fields.items():
        factory = QUICK_FIELDS.get(type(field))
        accept = factory(field) if factory is not None else None
        has_default = field.default is not serializers.empty
        if accept is None or field.source not in (None, name) or field.read_only or (
                has_default and callable(field.default)):
            return None
        plan.append((name, accept, field.required, field.allow_null, field.default if has_default else _REFUSED))
    names = frozenset(name for name, *_ in plan)

    def validate(payload: Any) -> dict[str, Any] | None:
        if type(payload) is not dict or not names.issuperset(payload):
            return None
        validated: dict[str, Any] = {}
        for name, accept, required, allow_null, default in plan:
            if name not in payload:
                if required:
                    return None
                if default is not _REFUSED:
                    validated[name] = default
                continue
            value = payload[name]
            if value is None:
                if not allow_null:
                    return None
                validated[name] = None
                continue
            value = accept(value)
            if value is _REFUSED:
                return None
            validated[name] = value
        return validated

    return validate


def _flatten(errors: Any) -> dict[str, list[str]]:
    flat: dict[str, list[str]] = {}
    if isinstance(errors, list):
        return {"non_field_errors": [str(e) for e in errors]}
    for field, messages in errors.items():
        if isinstance(messages, dict):
            for sub, sub_messages in _flatten(messages).items():
                flat[f"{field}.{sub}"] = sub_messages
        elif isinstance(messages, list):
            flat[field] = [m if isinstance(m, str) else str(m) for m in _iter_messages(messages)]
        else:
            flat[field] = [str(messages)]
    return flat


def _iter_messages(messages: list) -> list[str]:
    out: list[str] = []
    for message in messages:
        if isinstance(message, dict):
            out.extend(f"{k}: {v}" for k, vs in _flatten(message).items() for v in vs)
        elif isinstance(message, list):
            out.extend(_iter_messages(message))
        else:
            out.append(str(message))
    return out


# -- what no field may hold ------------------------------------------------------

def payload_problems(payload: Any, *, max_depth: int | None = None) -> dict[str, list[str]]:
    """Field path -> problems for nesting past ``max_depth`` and unstorable text (iterative:
    it never recurses, whatever the depth)."""
    if max_depth is None:
        max_depth = fluvius_settings.MAX_PAYLOAD_DEPTH
    errors: dict[str, list[str]] = {}
    stack: list[tuple[Any, str, int]] = [(payload, "", 0)]
    while stack and len(errors) < 20:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth >= max_depth:
                errors.setdefault(path or "non_field_errors", []).append(
                    f"is nested more than {max_depth} levels deep.")
                continue
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    problem = text_problem(key)
                    if problem is not None:
                        name = f"{path}.{safe_text(key)}" if path else safe_text(key)
                        errors.setdefault(name, []).append(f"This field name {problem}")
                        continue
                stack.append((item, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(value, str):
            problem = text_problem(value)
            if problem is not None:
                errors.setdefault(path or "non_field_errors", []).append(f"This value {problem}")
    return errors


def check_payload(payload: Any, *, max_depth: int | None = None) -> None:
    """``CommandValidationError`` (400) naming each field nested too deep or holding NUL or a
    lone surrogate; see the module docstring."""
    errors = payload_problems(payload, max_depth=max_depth)
    if errors:
        raise CommandValidationError(errors)
