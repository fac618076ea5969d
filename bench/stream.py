"""The event stream and read-your-writes (issue 19).

1. Latency from a command's COMMIT to the event arriving at connected SSE clients of
   ``GET /api/app-user/_stream/``, served by uvicorn (one worker, ASGI: no thread per
   client), median and p99 over every (event, client) pair. The commands run in the
   benchmark process, one at a time with a pause between them: the server hears of
   them as of any other process's (PostgreSQL ``NOTIFY`` to its feed reader; on SQLite
   its poll). The commit time is stamped by an on-commit callback registered
   inside the command's transaction; the clients (asyncio sockets in a thread of the
   benchmark process, same clock) stamp the arrival of each ``id:`` line.
   Subject: 100 connected clients. Baseline, same run: 1 connected client. Target:
   p99 <= 100 ms with 100 clients.

2. Memory per connected client: the server's resident set (VmRSS) with the 100 clients
   connected and caught up, minus its RSS before they connected, divided by 100.

3. A list read with ``Fluvius-Min-Position`` already satisfied vs the same read
   without it: ``GET /api/app-user/user/?limit=20`` through Django's handler in this
   process, interleaved, process CPU time (robust against other load on the machine).
   Target: <= 1.05x. Also the CPU time of the code a satisfied position adds (reading the
   header, the wait finding the position reached) measured alone over many calls, as a
   share of the plain read: a steadier figure than the difference of two whole reads on a
   shared machine. Informational: the same with the process's memory of reached
   positions dropped before every read (the first read of a position: one look at the
   event table), and with an async projection feeding the model (its checkpoint read).

PostgreSQL by default (bench/common.py makes the database); --sqlite for SQLite.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.common import ROOT, arg_parser, interleaved, report, setup_django


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def start_server(port: int, url: str) -> subprocess.Popen:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "bench.settings", "DATABASE_URL": url,
           "PYTHONPATH": str(ROOT)}
    env.pop("FLUVIUS_TEST_DB_NAME", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "example_project.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"uvicorn exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("uvicorn did not answer within 60 s")


class Clients:
    """``count`` SSE clients on one asyncio loop (a thread): the arrival time of each event id."""

    def __init__(self, port: int, count: int):
        self.port = port
        self.count = count
        self.arrivals: dict[int, list[float]] = {}
        self.opened = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)
        self.stop: asyncio.Event | None = None

    def start(self) -> Clients:
        self.thread.start()
        if not self.opened.wait(60):
            raise SystemExit("the SSE clients did not connect")
        return self

    def close(self) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)

    async def _main(self) -> None:
        self.stop = asyncio.Event()
        ready = [asyncio.Event() for _ in range(self.count)]
        tasks = [asyncio.create_task(self._client(r)) for r in ready]
        await asyncio.gather(*(r.wait() for r in ready))
        self.opened.set()
        await self.stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _client(self, ready: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.write(b"GET /api/app-user/_stream/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Accept: text/event-stream\r\n\r\n")
        await writer.drain()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"retry:"):
                    ready.set()  # attached to the feed: what commits from now on comes
                elif line.startswith(b"id: "):
                    self.arrivals.setdefault(int(line[4:]), []).append(time.perf_counter())
        finally:
            writer.close()


def latency(port: int, clients: int, commands: int, pause: float) -> list[float]:
    """Commit-to-arrival latencies (ms) of ``commands`` commands with ``clients`` connected."""
    from django.db import transaction

    from django_fluvius.write.bus import events_appending
    from example_project.users.domain import UserDomain

    committed: dict[int, float] = {}

    def stamp(events, using, **kwargs):
        # Positions are set once the batch is written: read them at commit.
        transaction.on_commit(lambda: committed.update(dict.fromkeys([e.position for e in events],
                                                                     time.perf_counter())), using=using)

    events_appending.connect(stamp, dispatch_uid="bench.stream.stamp")
    group = Clients(port, clients).start()
    try:
        time.sleep(0.5)
        domain = UserDomain()
        for i in range(commands):
            domain.process_command(domain.create_command("create-user", {"name": f"u{i}",
                                                                         "email": f"u{i}@example.com"}))
            time.sleep(pause)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sum(map(len, group.arrivals.values())) < clients * commands:
            time.sleep(0.05)
    finally:
        group.close()
        events_appending.disconnect(dispatch_uid="bench.stream.stamp")
    got = sum(map(len, group.arrivals.values()))
    if got < clients * commands:
        raise SystemExit(f"only {got} of {clients * commands} events arrived")
    return [(arrival - committed[pos]) * 1000 for pos, arrivals in group.arrivals.items() for arrival in arrivals]


def memory_per_client(port: int, pid: int, clients: int) -> tuple[float, int]:
    """KiB of the server's RSS per connected client, and its RSS before (KiB)."""
    before = rss_kib(pid)
    group = Clients(port, clients).start()
    try:
        time.sleep(1.0)
        with_clients = rss_kib(pid)
    finally:
        group.close()
    return (with_clients - before) / clients, before


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def min_position_reads(reads: int, runs: int) -> dict[str, float]:
    from django.test import Client

    from django_fluvius.delivery.projections import AsyncProjection, async_projections, on
    from django_fluvius.read import consistency
    from example_project.users.domain import UserDomain
    from example_project.users.models import User

    domain = UserDomain()
    result = None
    for i in range(40):
        result = domain.process_command(domain.create_command("create-user", {"name": f"r{i}",
                                                                             "email": f"r{i}@example.com"}))
    assert result is not None
    position = result.events[-1].position
    client = Client()
    url = "/api/app-user/user/?limit=20"
    header = {"HTTP_FLUVIUS_MIN_POSITION": str(position)}
    assert client.get(url, **header).status_code == 200

    def timed(extra: dict, before=None) -> float:
        # CPU time of this thread only: the relay thread and the machine's other load stay out.
        start = time.thread_time()
        for _ in range(reads):
            if before is not None:
                before()
            response = client.get(url, **extra)
            assert response.status_code == 200, response.content[:300]
        return time.thread_time() - start

    figures: dict[str, float] = {}
    # What a satisfied position adds, alone: reading the header and the wait that finds the
    # position reached (thread CPU time of many calls; steadier than two whole reads).
    from django.test import RequestFactory
    from rest_framework.request import Request

    from django_fluvius.rest.views import min_position

    request = Request(RequestFactory().get(url, **header))
    calls = 20_000 if reads > 100 else 1_000
    start = time.thread_time()
    for _ in range(calls):
        domain.statemgr.wait("user", min_position(request))
    added = (time.thread_time() - start) / calls
    satisfied = interleaved(lambda: timed(header), lambda: timed({}), runs)
    # The same pair read by read (A, B, A, B ...): drift between runs cancels out.
    paired = {True: 0.0, False: 0.0}
    for i in range(reads * runs):
        with_header = i % 2 == 0
        start = time.thread_time()
        client.get(url, **(header if with_header else {}))
        paired[with_header] += time.thread_time() - start
    figures["satisfied min-position read / plain read (target <= 1.05)"] = satisfied["subject"] / satisfied["baseline"]
    figures["plain read CPU ms"] = satisfied["baseline"] / reads * 1000
    figures["the same, read by read alternately"] = paired[True] / paired[False]
    figures["satisfied min-position: CPU us added per read (reads' difference)"] = (
        (satisfied["subject"] - satisfied["baseline"]) / reads * 1e6)
    figures["satisfied min-position: CPU us of its own code per read"] = added * 1e6
    figures["plain read + its own code / plain read"] = 1 + added / (satisfied["baseline"] / reads)
    first = interleaved(lambda: timed(header, consistency.forget), lambda: timed({}), runs)
    figures["first read of a position (inline) / plain read"] = first["subject"] / first["baseline"]

    class BenchUserTally(AsyncProjection, register=False):
        name = "bench.user-tally"
        namespace = "app-user"
        models = [User]

        @on("user-created")
        def created(self, event):
            return None

    async_projections.register(BenchUserTally)
    try:
        BenchUserTally().catch_up()
        fed = interleaved(lambda: timed(header, consistency.forget), lambda: timed({}), runs)
        figures["first read of a position (async projection) / plain read"] = fed["subject"] / fed["baseline"]
    finally:
        async_projections.unregister(BenchUserTally.name)
    return figures


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--commands", type=int, default=60, help="commands per latency run")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between commands")
    parser.add_argument("--reads", type=int, default=1000, help="reads per run of part 3")
    parser.add_argument("--reads-only", action="store_true", help="part 3 only (no server)")
    args = parser.parse_args(argv)
    quick = args.quick
    clients = 5 if quick else args.clients
    commands = 5 if quick else args.commands
    runs = 1 if quick else args.runs
    db_name = f"fluvius_bench_stream_{os.getpid()}" if quick else "fluvius_bench_stream"
    url = setup_django(db_name, sqlite=args.sqlite)
    lines: list[str] = []
    figures: dict[str, float] = {}
    if not args.reads_only:
        figures.update(stream_figures(args, url, clients, commands, runs, lines))
    figures.update(min_position_reads(50 if quick else args.reads, runs))
    return report("stream" + ("_reads" if args.reads_only else ""), figures, lines=lines)


