"""Command throughput with the default command-bus middleware chain vs an empty chain (issue 9).

Scenario (as bench.core): N users, each created then renamed 10 times, one command at
a time, each its own durable transaction, run by a signed-in user's context (not a
system one, so the authorization middleware looks the command up on every call).

Subject: ``FLUVIUS['COMMAND_MIDDLEWARE']`` at its default (logging, timing,
authorization, retry). Baseline, in the same run on the same tables: the chain
empty. Runs interleaved, medians compared. Target: the default chain costs at most
5% (time ratio <= 1.05).

Also, informational and free of database noise: the chain alone around a core that
does nothing, in microseconds per command.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

from bench.common import arg_parser, interleaved, report, setup_django
from bench.core import RENAMES, run_commands


def chain_alone_us(domain, calls: int) -> float:
    """Microseconds per command of the active chain around a core that returns at once."""
    from django_fluvius.write.bus import active_middleware, build_chain

    command = domain.create_command("create-user", {"name": "x", "email": "x@example.com"})
    done = SimpleNamespace(aggregate_id=None, version=1, duration_ms=None)
    chain = build_chain(active_middleware(), lambda c: done)
    start = time.perf_counter()
    for _ in range(calls):
        chain(command)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=200)
    parser.set_defaults(runs=7)
    args = parser.parse_args(argv)
    users = 5 if args.quick else args.users
    runs = 1 if args.quick else args.runs
    setup_django("fluvius_bench_middleware", sqlite=args.sqlite)
    commands = users * (1 + RENAMES)

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import override_settings

    from django_fluvius import DomainContext
    from django_fluvius.conf import DEFAULTS, fluvius_settings
    from django_fluvius.security.permissions import AuthorizationMiddleware
    from example_project.users.domain import UserDomain

    fluvius = {key: value for key, value in settings.FLUVIUS.items() if key != "COMMAND_MIDDLEWARE"}
    user = get_user_model().objects.create_user("bench", password="bench")
    domain = UserDomain(DomainContext.create(namespace="app-user", user=user, source="http"))

    def with_chain(middleware):
        def measure() -> float:
            with override_settings(FLUVIUS={**fluvius, "COMMAND_MIDDLEWARE": middleware}):
                return run_commands(domain, users)
        return measure

    default_chain = with_chain(list(DEFAULTS["COMMAND_MIDDLEWARE"]))
    empty_chain = with_chain([])
    with override_settings(FLUVIUS={**fluvius, "COMMAND_MIDDLEWARE": list(DEFAULTS["COMMAND_MIDDLEWARE"])}):
        assert any(isinstance(m, type) and issubclass(m, AuthorizationMiddleware)
                   for m in fluvius_settings.COMMAND_MIDDLEWARE)
        alone_default = chain_alone_us(domain, 2_000 if args.quick else 200_000)
    with override_settings(FLUVIUS={**fluvius, "COMMAND_MIDDLEWARE": []}):
        alone_empty = chain_alone_us(domain, 2_000 if args.quick else 200_000)

    run_commands(domain, 2)  # warm up (imports, caches, prepared statements)
    timings = interleaved(default_chain, empty_chain, runs)
    connection.close()
    default_rate = commands / timings["subject"]
    empty_rate = commands / timings["baseline"]
    database = "SQLite" if args.sqlite else "PostgreSQL"
    # A smoke run keeps its figures apart from the measurement's.
    return report("middleware-quick" if args.quick else "middleware", {
        "commands per run": commands,
        "default chain commands/s (median)": default_rate,
        "empty chain commands/s (median)": empty_rate,
        "default chain / empty chain (target <= 1.05)": timings["subject"] / timings["baseline"],
        "chain alone, default: microseconds per command": alone_default,
        "chain alone, empty: microseconds per command": alone_empty,
    }, lines=[f"{users} users x (1 create + {RENAMES} renames) by a signed-in user's context, {runs} runs "
              f"each, interleaved, durable commits, {database}",
              "default chain: LoggingMiddleware, TimingMiddleware, AuthorizationMiddleware, RetryMiddleware"])


if __name__ == "__main__":
    main()
