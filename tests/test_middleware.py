"""The command-bus middleware chain: the default chain, order, removal, additions, async forms,
and the framework's own logging, timing and retry middleware."""

import asyncio
import logging
import threading
import uuid

import pytest
from django.conf import settings
from django.test import override_settings

from django_fluvius import ConcurrencyConflict, DomainContext, DomainError, PermissionDenied
from django_fluvius.conf import fluvius_settings
from django_fluvius.models import CommandLog, Event
from django_fluvius.security.permissions import AuthorizationMiddleware
from django_fluvius.write.bus import active_middleware
from django_fluvius.write.cache import aggregate_cache
from django_fluvius.write.middleware import (
    LoggingMiddleware,
    RetryMiddleware,
    TimingMiddleware,
    command_timed,
)
from example_project.users.domain import UserDomain
from tests.security_support import as_user, run
from tests.testapp import tickets as tickets_module
from tests.testapp.tickets import TicketDomain

pytest_plugins = ["tests.security_fixtures"]
pytestmark = pytest.mark.django_db

DEFAULT_CHAIN = [LoggingMiddleware, TimingMiddleware, AuthorizationMiddleware, RetryMiddleware]


def chain(*middleware):
    return override_settings(FLUVIUS={**settings.FLUVIUS, "COMMAND_MIDDLEWARE": list(middleware)})


def create_user(domain=None, **payload):
    domain = domain or UserDomain()
    return run(domain, "create-user", {"name": "Ada", "email": "ada@example.com", **payload})


def recorder(name, calls):
    def middleware(command, call_next):
        calls.append(f"{name}>")
        try:
            return call_next(command)
        finally:
            calls.append(f"<{name}")

    return middleware


# -- the chain --------------------------------------------------------------------------------


def test_the_default_chain_is_the_frameworks_middleware_in_order():
    assert [type(m) for m in active_middleware()] == DEFAULT_CHAIN
    assert fluvius_settings.COMMAND_MIDDLEWARE == DEFAULT_CHAIN  # dotted paths, imported


def test_middleware_runs_outermost_first_around_the_transaction():
    calls = []

    def core_spy(command, call_next):
        calls.append("core")
        return call_next(command)

    with chain(recorder("a", calls), recorder("b", calls), core_spy):
        create_user()
    assert calls == ["a>", "b>", "core", "<b", "<a"]


def test_classes_are_instantiated_once_per_settings():
    made = []

    class Counting:
        def __init__(self):
            made.append(self)

        def __call__(self, command, call_next):
            return call_next(command)

    with chain(Counting):
        for i in range(3):
            create_user(email=f"a{i}@example.com")
        assert len(made) == 1
    with chain(Counting, LoggingMiddleware):
        create_user(email="b@example.com")
    assert len(made) == 2


def test_removing_the_authorization_middleware_removes_its_checks(people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    bob = as_user(people["bob"], "acme")  # may not close tickets
    with pytest.raises(PermissionDenied):
        run(bob, "close-ticket", aggregate_id=ticket)
    with chain(LoggingMiddleware, TimingMiddleware):
        assert run(bob, "close-ticket", aggregate_id=ticket).state["status"] == "closed"


def test_reordered_authorization_stops_inner_middleware(people):
    calls = []
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "t"}).aggregate_id
    with chain(recorder("outer", calls), AuthorizationMiddleware, recorder("inner", calls)):
        with pytest.raises(PermissionDenied):
            run(as_user(people["bob"], "acme"), "close-ticket", aggregate_id=ticket)
    assert calls == ["outer>", "<outer"]


def test_an_empty_chain_runs_the_core_alone():
    with chain():
        result = create_user()
    assert result.version == 1 and result.duration_ms is None  # no TimingMiddleware
    assert CommandLog.objects.get().status == "done"


def test_a_middleware_refusal_is_logged_and_stores_nothing():
    def closed_for_maintenance(command, call_next):
        raise DomainError("Closed for maintenance.", code="maintenance")

    with chain(LoggingMiddleware, closed_for_maintenance):
        with pytest.raises(DomainError):
            create_user()
    assert not Event.objects.exists()
    log = CommandLog.objects.get()
    assert (log.status, log.error_code, log.command) == ("rejected", "maintenance", "create-user")


def test_a_middleware_crash_is_logged_as_failed():
    def broken(command, call_next):
        raise ZeroDivisionError("bug")

    with chain(broken):
        with pytest.raises(ZeroDivisionError):
            create_user()
    assert CommandLog.objects.get().status == "failed" and not Event.objects.exists()