def stream_figures(args, url: str, clients: int, commands: int, runs: int, lines: list[str]) -> dict[str, float]:
    from django.db import connections

    figures: dict[str, float] = {}
    port = free_port()
    server = start_server(port, url)
    try:
        many: list[float] = []
        one: list[float] = []
        for i in range(runs):  # interleaved: 1 client, then 100, then 1 ...
            for count, into in (((1, one), (clients, many)) if i % 2 == 0 else ((clients, many), (1, one))):
                into.extend(latency(port, count, commands, args.pause))
        connections.close_all()
        per_client, idle = memory_per_client(port, server.pid, clients)
        figures[f"{clients} clients: latency median ms"] = statistics.median(many)
        figures[f"{clients} clients: latency p99 ms (target <= 100)"] = p99(many)
        figures["1 client: latency median ms"] = statistics.median(one)
        figures["1 client: latency p99 ms"] = p99(one)
        figures[f"p99 {clients} clients / 1 client"] = p99(many) / p99(one)
        figures["server KiB per connected client"] = per_client
        lines.append(f"{len(many)} (event, client) pairs with {clients} clients, {len(one)} with 1; "
                     f"{commands} commands per run, {args.pause}s apart, {runs} runs; server RSS idle {idle} KiB")
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    return figures


if __name__ == "__main__":
    main()
