"""POST of a create command through the whole DRF stack vs a plain DRF create (issue 3).

Subject: ``POST /api/app-user/create-user/`` through ``DomainRouter``'s command
view: payload validation, the command bus (event, inline projection, command
log in one transaction), the JSON response with ETag and Location.

Baseline, in the same run on the same database and the same ``app_user_user``
table: a plain ``ModelViewSet`` create of the same fields (one ``INSERT``).

Both go through Django's WSGI handler (middleware, URL resolving, DRF
authentication, parsing, rendering), one request at a time, with persistent
database connections (``CONN_MAX_AGE``) as a production site would have. The
example project's ``@event_handler`` functions (a welcome email) are
unregistered: they are the project's own work after commit, not the endpoint's.

``--concurrency N`` (issue 15): the same two paths served by gunicorn (2 sync
workers, persistent database connections, durable commits) under the ``wrk``
load generator with N connections (``apt-get install wrk``), interleaved runs of
``--seconds`` each; the figure is requests/s of each and the cost ratio
plain/command (target <= 1.3).
"""

from __future__ import annotations

import io
import json
import sys
import time
import types
import uuid

from bench.common import arg_parser, interleaved, report, setup_django


def build_urlconf():
    from django.urls import include, path
    from rest_framework import routers, serializers, viewsets

    from django_fluvius.rest import DomainRouter
    from example_project.users.domain import UserDomain
    from example_project.users.models import User

    # Open, as the plain viewset is (the example project's own router asks for a signed-in user).
    domain_router = DomainRouter()
    domain_router.register(UserDomain)

    class UserSerializer(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["id", "name", "email", "active", "version", "created_at", "updated_at"]
            read_only_fields = ["id", "version", "created_at", "updated_at"]

    class PlainUsers(viewsets.ModelViewSet):
        queryset = User.objects.all()
        serializer_class = UserSerializer

        def perform_create(self, serializer):
            serializer.save(id=uuid.uuid4())  # ModelSerializer.create: one INSERT

    plain = routers.SimpleRouter()
    plain.register("users", PlainUsers, basename="plain-user")
    module = types.ModuleType("bench_rest_urls")
    module.urlpatterns = [path("plain/", include(plain.urls)), path("api/", include(domain_router.urls))]
    return module


def wsgi_post(handler, path: str, body: dict) -> tuple[int, bytes]:
    raw = json.dumps(body).encode()
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(raw)),
        "HTTP_HOST": "127.0.0.1", "HTTP_ACCEPT": "application/json",
        "wsgi.input": io.BytesIO(raw), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }
    status_holder = {}

    def start_response(status, headers, exc_info=None):
        status_holder["status"] = int(status.split()[0])

    response = handler(environ, start_response)
    content = b"".join(response)
    response.close()  # request_finished: what a WSGI server does after each request
    return status_holder["status"], content


def run_requests(handler, path: str, n: int, tag: str) -> float:
    start = time.perf_counter()
    for i in range(n):
        status, content = wsgi_post(handler, path, {"name": f"{tag} {i}", "email": f"{tag}{i}@example.com"})
        if status != 201:
            raise SystemExit(f"{path} answered {status}: {content[:300]!r}")
    return (time.perf_counter() - start) / n


def without_handlers() -> None:
    """Unregister the example's @event_handler functions (their work is not the endpoint's)."""
    from django_fluvius.delivery.handlers import handlers

    for spec in list(handlers):
        handlers.unregister(spec.name)


