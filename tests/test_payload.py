"""Payload validation from action signatures (create_command), without a database."""

import datetime
import enum
import uuid
from decimal import Decimal
from typing import Literal

import pytest

from django_fluvius import Aggregate, CommandValidationError, Domain, UnknownCommand, action
from django_fluvius.write.payload import build_serializer, validate_payload
from example_project.users.domain import UserDomain


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Typed(Aggregate):
    @action("typed", create=True)
    def typed(self, name: str, count: int, ratio: float, flag: bool, amount: Decimal, ref: uuid.UUID,
              when: datetime.datetime, day: datetime.date, tags: list[str], extra: dict,
              mode: Literal["a", "b"], color: Color, note: str | None = None, size: int = 3):
        return {}


class TypedDomain(Domain):
    __aggregate__ = Typed
    __namespace__ = "typed"


VALID = {
    "name": "n", "count": 2, "ratio": 0.5, "flag": True, "amount": "1.25",
    "ref": "6f1c1f3e-8e0f-4a55-8d43-6c4c9c1b0b8e", "when": "2026-01-02T03:04:05Z", "day": "2026-01-02",
    "tags": ["x", "y"], "extra": {"k": 1}, "mode": "a", "color": "red",
}


def test_valid_payload_is_converted_to_python_types():
    data = validate_payload(Typed.actions()["typed"].serializer_class, VALID)
    assert data["count"] == 2 and data["amount"] == Decimal("1.25")
    assert data["ref"] == uuid.UUID(VALID["ref"])
    assert data["day"] == datetime.date(2026, 1, 2)
    assert data["when"].tzinfo is not None
    assert data["note"] is None and data["size"] == 3


@pytest.mark.parametrize("field,value", [
    ("count", "abc"), ("ratio", "x"), ("amount", "lots"), ("ref", "not-a-uuid"),
    ("when", "yesterday"), ("day", "2026-13-40"), ("tags", "not-a-list"), ("extra", [1, 2]),
    ("mode", "c"), ("color", "green"), ("name", ["nested", "junk"]), ("name", 12), ("name", {"a": 1}),
])
def test_wrongly_typed_fields_are_named(field, value):
    with pytest.raises(CommandValidationError) as info:
        validate_payload(Typed.actions()["typed"].serializer_class, {**VALID, field: value})
    assert list(info.value.errors) == [field]
    assert info.value.status_code == 400


def test_missing_and_unknown_fields_are_each_named():
    payload = {k: v for k, v in VALID.items() if k not in ("name", "count")}
    payload["surprise"] = 1
    with pytest.raises(CommandValidationError) as info:
        validate_payload(Typed.actions()["typed"].serializer_class, payload)
    assert set(info.value.errors) == {"name", "count", "surprise"}
    assert info.value.errors["surprise"] == ["Unknown field."]
    assert "count" in info.value.message and "name" in info.value.message


@pytest.mark.parametrize("payload", [["a", "list"], "a string", 42, [{"name": "x"}]])
def test_payload_that_is_not_an_object_is_refused(payload):
    with pytest.raises(CommandValidationError) as info:
        UserDomain().create_command("create-user", payload)
    assert "non_field_errors" in info.value.errors
    assert "JSON object" in info.value.errors["non_field_errors"][0]


def test_unknown_command_names_the_known_ones():
    with pytest.raises(UnknownCommand) as info:
        UserDomain().create_command("explode-user", {})
    assert "explode-user" in str(info.value) and "create-user" in str(info.value)
    assert info.value.status_code == 404


@pytest.mark.parametrize("bad_id", ["nope", "1234", 12, "g" * 32])
def test_malformed_aggregate_id_is_a_validation_error(bad_id):
    with pytest.raises(CommandValidationError) as info:
        UserDomain().create_command("rename-user", {"name": "x"}, aggregate_id=bad_id)
    assert "aggregate_id" in info.value.errors


def test_non_create_command_needs_an_aggregate_id():
    with pytest.raises(CommandValidationError) as info:
        UserDomain().create_command("rename-user", {"name": "x"})
    assert "aggregate_id" in info.value.errors


@pytest.mark.parametrize("bad", ["x", -1, 1.5, True])
def test_bad_expected_version_is_refused(bad):
    with pytest.raises(CommandValidationError) as info:
        UserDomain().create_command("rename-user", {"name": "x"}, aggregate_id=uuid.uuid4(), expected_version=bad)
    assert "expected_version" in info.value.errors


def test_serializer_keeps_docstring_and_explicit_serializer_wins():
    from rest_framework import serializers

    class Explicit(serializers.Serializer):
        value = serializers.IntegerField(min_value=10)

    class WithSerializer(Aggregate):
        @action("x", serializer=Explicit, create=True)
        def do(self, **payload):
            """Do the thing."""
            return payload

    spec = WithSerializer.actions()["do"]
    assert spec.serializer_class is Explicit
    with pytest.raises(CommandValidationError) as info:
        validate_payload(spec.serializer_class, {"value": 3})
    assert "value" in info.value.errors
    assert build_serializer(Typed.typed, "typed").__name__ == "TypedPayload"
