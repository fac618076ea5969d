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


# -- the quick path (issue 15): same values and the very same errors as the serializer ----------


def plain_action(self, name: str, count: int, flag: bool, note: str = "", label: str | None = None,
                 size: int = 3, on: bool = False):
    return {}


PLAIN_PAYLOADS = [
    {"name": "Ann", "count": 1, "flag": True},
    {"name": "  Ann  ", "count": -7, "flag": False, "note": " x ", "label": None, "size": 0, "on": True},
    {"name": "Ann", "count": 1, "flag": True, "label": "l"},
    # refused or left to the serializer, each for its own reason:
    {"name": "", "count": 1, "flag": True},
    {"name": "   ", "count": 1, "flag": True},
    {"name": "Ann", "count": 1, "flag": True, "note": ""},
    {"name": "Ann", "count": 1, "flag": True, "note": "  "},
    {"name": 5, "count": 1, "flag": True},
    {"name": "Ann", "count": "7", "flag": "true"},
    {"name": "Ann", "count": True, "flag": 1},
    {"name": "Ann", "count": 1.0, "flag": True},
    {"name": "Ann", "count": 10 ** 20, "flag": True},
    {"name": None, "count": None, "flag": None},
    {"name": "Ann", "flag": True},
    {"name": "Ann", "count": 1, "flag": True, "surprise": 1},
    {},
    [],
    "text",
]


def slow_validate(serializer_class, payload):
    """The serializer alone (what validate_payload did before the quick path)."""
    from django_fluvius.write.payload import _flatten, check_payload

    check_payload(payload)
    serializer = serializer_class(data=payload)
    if not serializer.is_valid():
        raise CommandValidationError(_flatten(serializer.errors))
    return dict(serializer.validated_data)


def outcome(validate, serializer_class, payload):
    try:
        value = validate(serializer_class, payload)
    except CommandValidationError as exc:
        return ("error", exc.errors, str(exc))
    return ("ok", value, [type(v) for v in value.values()])


@pytest.mark.parametrize("payload", PLAIN_PAYLOADS, ids=range(len(PLAIN_PAYLOADS)))
def test_quick_path_gives_the_serializers_values_and_messages(payload):
    from django_fluvius.write.payload import quick_validator

    serializer_class = build_serializer(plain_action, "plain")
    assert quick_validator(serializer_class) is not None  # a plain signature takes the quick path
    assert outcome(validate_payload, serializer_class, payload) == outcome(slow_validate, serializer_class, payload)


def test_quick_path_takes_plain_payloads_and_leaves_the_rest_to_the_serializer():
    from django_fluvius.write.payload import quick_validator

    quick = quick_validator(build_serializer(plain_action, "plain"))
    assert quick({"name": " Ann ", "count": 2, "flag": True}) == {
        "name": "Ann", "count": 2, "flag": True, "note": "", "label": None, "size": 3, "on": False}
    assert quick({"name": "", "count": 2, "flag": True}) is None
    assert quick({"name": "Ann", "count": 2}) is None
    # Not for fields it does not know, nor for a project's own serializer.
    assert quick_validator(build_serializer(Typed.typed, "typed")) is None
    from rest_framework import serializers

    class Own(serializers.Serializer):
        name = serializers.CharField()

    assert quick_validator(Own) is None