# -- --concurrency: gunicorn and wrk --------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"
wrk.body = '{"name": "Ann Smith", "email": "ann@example.com"}'
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk_rate(url: str, clients: int, seconds: float, script: str) -> float:
    """Requests/s of ``wrk`` POSTing to ``url`` with ``clients`` connections; every answer must be a 201."""
    import re
    import subprocess

    done = subprocess.run(["wrk", "-t", str(min(clients, 2)), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
                           "-s", script, url], capture_output=True, text=True, check=True)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    if bad:
        raise SystemExit(f"{url}: {bad.group(1)} answers were not 201\n{done.stdout}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))


def concurrency(args, url: str) -> dict:
    """gunicorn (2 sync workers) under ``wrk`` (``--concurrency`` clients), both paths interleaved."""
    import os
    import shutil
    import statistics
    import subprocess
    import tempfile
    import urllib.request
    from pathlib import Path

    from bench.common import ROOT

    if shutil.which("wrk") is None:
        raise SystemExit("--concurrency needs the wrk load generator (apt-get install wrk).")
    seconds = 2 if args.quick else args.seconds
    runs = 1 if args.quick else args.runs
    port = free_port()
    env = {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    gunicorn = Path(sys.executable).parent / "gunicorn"
    server = subprocess.Popen([str(gunicorn), "--workers", "2", "--worker-class", "sync", "--bind",
                               f"127.0.0.1:{port}", "--log-level", "warning", "bench.rest_wsgi:application"],
                              cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    paths = {"command": "/api/app-user/create-user/", "plain": "/plain/users/"}
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/plain/users/?limit=1", timeout=1)
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_SCRIPT)
        for path in paths.values():  # warm up both workers, both paths
            wrk_rate(base + path, args.concurrency, 1, f.name)
        rates: dict[str, list[float]] = {"command": [], "plain": []}
        for i in range(runs):
            for name in (("command", "plain") if i % 2 == 0 else ("plain", "command")):
                rates[name].append(wrk_rate(base + paths[name], args.concurrency, seconds, f.name))
    finally:
        server.terminate()
        server.wait(timeout=30)
    command, plain = statistics.median(rates["command"]), statistics.median(rates["plain"])
    return report("rest_create_concurrency", {
        "command endpoint requests/s (median)": command,
        "plain ModelViewSet create requests/s (median)": plain,
        "command / plain cost per request (target <= 1.3)": plain / command,
    }, lines=[
        f"gunicorn, 2 sync workers; wrk, {args.concurrency} connections, {seconds} s per run, {runs} runs each, "
        "interleaved; PostgreSQL, durable commits, persistent database connections",
        "(gunicorn's sync workers close the HTTP connection after each response: wrk reconnects)",
        "runs: command " + ", ".join(f"{r:,.0f}" for r in rates["command"])
        + "; plain " + ", ".join(f"{r:,.0f}" for r in rates["plain"]),
    ])


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per run and path")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="N concurrent clients (wrk) against gunicorn with 2 sync workers")
    parser.add_argument("--seconds", type=int, default=10, help="--concurrency: seconds per run")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.requests
    runs = 1 if args.quick else args.runs
    url = setup_django("fluvius_bench_rest", sqlite=args.sqlite)
    if args.concurrency:
        if args.sqlite:
            raise SystemExit("--concurrency runs on PostgreSQL.")
        return concurrency(args, url)

    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection
    from django.urls import clear_url_caches

    without_handlers()
    settings.ROOT_URLCONF = build_urlconf()
    clear_url_caches()
    # Persistent connections, as in production: neither path pays a connect per request.
    connection.settings_dict["CONN_MAX_AGE"] = 600
    connection.close()
    handler = WSGIHandler()

    run_requests(handler, "/api/app-user/create-user/", 20, "warm-cmd")
    run_requests(handler, "/plain/users/", 20, "warm-plain")
    counter = iter(range(10**6))

    def measure() -> tuple[float, float]:
        timings = interleaved(
            lambda: run_requests(handler, "/api/app-user/create-user/", n, f"cmd{next(counter)}"),
            lambda: run_requests(handler, "/plain/users/", n, f"plain{next(counter)}"),
            runs,
        )
        return timings["subject"] * 1000, timings["baseline"] * 1000

    subject_ms, baseline_ms = measure()
    figures = {
        "command endpoint ms/request (median)": subject_ms,
        "plain ModelViewSet create ms/request (median)": baseline_ms,
        "command / plain (target <= 1.5)": subject_ms / baseline_ms,
    }
    lines = [f"{n} POSTs per run and path, {runs} runs each, interleaved, "
             f"{'SQLite' if args.sqlite else 'PostgreSQL'}, WSGI handler in process, persistent connection"]
    if not args.sqlite:
        # The same without waiting for the WAL flush at commit: what is left is the
        # CPU and round trips of each path (the durable figure above is the target).
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")
        subject_fast, baseline_fast = measure()
        figures.update({
            "no-fsync: command ms/request (median)": subject_fast,
            "no-fsync: plain create ms/request (median)": baseline_fast,
            "no-fsync: command / plain": subject_fast / baseline_fast,
        })
        lines.append("no-fsync figures: the same session with synchronous_commit off (informational)")
    connection.close()
    return report("rest_create", figures, lines=lines)


if __name__ == "__main__":
    main()
