"""The bus's write statement (issue 15): prepared on PostgreSQL whatever OPTIONS say, sent in one
round trip with the transaction's start on MariaDB (issue 21), and the command log's choices
(FLUVIUS['COMMAND_LOG'])."""

from contextlib import contextmanager

import pytest
from django.core import checks
from django.db import connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from django_fluvius import DomainError
from django_fluvius.models import CommandLog, Event
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.testapp import domain as notes_module
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Effect


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


def session_counters():
    """MariaDB's counters of this session: statements by kind."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN ('Com_set_option', 'Com_commit', 'Com_begin')")
        return {name: int(value) for name, value in cursor.fetchall()}


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_on_mariadb_a_command_is_its_writes_in_one_round_trip_then_the_commit():
    """No autocommit toggles around the transaction (two round trips of mysqlclient's): it is
    begun by the round trip that carries the event, command-log and projection writes."""
    result = run_commands(renames=1)  # the aggregate is cached: nothing to read
    domain = UserDomain()
    before = session_counters()
    with CaptureQueriesContext(connection) as captured:
        renamed = domain.process_command(domain.create_command("rename-user", {"name": "Ann B."},
                                                               aggregate_id=result.aggregate_id))
    counted = {name: value - before[name] for name, value in session_counters().items()}
    sent = [q["sql"] for q in captured.captured_queries]
    assert len(sent) == 2 and sent[1] == "COMMIT", sent
    assert sent[0].startswith("START TRANSACTION; INSERT INTO `django_fluvius_event` ")
    assert sent[0].count("; INSERT INTO ") == 3  # the event, the command log, the projection row
    assert counted == {"Com_set_option": 0, "Com_begin": 1, "Com_commit": 1}, counted
    event = Event.objects.get(aggregate_id=result.aggregate_id, version=3)
    assert renamed.events[0].position == event.position and event.txid > 0  # the clock's tick
    assert CommandLog.objects.get(command_id=renamed.command.id).status == "done"
    assert User.objects.get(pk=result.aggregate_id).name == "Ann B."
    # Outside the bus, Django's transactions are as they were: autocommit toggled.
    from django.db import transaction

    before = session_counters()
    with transaction.atomic():
        User.objects.filter(pk=result.aggregate_id).update(name="Ann C.")
    assert session_counters()["Com_set_option"] - before["Com_set_option"] == 2


@pytest.mark.mysql
@pytest.mark.django_db(transaction=True)
def test_on_mariadb_without_multi_statements_the_writes_go_one_by_one():
    """A project whose OPTIONS turn mysqlclient's multi-statements off: a statement a round trip."""
    from django.db import DatabaseError

    with database_options({**connection.settings_dict.get("OPTIONS", {}), "multi_statements": False}):
        result = run_commands(renames=1)
        domain = UserDomain()
        with CaptureQueriesContext(connection) as captured:
            domain.process_command(domain.create_command("rename-user", {"name": "Ann B."},
                                                         aggregate_id=result.aggregate_id))
        sent = [q["sql"] for q in captured.captured_queries]
        assert len(sent) == 4 and not any("; " in q for q in sent), sent  # 3 inserts and the COMMIT
        with pytest.raises(DatabaseError), connection.cursor() as cursor:  # the option is in force
            cursor.execute("SELECT 1; SELECT 2")
    assert User.objects.get(pk=result.aggregate_id).name == "Ann B."
    assert Event.objects.filter(aggregate_id=result.aggregate_id).count() == 3


@pytest.mark.django_db(transaction=True)
def test_what_a_command_runs_before_its_writes_is_in_its_transaction():
    """On MariaDB the transaction begins with the first statement: a read or write of the
    action's is inside it, and goes when the command fails."""
    domain = NoteDomain()
    note = domain.process_command(domain.create_command("create-note", {"title": "t"})).aggregate_id
    seen = []

    def write_then_fail(aggregate):
        Effect.objects.create(handler="in the action", position=0)
        if connection.vendor == "mysql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT @@in_transaction")
                seen.append(cursor.fetchone()[0])
        raise DomainError("refused after a write")

    notes_module.hooks["edit"] = write_then_fail
    try:
        with pytest.raises(DomainError):
            domain.process_command(domain.create_command("edit-note", {"body": "b"}, aggregate_id=note))
    finally:
        notes_module.hooks.clear()
    assert not Effect.objects.exists()
    assert list(Event.objects.filter(aggregate_id=note).values_list("version", flat=True)) == [1]
    if connection.vendor == "mysql":
        assert seen == [1]
    # And the connection goes on: the next command commits.
    domain.process_command(domain.create_command("edit-note", {"body": "c"}, aggregate_id=note))
    assert list(Event.objects.filter(aggregate_id=note).values_list("version", flat=True)) == [1, 2]


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