def test_a_middleware_sees_the_result_and_may_wrap_the_command_in_more():
    seen = []

    def audit(command, call_next):
        result = call_next(command)
        seen.append((command.key, result.version, result.events[0].position is not None))
        return result

    with chain(audit):
        create_user()
    assert seen == [("create-user", 1, True)]


def test_an_async_middleware_in_the_sync_bus_shares_its_transaction():
    seen = []

    async def async_audit(command, call_next):
        await asyncio.sleep(0)
        result = await call_next(command)
        seen.append(result.version)
        return result

    with chain(LoggingMiddleware, async_audit):
        result = create_user()
    # Written on this thread, inside the test's transaction: visible here.
    assert Event.objects.filter(aggregate_id=result.aggregate_id).count() == 1 and seen == [1]


class AsyncRefusal:
    async def __call__(self, command, call_next):
        if command.payload.get("name") == "Mallory":
            raise DomainError("Not Mallory.")
        return await call_next(command)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_an_async_middleware_class_with_aprocess_command():
    domain = UserDomain()

    async def go():
        with chain(AsyncRefusal, LoggingMiddleware):
            ok = await domain.aprocess_command(domain.create_command(
                "create-user", {"name": "Ada", "email": "ada@example.com"}))
            with pytest.raises(DomainError):
                await domain.aprocess_command(domain.create_command(
                    "create-user", {"name": "Mallory", "email": "m@example.com"}))
            return ok

    result = asyncio.run(go())
    assert result.version == 1
    assert list(CommandLog.objects.order_by("id").values_list("status", flat=True)) == ["done", "rejected"]


# -- logging --------------------------------------------------------------------------------


def test_logging_one_line_per_command_with_its_correlation(caplog):
    context = DomainContext.create(namespace="app-user", correlation_id="corr-1")
    domain = UserDomain(context)
    with caplog.at_level(logging.DEBUG, logger="django_fluvius.commands"):
        result = create_user(domain)
        with pytest.raises(DomainError):
            create_user(domain, email="bad")
    done, refused = [r for r in caplog.records if r.name == "django_fluvius.commands"]
    assert done.levelno == logging.DEBUG and "app-user:create-user on new done" in done.getMessage()
    assert str(result.aggregate_id) in done.getMessage() and done.correlation_id == "corr-1"
    assert refused.levelno == logging.INFO and "refused (create-user.invalid-email)" in refused.getMessage()
    assert refused.command == "app-user:create-user"


