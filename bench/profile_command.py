"""Where the time of one command goes (issue 15): µs per stage, from a profile.

Runs bench.core's scenario (users created then renamed 10 times, durable commits)
in a configuration of bench.core (``--config default`` or ``tuned``) under
``cProfile`` and prints, per command, the cumulative time of each stage of the
command path: payload validation, the middleware chain, loading the aggregate,
the action, building the event and the command-log row, the projection row, the
write statement, the commit and what runs after it (inline delivery, the
aggregate cache). A profile adds its own overhead to every Python call, so the
stages read high in absolute terms; compare them with each other, and before
with after on one machine. Informational: no target.
"""

from __future__ import annotations

import cProfile
import pstats

from bench.common import arg_parser, report, setup_django

# (stage, (module path suffix, function name)): cumulative time of that function.
STAGES: tuple[tuple[str, tuple[str, str]], ...] = (
    ("validate the payload (create_command)", ("django_fluvius/domain.py", "create_command")),
    ("the whole command (bus.handle)", ("django_fluvius/write/bus.py", "handle")),
    ("transaction: load, run, write, commit (_commit)", ("django_fluvius/write/bus.py", "_commit")),
    ("load the aggregate (load_for_command)", ("django_fluvius/domain.py", "load_for_command")),
    ("run the action (Aggregate.run)", ("django_fluvius/write/aggregate.py", "run")),
    ("build the event (new_event)", ("django_fluvius/write/bus.py", "new_event")),
    ("build the projection row (Domain.project)", ("django_fluvius/domain.py", "project")),
    ("build the command-log row (_log_entry)", ("django_fluvius/write/bus.py", "_log_entry")),
    ("the write statement (WriteBatch.flush)", ("django_fluvius/events/sql.py", "flush")),
    ("commit, with on-commit callbacks (Atomic.__exit__)", ("django/db/transaction.py", "__exit__")),
    ("  of which the COMMIT itself", ("psycopg/connection.py", "commit")),
    ("  of which inline delivery (dispatch.committed)", ("django_fluvius/delivery/dispatch.py", "committed")),
    ("  of which the aggregate cache (put)", ("django_fluvius/write/cache.py", "put")),
)


def stage_times(stats: pstats.Stats, commands: int) -> dict[str, float]:
    found: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for stage, (suffix, func) in STAGES:
            if name == func and filename.endswith(suffix):
                found[stage] = found.get(stage, 0.0) + ct
    return {stage: found.get(stage, 0.0) / commands * 1e6 for stage, _ in STAGES}


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--config", choices=("default", "tuned", "no-dispatch"), default="default")
    parser.add_argument("--command-log", choices=("all", "failures"), default="all",
                        help="FLUVIUS['COMMAND_LOG'] for the run (the command log's share)")
    args = parser.parse_args(argv)
    users = 5 if args.quick else args.users
    setup_django("fluvius_bench_profile", sqlite=args.sqlite)
    from django.conf import settings
    from django.test import override_settings

    from bench import core
    from example_project.users.domain import UserDomain

    with core.configuration(args.config), override_settings(
            FLUVIUS={**settings.FLUVIUS, "COMMAND_LOG": args.command_log}):
        domain = UserDomain()
        core.run_commands(domain, 3)  # warm up
        profile = cProfile.Profile()
        profile.enable()
        core.run_commands(domain, users)
        profile.disable()
    commands = users * (1 + core.RENAMES)
    figures = {f"{stage} (us/command)": value
               for stage, value in stage_times(pstats.Stats(profile), commands).items()}
    return report(f"profile_command_{args.config}_{args.command_log}", figures, lines=[
        f"{users} users x (1 create + {core.RENAMES} renames) under cProfile, configuration {args.config!r}, "
        f"COMMAND_LOG={args.command_log!r}; cumulative time per stage / commands",
    ])


if __name__ == "__main__":
    main()