# -- PostgreSQL: the command's one statement is its own transaction ----------------------------


def needs_postgresql():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://127.0.0.1:5432/test")


def renamed_after_create(*, cached: bool):
    """A user created, then renamed under libpq's trace (its aggregate cached, or read first)."""
    from django_fluvius.write.cache import aggregate_cache
    from tests.pg_trace import protocol_trace

    needs_postgresql()
    domain = UserDomain()
    created = domain.process_command(domain.create_command("create-user", {"name": "Ann", "email": "a@example.com"}))
    if not cached:
        aggregate_cache.clear()
    with protocol_trace() as sent:
        domain.process_command(domain.create_command("rename-user", {"name": "Bea"}, aggregate_id=created.aggregate_id))
    assert User.objects.get(pk=created.aggregate_id).name == "Bea"
    return created, sent


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_command_whose_aggregate_is_cached_is_one_statement_without_begin_or_commit():
    """The write statement is the whole transaction: atomic as one statement, committed durably."""
    from tests.pg_trace import simple_queries

    created, sent = renamed_after_create(cached=True)
    assert simple_queries(sent) == [], sent
    assert [m.split()[0] for m in sent].count("Execute") == 1, sent
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"  # the statement's commit is as durable as COMMIT's
    assert list(Event.objects.filter(aggregate_id=created.aggregate_id).values_list("version", flat=True)) == [1, 2]
    assert CommandLog.objects.filter(aggregate_id=created.aggregate_id).count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_command_that_reads_first_keeps_its_transaction():
    """The stream read and the write must see and commit together: BEGIN, read, write, COMMIT."""
    from tests.pg_trace import simple_queries

    _created, sent = renamed_after_create(cached=False)
    assert simple_queries(sent) == ["BEGIN", "COMMIT"], sent


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_inside_a_callers_transaction_the_command_rolls_back_with_it():
    needs_postgresql()
    domain = UserDomain()
    with pytest.raises(RuntimeError), transaction.atomic():
        domain.process_command(domain.create_command("create-user", {"name": "Ann", "email": "a@example.com"}))
        raise RuntimeError("the caller changes its mind")
    assert not Event.objects.exists() and not User.objects.exists() and not CommandLog.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_after_append_that_fails_takes_the_command_back(monkeypatch):
    """An overridden ``after_append`` is assumed to write: the command keeps its transaction, and
    a failure there leaves nothing stored (every backend)."""
    def after_append(self, aggregate, events):
        raise DomainError("the snapshot store is down")

    domain = UserDomain()
    first = domain.process_command(domain.create_command("create-user", {"name": "Ann", "email": "a@example.com"}))
    monkeypatch.setattr(UserDomain, "after_append", after_append)
    for command in (domain.create_command("create-user", {"name": "Bea", "email": "b@example.com"}),
                    domain.create_command("rename-user", {"name": "Cy"}, aggregate_id=first.aggregate_id)):
        with pytest.raises(DomainError):
            domain.process_command(command)
    assert list(Event.objects.values_list("aggregate_id", "version")) == [(first.aggregate_id, 1)]
    assert list(User.objects.values_list("name", flat=True)) == ["Ann"]


def test_writes_after_append_says_when_a_snapshot_is_due(monkeypatch):
    from django_fluvius.write.aggregate import Aggregate

    class Every3(Aggregate):
        snapshot_every = 3

    domain = UserDomain()
    aggregate = Every3("00000000-0000-0000-0000-000000000001", "user")
    answers = []
    for version in (1, 2, 3, 4):
        aggregate.version = version
        answers.append(domain.writes_after_append(aggregate, [object()]))
    assert answers == [False, False, True, False]
    monkeypatch.setattr(UserDomain, "after_append", lambda self, aggregate, events: None)
    aggregate.version = 1
    assert domain.writes_after_append(aggregate, [object()]) is True  # an override is assumed to write
