"""Screenshots as tests: every page of the example project, as a person sees it at 1400 px.

The example project itself (``manage.py``, its own settings and SQLite file in a
temporary folder, ``run_scenario`` plus a failed hand-over, a dead letter and a
rebuild run) is served by ``manage.py runserver`` on a free port, and Debian's
Chromium visits each admin page, the browsable API and the API docs. For each page
it asserts what makes a page readable rather than merely served:

* no horizontal overflow: the results container (the changelist's ``.results``,
  else ``#content``) is not wider than the window shows (``scrollWidth <= clientWidth``),
  and neither is the document;
* no error in the browser console (a missing static file, a script error, a
  request to a CDN the machine cannot reach all show up there), and no request to
  any address but the project's own (Swagger UI and ReDoc come from
  drf-spectacular-sidecar's static files);
* the page says what it should (a marker per page).

The screenshots docs/admin.md and docs/rest.md show (``docs/img/screens/``) are made
by this test: ``FLUVIUS_SCREENSHOTS=docs/img/screens scripts/test tests/test_screenshots.py``
refreshes them. Otherwise they go to a temporary folder, so an ordinary test run never
rewrites tracked files (every run's images differ: ids, times).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from .test_admin_browser import CHROMIUM, CHROMIUM_ARGS, _need_browser

ROOT = Path(__file__).resolve().parent.parent
SHOTS = Path(os.environ.get("FLUVIUS_SCREENSHOTS") or tempfile.mkdtemp(prefix="fluvius-screens-"))
PASSWORD = "correct horse battery staple"
WIDTH = 1400

SEED = r"""
import uuid
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_fluvius.models import DeadLetter, Event, RebuildRun
from example_project.users.models import User
from example_project.orders.models import Order

get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
paid = Event.objects.filter(evt_key="order-paid").first()
placed = Event.objects.filter(evt_key="order-placed").first()
DeadLetter.objects.create(
    kind=DeadLetter.Kind.HANDLER,
    handler="example_project.users.handlers.send_welcome_email", position=placed.position,
    namespace=placed.namespace, evt_key=placed.evt_key, aggregate_id=placed.aggregate_id,
    version=placed.version, attempts=5, error_type="smtplib.SMTPServerDisconnected",
    error_message="Connection unexpectedly closed while sending the welcome email to the customer",
    traceback="Traceback (most recent call last):\n  File \"handlers.py\", line 20, in send_welcome_email\n"
              "smtplib.SMTPServerDisconnected: Connection unexpectedly closed")
RebuildRun.objects.create(name="app-user.user", status="done", total_events=6, events_done=6,
                          aggregates_done=2, rows_written=2, batches=1, finished=timezone.now())
