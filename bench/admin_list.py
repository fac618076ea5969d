"""The admin's event list at 1,000,000 events (issue 7), against a plain admin list.

Subject: GET /admin/django_fluvius/event/ (django_fluvius.admin.EventAdmin) through
Django's test client, logged in as a superuser: no full-table count (capped count,
then PostgreSQL's estimate), registry-made filter choices, a payload prefix read as
text. Also the filtered lists an operator uses (namespace, event key, a rare
event key, aggregate, user, date, search by aggregate id), a deep page, and one
aggregate's timeline.

Baselines, in the same run and on the same table: a plain ``ModelAdmin`` on the
event model (Django's defaults: exact ``COUNT(*)`` for the paginator and the full
count), and the page's own SQL run raw through psycopg (the floor).

The events are COPY-ed in: 10 versions each of 100,000 aggregates (60% users,
30% orders, 10% notes), versions interleaved over the table as real traffic
would, 100 users, one correlation id per command. ``--reuse`` keeps a database
already loaded with the same number of events.
"""

from __future__ import annotations

import io
import json
import sys
import time
import types
import uuid
from datetime import UTC, datetime, timedelta

from bench.common import arg_parser, dsn, interleaved, report, setup_django

DB_NAME = "fluvius_bench_admin_list"
VERSIONS = 10
USERS = 100
COLUMNS = ("namespace", "resource", "aggregate_id", "version", "evt_key", "schema_version", "payload",
           "metadata", "command_id", "correlation_id", "causation_id", "\"user\"", "tenant", "created")


def kind_of(index: int) -> tuple[str, str]:
    slot = index % 10
    if slot < 6:
        return "app-user", "user"
    if slot < 9:
        return "app-order", "order"
    return "test-notes", "note"


def event_row(index: int, aggregate_id: uuid.UUID, version: int, created: datetime) -> str:
    namespace, resource = kind_of(index)
    if namespace == "app-user":
        if version == 1:
            key, payload = "user-created", {"name": f"user {index}", "email": f"u{index}@example.com", "active": True}
        elif version == VERSIONS and index % 100 == 0:  # rare: 0.06% of the events
            key, payload = "user-deactivated", {"active": False}
        else:
            key, payload = "user-renamed", {"name": f"user {index} v{version}"}
    elif namespace == "app-order":
        if version == 1:
            key, payload = "order-placed", {"customer_id": str(aggregate_id), "status": "placed",
                                            "items": [{"sku": "tea", "quantity": 1, "price": "4.50"}]}
        else:
            key, payload = "order-item-added", {"sku": f"sku-{version}", "quantity": version, "price": "1.25"}
    else:
        key, payload = (("note-created", {"title": f"note {index}", "body": ""}) if version == 1
                        else ("note-edited", {"body": f"edit {version} of note {index}"}))
    user = str(index % USERS + 1)
    correlation = uuid.uuid4().hex
    metadata = {"user": user, "username": f"user{user}", "correlation_id": correlation, "source": "bench"}
    return "\t".join((
        namespace, resource, str(aggregate_id), str(version), key, "1", json.dumps(payload),
        json.dumps(metadata), str(uuid.uuid4()), correlation, "", user, "", created.isoformat(),
    )) + "\n"


