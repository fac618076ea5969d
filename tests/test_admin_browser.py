"""End to end in a real browser: log in to the admin, open an aggregate's timeline.

Debian's Chromium (``/usr/bin/chromium``) driven by Playwright, against
pytest-django's live server. Without Chromium the test is skipped outside CI
and fails in CI (``CI=true``), where ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
PASSWORD = "correct horse battery staple"


def _need_browser():
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail("CI must install Debian's chromium at /usr/bin/chromium (.ci/run does).")
        pytest.skip("needs Debian's chromium at /usr/bin/chromium: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("the dev extra must install playwright")
        pytest.skip("needs playwright: pip install -e '.[dev]'")
    return sync_playwright


@pytest.fixture
def chromium_page():
    sync_playwright = _need_browser()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                             headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(20_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def order_history(transactional_db):
    """A staff operator and an order with a history worth looking at (set up before the browser starts)."""
    import uuid

    from django.contrib.auth import get_user_model

    from django_fluvius import DomainContext
    from example_project.orders.domain import OrderDomain

    operator = get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    domain = OrderDomain(DomainContext.create(namespace="app-order", user=operator))
    placed = domain.process_command(domain.create_command(
        "place-order",
        {"customer_id": str(uuid.uuid4()), "items": [{"sku": "tea", "quantity": 2, "price": "4.50"}]},
    ))
    order_id = placed.aggregate_id
    domain.process_command(domain.create_command(
        "add-item", {"sku": "cake", "quantity": 1, "price": "3.00"}, aggregate_id=order_id))
    domain.process_command(domain.create_command("pay-order", {"amount": "12.00"}, aggregate_id=order_id))
    return operator, order_id


def test_operator_logs_in_and_reads_an_order_timeline(live_server, order_history, chromium_page, tmp_path):
    operator, order_id = order_history
    page = chromium_page

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert "/admin/login/" not in page.url

    # From the event list to the timeline, as an operator would.
    page.goto(f"{live_server.url}/admin/django_fluvius/event/?namespace=app-order")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 3
    page.locator(f"#result_list a[title='{order_id}']").first.click()
    page.wait_for_selector(".fluvius-timeline")
    assert f"/aggregate/{order_id}/" in page.url

    assert page.locator("#fluvius-aggregate-id").inner_text() == str(order_id)
    assert page.locator("#fluvius-latest-version").inner_text() == "3"
    versions = page.locator(".fluvius-timeline > li")
    assert versions.count() == 3
    assert [versions.nth(i).get_attribute("data-evt-key") for i in range(3)] == [
        "order-placed", "order-item-added", "order-paid"]
    # The state after each version is the domain's fold (@apply computes the total).
    added = page.locator("#v2")
    assert added.locator("tr[data-path='total'] td").nth(2).inner_text() == '"12.00"'
    added.locator("details.fluvius-state summary").click()
    state_after_2 = added.locator("details.fluvius-state pre").inner_text()
    assert '"total": "12.00"' in state_after_2 and '"sku": "cake"' in state_after_2
    paid = page.locator("#v3")
    assert paid.locator("tr[data-path='status'] td").nth(1).inner_text() == '"placed"'
    assert paid.locator("tr[data-path='status'] td").nth(2).inner_text() == '"paid"'
    assert "by operator" in paid.locator(".fluvius-meta").first.inner_text()

    shot = tmp_path / "timeline.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # The diff form on the page compares two versions.
    page.fill("input[name=from]", "1")
    page.fill("input[name=to]", "3")
    page.click(".fluvius-diff-form input[type=submit]")
    page.wait_for_selector("#fluvius-diff-title")
    changed = {page.locator("table.fluvius-changes tbody tr").nth(i).get_attribute("data-path")
               for i in range(page.locator("table.fluvius-changes tbody tr").count())}
    assert {"status", "total", "paid", "items[1]"} <= changed
    page.screenshot(path=str(tmp_path / "diff.png"), full_page=True)


@pytest.fixture
def user_to_rename(transactional_db):
    from django.contrib.auth import get_user_model

    from example_project.users.domain import UserDomain

    operator = get_user_model().objects.create_superuser("operator", "op@example.com", PASSWORD)
    domain = UserDomain()
    created = domain.process_command(domain.create_command(
        "create-user", {"name": "Ada", "email": "ada@example.com"}))
    return operator, created.aggregate_id


def test_operator_renames_a_user_with_a_command_button(live_server, user_to_rename, chromium_page,
                                                      tmp_path):
    operator, user_id = user_to_rename
    page = chromium_page
    page.goto(f"{live_server.url}/admin/login/?next=/admin/app_user/user/{user_id}/change/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("a.fluvius-command[data-command='rename-user']")
    # The row itself is read-only: no save button, the name is text, not an input.
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("input[name=name]").count() == 0

    page.click("a.fluvius-command[data-command='rename-user']")
    page.fill("#id_name", "   ")
    page.click("#fluvius-command-form input[type=submit]")
    # The action's serializer judges the payload; its message lands on the field.
    assert "may not be blank" in page.locator(".field-name .errorlist").inner_text()

    page.fill("#id_name", "Ada Lovelace")
    page.click("#fluvius-command-form input[type=submit]")
    page.wait_for_selector("ul.messagelist")
    assert "is at version 2" in page.locator("ul.messagelist").inner_text()
    page.screenshot(path=str(tmp_path / "renamed.png"), full_page=True)

    page.click("a.fluvius-timeline-link")
    page.wait_for_selector(".fluvius-timeline")
    assert page.locator("#v2").get_attribute("data-evt-key") == "user-renamed"
    assert "by operator" in page.locator("#v2 .fluvius-meta").inner_text()