from django_fluvius.events.snapshots import SnapshotStore
from example_project.orders.domain import OrderDomain
orders = OrderDomain()
SnapshotStore().save(orders.load(placed.aggregate_id), orders.__namespace__)
print(User.objects.first().pk, Order.objects.first().pk, placed.position)
""".replace("PASSWORD", repr(PASSWORD))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def example_site(tmp_path_factory):
    """The example project served on a free port, with data; yields (base url, ids)."""
    _need_browser()
    data = tmp_path_factory.mktemp("example-data")
    env = {**os.environ, "FLUVIUS_DATA_DIR": str(data), "DJANGO_DEBUG": "1",
           "DJANGO_SETTINGS_MODULE": "example_project.settings", "FLUVIUS_DISPATCH": "inline"}
    env.pop("DATABASE_URL", None)  # its own SQLite file: nothing shared with the suite's database

    def manage(*args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True,
                              capture_output=True, text=True, timeout=300)
        return done.stdout

    manage("migrate", "--noinput")
    manage("run_scenario")
    user_id, order_id, position = manage("shell", "-c", SEED).strip().splitlines()[-1].split()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/admin/login/", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("the example project's runserver did not answer")
        yield base, {"user": user_id, "order": order_id, "position": position}
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture(scope="module")
def browser_page(example_site):
    sync_playwright = _need_browser()
    base, _ids = example_site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(f"{base}/admin/login/?next=/admin/")
            page.fill("#id_username", "operator")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            yield page
        finally:
            browser.close()


# (screenshot name, path with {user}/{order}/{position}, text the page must show)
PAGES = [
    ("admin-index", "/admin/", "Domain map"),
    ("events", "/admin/django_fluvius/event/", "order-placed"),
    ("event", "/admin/django_fluvius/event/{position}/change/", "payload (decoded)"),
    ("timeline", "/admin/django_fluvius/event/aggregate/{order}/", "order-paid"),
    ("diff", "/admin/django_fluvius/event/aggregate/{order}/diff/?from=1&to=4", "order-shipped"),
    ("command-log", "/admin/django_fluvius/commandlog/", "Pay order"),
    ("dead-letters", "/admin/django_fluvius/deadletter/", "SMTPServerDisconnected"),
    ("projections", "/admin/django_fluvius/checkpoint/", "app-order.order"),
    ("rebuild-runs", "/admin/django_fluvius/rebuildrun/", "app-user.user"),
    ("snapshots", "/admin/django_fluvius/snapshot/", "1 snapshot"),
    ("users", "/admin/app_user/user/", "Alice"),
    ("user", "/admin/app_user/user/{user}/change/", "Rename user"),
    ("command-form", "/admin/app_user/user/{user}/command/rename-user/", "Rename user"),
    ("orders", "/admin/app_order/order/", "Place order"),
    ("order", "/admin/app_order/order/{order}/change/", "Timeline"),
    ("order-command-form", "/admin/app_order/order/{order}/command/schedule-delivery/", "Schedule delivery"),
    ("domain-map", "/admin/django_fluvius/domainmap/", "app-order"),
    ("domain-map-orders", "/admin/django_fluvius/domainmap/app-order/", "order-placed"),
    ("api-list", "/api/app-user/user/", "Filters"),
    ("api-detail", "/api/app-user/user/{user}/", "Give a user a new name"),
    ("api-command", "/api/app-user/create-user/", "Register a new user"),
    ("api-command-on-aggregate", "/api/app-order/pay-order/{order}/", "Pay the whole order"),
    ("swagger", "/schema/docs/", "place-order"),
    ("redoc", "/schema/redoc/", "place-order"),
]

OVERFLOW = """() => {
    const box = document.querySelector('#changelist .results') || document.querySelector('#content-main')
        || document.body;
    const doc = document.scrollingElement;
    return {box: [box.scrollWidth, box.clientWidth], doc: [doc.scrollWidth, doc.clientWidth]};
}"""


@pytest.mark.parametrize(("name", "address", "marker"), PAGES, ids=[p[0] for p in PAGES])
def test_page_is_readable_at_1400px(example_site, browser_page, name, address, marker):
    base, ids = example_site
    page = browser_page
    errors: list[str] = []
    on_console = lambda message: errors.append(message.text) if message.type == "error" else None  # noqa: E731
    on_error = lambda error: errors.append(str(error))  # noqa: E731
    # Requests of the previous page cut short by this navigation are not this page's errors.
    on_failed = lambda request: (errors.append(f"request failed: {request.url}")  # noqa: E731
                                 if request.failure != "net::ERR_ABORTED" else None)
    # Nothing is fetched from anywhere but the project itself (no CDN, no web fonts).
    outside: list[str] = []
    on_request = lambda request: (outside.append(request.url)  # noqa: E731
                                  if not request.url.startswith((base, "data:", "blob:")) else None)
    page.on("console", on_console)
    page.on("pageerror", on_error)
    page.on("requestfailed", on_failed)
    page.on("request", on_request)
    try:
        response = page.goto(base + address.format(**ids), wait_until="networkidle")
        assert response is not None and response.status == 200, f"{address}: {response and response.status}"
        if name in ("swagger", "redoc"):
            page.wait_for_selector(".swagger-ui .opblock" if name == "swagger" else "[role=menuitem]")
        assert marker.lower() in page.inner_text("body").lower(), f"{name}: {marker!r} not on the page"
        sizes = page.evaluate(OVERFLOW)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=name not in ("swagger", "redoc"))
    finally:
        page.remove_listener("console", on_console)
        page.remove_listener("pageerror", on_error)
        page.remove_listener("requestfailed", on_failed)
        page.remove_listener("request", on_request)
    assert errors == [], f"{name}: console errors {errors}"
    assert outside == [], f"{name}: fetched from outside the project {outside}"
    assert sizes["box"][0] <= sizes["box"][1], f"{name}: results overflow sideways {sizes}"
    assert sizes["doc"][0] <= sizes["doc"][1], f"{name}: the page scrolls sideways {sizes}"


def test_the_filter_form_of_the_browsable_api_filters(example_site, browser_page):
    base, _ids = example_site
    page = browser_page
    page.goto(f"{base}/api/app-user/user/")
    page.click("button[data-target='#filtersModal']")
    page.wait_for_selector("#filtersModal form.fluvius-filters", state="visible")
    page.fill("#fluvius-f-name__icontains", "alice")
    page.wait_for_timeout(300)  # the modal's fade-in, for the screenshot
    page.screenshot(path=str(SHOTS / "api-filters.png"))
    page.click("#filtersModal button[type=submit]")
    page.wait_for_url("**name__icontains=alice**")
    body = page.inner_text(".response-info")
    assert '"Alice Liddell"' in body and '"Bob"' not in body


def test_the_calendar_of_a_date_parameter_opens(example_site, browser_page):
    base, ids = example_site
    page = browser_page
    page.goto(f"{base}/admin/app_order/order/{ids['order']}/command/schedule-delivery/")
    # The calendar link: an <a> up to Django 5.2, a <button> from Django 6.0; the same id in both.
    page.click("#calendarlink0")
    page.wait_for_selector(".calendarbox", state="visible")
    page.screenshot(path=str(SHOTS / "order-command-calendar.png"))
    page.click(".calendarbox .calendar td a >> text='24'")
    assert re.fullmatch(r"\d{4}-\d{2}-24", page.input_value("#id_deliver_on"))