def load_events(url: str, total: int) -> float:
    """COPY ``total`` events in; return the seconds it took (rows, indexes, VACUUM ANALYZE)."""
    import psycopg

    aggregates = [uuid.uuid4() for _ in range(total // VERSIONS)]
    start = time.perf_counter()
    first = datetime.now(UTC) - timedelta(days=30)
    step = timedelta(days=30) / total
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        conn.execute("TRUNCATE django_fluvius_event RESTART IDENTITY")
        with conn.cursor() as cur, cur.copy(f"COPY django_fluvius_event ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            n = 0
            for version in range(1, VERSIONS + 1):  # round by round: a stream's events spread over the table
                buffer = io.StringIO()
                for index, aggregate_id in enumerate(aggregates):
                    buffer.write(event_row(index, aggregate_id, version, first + step * n))
                    n += 1
                copy.write(buffer.getvalue())
        conn.execute("VACUUM ANALYZE django_fluvius_event")
    return time.perf_counter() - start


def install_urls(plain_site) -> None:
    """Serve the project's admin at /admin/ and the plain baseline admin at /plain-admin/."""
    from django.conf import settings
    from django.contrib import admin
    from django.urls import clear_url_caches, path

    module = types.ModuleType("bench_admin_list_urls")
    module.urlpatterns = [path("admin/", admin.site.urls), path("plain-admin/", plain_site.urls)]
    sys.modules[module.__name__] = module
    settings.ROOT_URLCONF = module.__name__
    clear_url_caches()


def plain_admin_site():
    """Django's defaults on the event model: what a project gets from a bare ModelAdmin."""
    from django.contrib import admin

    from django_fluvius.models import Event

    class PlainEventAdmin(admin.ModelAdmin):
        list_display = ("position", "created", "namespace", "evt_key", "aggregate_id", "version", "user")
        ordering = ("-position",)
        list_per_page = 50

    site = admin.AdminSite(name="plain")
    site.register(Event, PlainEventAdmin)
    return site


RAW_PAGE_SQL = (
    'SELECT position, created, namespace, evt_key, aggregate_id, version, "user", '
    "metadata ->> 'username', SUBSTRING(payload::text, 1, 161) "
    "FROM django_fluvius_event ORDER BY position DESC LIMIT 50"
)


def main(argv=None) -> dict:
    parser = arg_parser(__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true",
                        help="keep the bench database when it already holds --events events")
    args = parser.parse_args(argv)
    if args.sqlite:
        raise SystemExit("This benchmark is about PostgreSQL at scale; run it without --sqlite.")
    total = 20_000 if args.quick else args.events
    runs = 1 if args.quick else args.runs

    url = setup_django(DB_NAME, drop=not args.reuse)
    import psycopg
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    from django_fluvius.models import Event

    with connection.cursor() as cursor:
        cursor.execute("SELECT COUNT(*) FROM django_fluvius_event")
        present = cursor.fetchone()[0]
    load_seconds = 0.0
    if present != total:
        load_seconds = load_events(url, total)
    connection.close()

    install_urls(plain_admin_site())
    model = get_user_model()
    superuser = model.objects.filter(username="bench").first() or model.objects.create_superuser(
        "bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(superuser)

    sample = Event.objects.filter(namespace="app-user", version=1).order_by("-position").values(
        "aggregate_id", "user").first()
    aggregate_id = sample["aggregate_id"]
    day = (datetime.now(UTC) - timedelta(days=3)).date()
    events_url = "/admin/django_fluvius/event/"
    pages = {
        "filter namespace=app-order": "?namespace=app-order",
        "filter evt_key=user-renamed": "?evt_key=user-renamed",
        "filter rare evt_key=user-deactivated": "?evt_key=user-deactivated",
        "filter aggregate": f"?aggregate={aggregate_id}",
        "filter user": f"?user={sample['user']}",
        "filter one day": f"?created__gte={day} 00:00:00%2B00:00&created__lt={day + timedelta(days=1)} 00:00:00%2B00:00",
        "search aggregate id": f"?q={aggregate_id}",
        "page 200": "?p=200",
    }

    def get(path: str) -> float:
        start = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - start
        if response.status_code != 200:
            raise SystemExit(f"{path} answered {response.status_code}")
        return elapsed

    with psycopg.connect(dsn(url), autocommit=True) as raw:
        def raw_page() -> float:
            start = time.perf_counter()
            raw.execute(RAW_PAGE_SQL).fetchall()
            return time.perf_counter() - start

        for path in (events_url, "/plain-admin/django_fluvius/event/"):
            get(path)  # warm up: imports, templates, caches
        raw_page()
        main_list = interleaved(lambda: get(events_url), lambda: get("/plain-admin/django_fluvius/event/"),
                                runs)
        raw_list = interleaved(lambda: get(events_url), raw_page, runs)

    figures = {
        "events": total,
        "admin event list ms (median)": main_list["subject"] * 1000,
        "plain ModelAdmin list ms (median)": main_list["baseline"] * 1000,
        "admin / plain admin": main_list["subject"] / main_list["baseline"],
        "raw page SQL ms (median)": raw_list["baseline"] * 1000,
        "admin / raw SQL": raw_list["subject"] / raw_list["baseline"],
    }
    import statistics

    for name, query in pages.items():
        get(events_url + query)
        figures[f"{name} ms (median)"] = statistics.median(get(events_url + query) for _ in range(runs)) * 1000
    timeline = reverse_timeline(aggregate_id)
    get(timeline)
    figures["timeline of a 10-event aggregate ms (median)"] = statistics.median(
        get(timeline) for _ in range(runs)) * 1000
    if load_seconds:
        figures["load seconds (COPY, indexes, VACUUM ANALYZE)"] = load_seconds
    connection.close()
    return report("admin_list", figures, lines=[
        f"{total:,} events ({total // VERSIONS:,} aggregates x {VERSIONS}), PostgreSQL, {runs} runs each",
        "list pages through django.test.Client as a superuser, 50 rows a page",
        "baselines: a bare ModelAdmin on the same table (exact counts), and the page's SQL via psycopg",
    ])


def reverse_timeline(aggregate_id) -> str:
    from django.urls import reverse

    return reverse("admin:django_fluvius_event_timeline", args=[aggregate_id])


if __name__ == "__main__":
    main()
