"""What sealing personal data costs (issue 20): the core scenario and a 100-event load, with and without.

Subject and baseline are the example's user domain under two namespaces, in the same
run and on the same tables: one declares ``__personal__ = {"user": ["name", "email"]}``
(every create and rename seals, every cached state is sealed and opened), the other
declares nothing.

1. The core scenario (``bench.core``): users created then renamed 10 times, one command at
   a time, durable commits. Target: personal <= 1.10x plain.
2. ``domain.load`` of a 100-event aggregate (1 create + 99 renames; no snapshot, no aggregate
   cache: every event read, opened and folded), many loads per run. Target: <= 1.2x plain.

Both are measured as wall time and as this process's CPU time (``time.process_time``: the
database server's work is not in it, nor the other load of a shared machine), in many short
pairs of runs (subject then baseline, alternating the order); a ratio is the median of the
pairs' ratios, which a slowly drifting machine load affects least. The count of Python
function calls (cProfile), which no load changes, is given beside them. The subject keys are cached (``PRIVACY_KEY_CACHE_SECONDS``), as in steady state.
"""

from __future__ import annotations

import base64
import statistics
import time
import uuid

from bench.common import arg_parser, report, setup_django

RENAMES = 10
LOAD_EVENTS = 100


def domains():
    from example_project.users.domain import UserDomain

    class PlainUsers(UserDomain):
        __namespace__ = "bench-plain-user"

    class PersonalUsers(UserDomain):
        __namespace__ = "bench-personal-user"
        __personal__ = {"user": ["name", "email"]}

    return PlainUsers, PersonalUsers


def scenario(domain, users: int) -> tuple[float, float]:
    """(wall, cpu) seconds of the core scenario through ``domain``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(users):
        result = domain.process_command(
            domain.create_command("create-user", {"name": f"user {i}", "email": f"u{i}@example.com"}))
        for n in range(RENAMES):
            domain.process_command(domain.create_command("rename-user", {"name": f"user {i} v{n}"},
                                                         aggregate_id=result.aggregate_id))
    return time.perf_counter() - wall, time.process_time() - cpu


def long_aggregate(domain) -> uuid.UUID:
    result = domain.process_command(domain.create_command("create-user", {"name": "Long", "email": "l@example.com"}))
    for n in range(LOAD_EVENTS - 1):
        domain.process_command(domain.create_command("rename-user", {"name": f"Long {n}"},
                                                     aggregate_id=result.aggregate_id))
    return result.aggregate_id


def loads(domain, aggregate_id: uuid.UUID, count: int) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        aggregate = domain.load(aggregate_id)
    assert aggregate.version == LOAD_EVENTS and aggregate.state["email"] == "l@example.com"
    return time.perf_counter() - wall, time.process_time() - cpu


def pairs(subject, baseline, runs: int) -> dict[str, float]:
    """Many short interleaved (wall, cpu) runs of subject and baseline; medians of each side and of
    the ratio within each pair (a shared machine's load drifts slowly: a pair sees the same load)."""
    values: dict[str, list[float]] = {k: [] for k in ("wall_s", "wall_b", "cpu_s", "cpu_b", "wall_r", "cpu_r")}
    for i in range(runs):
        order = (("s", subject), ("b", baseline)) if i % 2 == 0 else (("b", baseline), ("s", subject))
        got = {}
        for name, func in order:
            got[name] = func()
        for n, kind in ((0, "wall"), (1, "cpu")):
            values[f"{kind}_s"].append(got["s"][n])
            values[f"{kind}_b"].append(got["b"][n])
            values[f"{kind}_r"].append(got["s"][n] / got["b"][n])
    return {key: statistics.median(v) for key, v in values.items()}


def call_count(func) -> int:
    """Python function calls ``func`` makes (cProfile): a machine-independent measure of CPU work."""
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    profile.enable()
    func()
    profile.disable()
    return pstats.Stats(profile, stream=io.StringIO()).total_calls


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--users", type=int, default=10, help="users per run of the core scenario")
    parser.add_argument("--loads", type=int, default=20, help="loads per run")
    parser.set_defaults(runs=40)
    args = parser.parse_args(argv)
    users = 5 if args.quick else args.users
    count = 3 if args.quick else args.loads
    runs = 2 if args.quick else args.runs
    setup_django("fluvius_bench_privacy", sqlite=args.sqlite)

    from django.conf import settings
    from django.db import connection
    from django.test import override_settings

    def settings_fluvius() -> dict:
        return dict(settings.FLUVIUS)

    kek = base64.urlsafe_b64encode(b"bench-kek-32-bytes-long-exactly!").decode()
    plain_class, personal_class = domains()
    with override_settings(FLUVIUS={**settings_fluvius(), "DISPATCH": None, "PRIVACY_KEK": kek,
                                    "SNAPSHOT_EVERY": None}):
        plain, personal = plain_class(), personal_class()
        scenario(plain, 2)  # warm up both paths (imports, caches, connections)
        scenario(personal, 2)
        core = pairs(lambda: scenario(personal, users), lambda: scenario(plain, users), runs)
        core_calls = call_count(lambda: scenario(personal, users)) / call_count(lambda: scenario(plain, users))

        plain_id, personal_id = long_aggregate(plain), long_aggregate(personal)
        # Every event read from the store: no aggregate cache stands in for the stream.
        with override_settings(FLUVIUS={**settings_fluvius(), "DISPATCH": None, "PRIVACY_KEK": kek,
                                        "SNAPSHOT_EVERY": None, "AGGREGATE_CACHE_SIZE": 0}):
            loads(plain, plain_id, 2)
            loads(personal, personal_id, 2)
            load = pairs(lambda: loads(personal, personal_id, count), lambda: loads(plain, plain_id, count), runs)
            load_calls = (call_count(lambda: loads(personal, personal_id, count))
                          / call_count(lambda: loads(plain, plain_id, count)))
    vendor = connection.vendor
    connection.close()
    commands = users * (1 + RENAMES)
    return report("privacy", {
        "core: plain commands/s (median)": commands / core["wall_b"],
        "core: personal commands/s (median)": commands / core["wall_s"],
        "core: personal / plain, wall (target <= 1.1)": core["wall_r"],
        "core: personal / plain, process CPU": core["cpu_r"],
        "core: personal / plain, Python calls": core_calls,
        "load 100 events: plain ms (median)": core_ms(load["wall_b"], count),
        "load 100 events: personal ms (median)": core_ms(load["wall_s"], count),
        "load: personal / plain, wall (target <= 1.2)": load["wall_r"],
        "load: personal / plain, process CPU": load["cpu_r"],
        "load: personal / plain, Python calls": load_calls,
    }, lines=[f"{users} users x (1 create + {RENAMES} renames); {count} loads of a {LOAD_EVENTS}-event aggregate; "
              f"{runs} pairs of runs, interleaved; ratios: median of the pairs' ratios; {vendor}; "
              "two personal fields vs none"])


def core_ms(seconds: float, count: int) -> float:
    return seconds / count * 1000


if __name__ == "__main__":
    main()
