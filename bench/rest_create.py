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
"""

from __future__ import annotations

import io
import json
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


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--requests", type=int, default=500, help="requests per run and path")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.requests
    runs = 1 if args.quick else args.runs
    setup_django("fluvius_bench_rest", sqlite=args.sqlite)

    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection
    from django.urls import clear_url_caches

    from django_fluvius.delivery.handlers import handlers

    for spec in list(handlers):
        handlers.unregister(spec.name)
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
