"""Inline delivery after a command's commit (issue 15), per call: wall time and this thread's CPU.

bench.core's scenario (users created, then renamed 10 times, durable commits) in its
default configuration (Django's default ``OPTIONS``, ``DISPATCH = "inline"``, the
example's handler on ``user-created``); every create's after-commit delivery
(``dispatch.committed``) is timed with ``time.perf_counter`` and ``time.thread_time``.
Two subjects, interleaved run by run:

- **after-commit path**: as installed, ``dispatch.deliver_committed`` (the lease and the
  feed's bound in one statement, the checkpoint moved in the delivery's transaction);
- **general round**: the same commits delivered by ``dispatch.deliver_pending`` for the
  same subscriptions (the round every relay runs: bound, checkpoints, which
  subscriptions have work, then lead, read, deliver, settle).

Figures are medians over every create of every run. CPU is the calling thread's only
(the database's work is not in it): robust on a shared machine. Informational: no
target; bench.core has the command-level targets.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.common import arg_parser, report, setup_django


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=200, help="users per run (each: 1 create + 10 renames)")
    args = parser.parse_args(argv)
    users, runs = (5, 1) if args.quick else (args.users, args.runs)
    setup_django("fluvius_bench_inline_delivery", sqlite=args.sqlite)
    from bench import core
    from django_fluvius.delivery import dispatch
    from example_project.users.domain import UserDomain

    short_path = dispatch.deliver_committed

    def general_round(using: str, names: Any, *, hint: int | None = None) -> Any:
        return dispatch.deliver_pending(using=using, names=set(names), hint=hint)

    subjects = {"after-commit path": short_path, "general round": general_round}
    calls: dict[str, list[tuple[float, float]]] = {name: [] for name in subjects}
    current: list[str] = []
    committed = dispatch.committed

    def timed(events: Any, using: str) -> None:
        if not events or events[0].evt_key != "user-created":
            committed(events, using)
            return
        wall, cpu = time.perf_counter(), time.thread_time()
        committed(events, using)
        calls[current[0]].append((time.perf_counter() - wall, time.thread_time() - cpu))

    dispatch.committed = timed  # type: ignore[assignment]  # what the commit's callback calls
    try:
        with core.configuration("default"):
            domain = UserDomain()
            for name, path in subjects.items():  # warm up both
                dispatch.deliver_committed = path  # type: ignore[assignment]
                current[:] = [name]
                core.run_commands(domain, 2)
            for values in calls.values():
                values.clear()
            names = list(subjects)
            for i in range(runs):
                for name in names[i % 2:] + names[:i % 2]:
                    dispatch.deliver_committed = subjects[name]  # type: ignore[assignment]
                    current[:] = [name]
                    core.run_commands(domain, users)
    finally:
        dispatch.committed = committed  # type: ignore[assignment]
        dispatch.deliver_committed = short_path  # type: ignore[assignment]
    figures: dict[str, float] = {"creates timed per subject": len(calls["after-commit path"])}
    for name, values in calls.items():
        figures[f"{name}: wall us/call (median)"] = statistics.median(w for w, _ in values) * 1e6
        figures[f"{name}: thread CPU us/call (median)"] = statistics.median(c for _, c in values) * 1e6
    figures["CPU: general round / after-commit path"] = (figures["general round: thread CPU us/call (median)"]
                                                         / figures["after-commit path: thread CPU us/call (median)"])
    return report("inline_delivery", figures, lines=[
        f"{users} users x (1 create + {core.RENAMES} renames), {runs} runs of each subject, interleaved, "
        f"{'SQLite' if args.sqlite else 'PostgreSQL'}; each create's after-commit delivery timed",
        "default configuration: Django's default OPTIONS, inline dispatch, the example's handler on user-created",
    ])


if __name__ == "__main__":
    main()
