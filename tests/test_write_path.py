"""The bus's write statement (issue 15): prepared on PostgreSQL whatever OPTIONS say, and the
command log's choices (FLUVIUS['COMMAND_LOG'])."""

from contextlib import contextmanager

import pytest
from django.core import checks
from django.db import connection
from django.test import override_settings

from django_fluvius import DomainError
from django_fluvius.models import CommandLog, Event
from example_project.users.domain import UserDomain
from example_project.users.models import User


def run_commands(renames=6):
    domain = UserDomain()
    result = domain.process_command(domain.create_command("create-user", {"name": "Ann", "email": "a@example.com"}))
    for n in range(renames):
        domain.process_command(domain.create_command("rename-user", {"name": f"Ann {n}"},
                                                     aggregate_id=result.aggregate_id))
    return result


def prepared_writes():
    """The statements prepared in this connection's server session that append events."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [s for (s,) in cursor.fetchall() if 'INSERT INTO "django_fluvius_event"' in s]


@contextmanager
def database_options(options):
    """The connection reopened with these OPTIONS (Django's default: {})."""
    saved = connection.settings_dict.get("OPTIONS", {})
    connection.close()
    connection.settings_dict["OPTIONS"] = options
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"] = saved


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("options", [{}, {"server_side_binding": True, "prepare_threshold": 5}])
def test_the_write_statement_is_prepared_whatever_the_options(options):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://127.0.0.1:5432/test")
    with database_options(options):
        result = run_commands()
        assert len(prepared_writes()) >= 1  # with Django's default options too (client-side binding)
        assert User.objects.get(pk=result.aggregate_id).name == "Ann 5"
        assert Event.objects.filter(aggregate_id=result.aggregate_id).count() == 7


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("setting, options", [
    ({"PREPARED_STATEMENTS": False}, {}),
    ({}, {"prepare_threshold": None}),  # PgBouncer's setting in OPTIONS is respected
])
def test_prepared_statements_off_behind_a_pooler(settings, setting, options):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://127.0.0.1:5432/test")
    settings.FLUVIUS = {**settings.FLUVIUS, **setting}
    with database_options(options):
        result = run_commands()
        assert prepared_writes() == []
        assert Event.objects.filter(aggregate_id=result.aggregate_id).count() == 7


@pytest.mark.django_db
def test_command_log_failures_only_logs_rejections_and_keeps_the_events(settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "COMMAND_LOG": "failures"}
    domain = UserDomain()
    result = run_commands(renames=2)
    assert CommandLog.objects.count() == 0
    assert Event.objects.filter(command_id=result.command.id).exists()  # the audit trail of what happened
    with pytest.raises(DomainError, match="Invalid email"):
        domain.process_command(domain.create_command("create-user", {"name": "Bob", "email": "no-at-sign"}))
    [log] = CommandLog.objects.all()
    assert (log.status, log.command, log.error_message) == ("rejected", "create-user", "Invalid email")
    assert log.payload == {"name": "Bob", "email": "no-at-sign"}


@pytest.mark.django_db
def test_command_log_all_is_the_default():
    run_commands(renames=2)
    assert list(CommandLog.objects.values_list("status", flat=True)) == ["done"] * 3


@pytest.mark.parametrize("setting, check_id", [
    ({"COMMAND_LOG": "some"}, "fluvius.E095"),
    ({"PREPARED_STATEMENTS": "yes"}, "fluvius.E096"),
    ({"PREPARED_STATEMENTS": 1}, "fluvius.E096"),
])
def test_bad_write_settings_are_named_by_a_check(settings, setting, check_id):
    from django_fluvius.checks import check_write_settings

    with override_settings(FLUVIUS={**settings.FLUVIUS, **setting}):
        errors = check_write_settings()
    assert [e.id for e in errors] == [check_id]
    assert all(isinstance(e, checks.Error) for e in errors)


def test_good_write_settings_pass(settings):
    from django_fluvius.checks import check_write_settings

    for setting in ({}, {"COMMAND_LOG": "failures", "PREPARED_STATEMENTS": False}, {"PREPARED_STATEMENTS": True}):
        with override_settings(FLUVIUS={**settings.FLUVIUS, **setting}):
            assert check_write_settings() == []