def test_logging_a_crash_with_its_traceback(caplog):
    def broken(command, call_next):
        raise ZeroDivisionError("bug")

    with chain(LoggingMiddleware, broken), caplog.at_level(logging.ERROR, logger="django_fluvius.commands"):
        with pytest.raises(ZeroDivisionError):
            create_user()
    [record] = [r for r in caplog.records if r.name == "django_fluvius.commands"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is ZeroDivisionError


# -- timing ---------------------------------------------------------------------------------


def test_timing_fills_the_duration_and_tells_listeners():
    heard = []

    def listener(sender, command, result, error, duration, **kwargs):
        heard.append((command.key, result is not None, error, duration))

    command_timed.connect(listener)
    try:
        result = create_user()
        with pytest.raises(DomainError):
            create_user(email="bad")
    finally:
        command_timed.disconnect(listener)
    assert result.duration_ms > 0
    assert [(k, ok, type(e).__name__) for k, ok, e, _ in heard] == [("create-user", True, "NoneType"),
                                                                   ("create-user", False, "DomainError")]
    assert all(d > 0 for *_, d in heard)


def test_timing_warns_about_slow_commands(caplog):
    with override_settings(FLUVIUS={**settings.FLUVIUS, "SLOW_COMMAND_MS": 0}):
        with caplog.at_level(logging.WARNING, logger="django_fluvius.commands"):
            create_user()
    assert any("took" in r.getMessage() and "SLOW_COMMAND_MS" in r.getMessage() for r in caplog.records)


# -- retry ----------------------------------------------------------------------------------


class FakeSpec:
    def __init__(self, retry_safe):
        self.retry_safe = retry_safe


class FakeCommand:
    namespace, key, aggregate_id = "ns", "cmd", None

    def __init__(self, retry_safe=True, expected_version=None):
        self.spec = FakeSpec(retry_safe)
        self.expected_version = expected_version


def losing(times, code="concurrency_conflict"):
    """A call_next that loses the race ``times`` times, then succeeds (a pure unit test)."""
    tries = []

    def call_next(command):
        tries.append(command)
        if len(tries) <= times:
            raise ConcurrencyConflict("lost", code=code)
        return "result"

    return call_next, tries


def test_retry_runs_a_retry_safe_command_again_after_a_lost_race():
    with override_settings(FLUVIUS={**settings.FLUVIUS, "COMMAND_RETRY_BACKOFF": 0}):
        retry = RetryMiddleware()
    call_next, tries = losing(2)
    assert retry(FakeCommand(), call_next) == "result" and len(tries) == 3
    call_next, tries = losing(3)
    with pytest.raises(ConcurrencyConflict):  # three tries in all by default
        retry(FakeCommand(), call_next)
    assert len(tries) == 3


@pytest.mark.parametrize(("command", "code"), [
    (FakeCommand(retry_safe=False), "concurrency_conflict"),      # not declared safe
    (FakeCommand(expected_version=3), "concurrency_conflict"),     # the caller named a version
    (FakeCommand(), "stale_version"),                              # not a race: a stale If-Match
    (FakeCommand(), "already_exists"),                             # not a race: the id is taken
])
def test_retry_leaves_other_conflicts_alone(command, code):
    call_next, tries = losing(1, code=code)
    with pytest.raises(ConcurrencyConflict):
        RetryMiddleware()(command, call_next)
    assert len(tries) == 1


def race(ticket, key, threads=2):
    """``threads`` writers load the same version, wait for each other inside the action, then append."""
    from tests.test_concurrency import in_threads

    barrier = threading.Barrier(threads, timeout=20)
    waited = threading.local()

    def hook(aggregate):
        if not getattr(waited, "done", False):  # only the first try of each writer waits
            waited.done = True
            barrier.wait()

    tickets_module.hooks["bump"] = hook
    # Both load from the store: a command that loaded from the aggregate cache and lost is
    # run again from the store by the core itself (cache.py), whatever its action says.
    aggregate_cache.clear()

    def write(i):
        domain = TicketDomain(DomainContext.system(tenant="acme"))
        return run(domain, key, aggregate_id=ticket)

    return in_threads(threads, write)


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_a_retry_safe_command_survives_a_real_race(people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "race"}).aggregate_id
    with override_settings(FLUVIUS={**settings.FLUVIUS, "COMMAND_RETRY_BACKOFF": 0.001}):
        outcomes = race(ticket, "bump-ticket")
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    assert sorted(o.version for o in outcomes) == [2, 3]
    assert TicketDomain(DomainContext.system()).load(ticket).state["bumps"] == 2
    # One log row per command: the final outcome, not each try.
    assert list(CommandLog.objects.filter(command="bump-ticket").values_list("status", flat=True)) == ["done"] * 2


@pytest.mark.server_database
@pytest.mark.django_db(transaction=True)
def test_a_command_not_declared_retry_safe_loses_the_race(people):
    ticket = run(as_user(people["alice"], "acme"), "open-ticket", {"title": "race"}).aggregate_id
    outcomes = race(ticket, "escalate-ticket")
    assert sorted(type(o).__name__ for o in outcomes) == ["CommandResult", "ConcurrencyConflict"]
    assert Event.objects.filter(aggregate_id=ticket).count() == 2


def test_retry_is_off_with_one_try():
    with override_settings(FLUVIUS={**settings.FLUVIUS, "COMMAND_RETRY_TRIES": 1}):
        retry = RetryMiddleware()
    call_next, tries = losing(1)
    with pytest.raises(ConcurrencyConflict):
        retry(FakeCommand(), call_next)
    assert len(tries) == 1


# -- the command and the guards -----------------------------------------------------------


def test_guards_run_inside_the_transaction_before_the_action():
    seen = []

    def guard_adder(command, call_next):
        command.add_guard(guard)
        command.add_guard(guard)  # once is enough
        return call_next(command)

    def guard(command, aggregate):
        seen.append((aggregate.version, aggregate.state.get("name")))
        if aggregate.state.get("name") == "Locked":
            raise PermissionDenied("Locked.")

    created = create_user(name="Locked")
    with chain(guard_adder):
        with pytest.raises(PermissionDenied):
            run(UserDomain(), "rename-user", {"name": "Free"}, aggregate_id=created.aggregate_id)
    assert seen == [(1, "Locked")]
    assert Event.objects.filter(aggregate_id=created.aggregate_id).count() == 1
    assert CommandLog.objects.filter(command="rename-user").get().error_code == "permission_denied"


def test_an_unknown_aggregate_is_not_found_before_any_guard():
    from django_fluvius import AggregateNotFound

    called = []

    def guard_adder(command, call_next):
        command.add_guard(lambda c, a: called.append(a))
        return call_next(command)

    with chain(guard_adder), pytest.raises(AggregateNotFound):
        run(UserDomain(), "rename-user", {"name": "x"}, aggregate_id=uuid.uuid4())
    assert called == []
