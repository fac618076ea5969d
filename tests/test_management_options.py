"""What every fluvius_* management command shares: its --database option and its usage line."""

import io

import pytest
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import CommandError


def fluvius_commands():
    return sorted(name for name, app in get_commands().items() if app == "django_fluvius")


def test_an_unknown_database_alias_is_a_usage_error_naming_the_known_ones():
    with_option = []
    for name in fluvius_commands():
        parser = load_command_class("django_fluvius", name).create_parser("manage.py", name)
        if "--database" not in parser._option_string_actions:
            continue
        with_option.append(name)
        with pytest.raises(CommandError) as info:
            call_command(name, "--database", "nope", stdout=io.StringIO(), stderr=io.StringIO())
        assert "argument --database: 'nope' is no alias of DATABASES (known: default" in str(info.value), name
    assert {"fluvius_snapshots", "fluvius_verify", "fluvius_rebuild", "fluvius_replay"} <= set(with_option)


def test_optional_positionals_are_not_called_required():
    with pytest.raises(CommandError) as info:
        call_command("fluvius_snapshots", stdout=io.StringIO(), stderr=io.StringIO())
    assert str(info.value) == "Error: the following arguments are required: action"
    with pytest.raises(CommandError) as info:
        call_command("fluvius_deadletters", stdout=io.StringIO(), stderr=io.StringIO())
    assert str(info.value) == "Error: the following arguments are required: action"


@pytest.mark.django_db
def test_a_known_alias_is_taken():
    out = io.StringIO()
    call_command("fluvius_snapshots", "list", "--database", "default", stdout=out)
    assert out.getvalue().strip().endswith("0 snapshots.")
