"""The browsable API as a person meets it: what each page says, its filter form, command pages.

Descriptions come from the domain's and the action's docstrings, as escaped text
(the views' own docstrings document code, in reStructuredText, and stay out);
a resource list has a filter form for its declared query surface; a command's
address opens on its form in a browser, while a JSON GET is still a 405.
"""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from example_project.users.domain import UserDomain

HTML = {"HTTP_ACCEPT": "text/html"}


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def signed_in(api, django_user_model):
    # The example project's commands need a signed-in user (reads stay open).
    api.force_authenticate(django_user_model.objects.create_user("reader", password="pw"))
    return api


@pytest.fixture
def users(db):
    domain = UserDomain()
    return [domain.process_command(domain.create_command(
        "create-user", {"name": name, "email": f"{name.lower()}@example.com"})).aggregate_id
        for name in ("Alice", "Bob")]


def description(page: str) -> str:
    return re.search(r'<div class="pull-left">(.*?)</div>', page, re.S).group(1).strip()


def test_a_command_page_opens_on_its_form_in_a_browser(signed_in, db):
    page = signed_in.get("/api/app-user/create-user/", **HTML)
    assert page.status_code == 200
    text = page.content.decode()
    assert "<h1>Create user (app-user)</h1>" in text
    assert 'name="name"' in text and 'name="email"' in text and "HTTP 405" not in text
    assert description(text) == (
        "<p>Register a new user.</p><p>POST the payload below to run “create-user” on a new user; "
        "it records the event “user-created”.</p>")


def test_a_json_get_of_a_command_is_still_405(signed_in, db):
    response = signed_in.get("/api/app-user/create-user/", HTTP_ACCEPT="application/json")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
    assert "GET" in response.json()["message"]


def test_command_pages_are_not_in_the_openapi_document(api, db):
    schema = api.get("/schema/", HTTP_ACCEPT="application/json").json()
    operations = schema["paths"]["/api/app-user/create-user/"]
    assert set(operations) == {"post"}


def test_list_and_item_are_described_from_the_domain_not_the_view_code(api, users):
    listing = api.get("/api/app-user/user/", **HTML).content.decode()
    text = description(listing)
    assert text.startswith("<p>The people who use the shop")
    assert "ResourceFilterBackend" not in listing and "``" not in text
    assert "New ones are made by: Create user." in text
    item = description(api.get(f"/api/app-user/user/{users[0]}/", **HTML).content.decode())
    assert "<p>Commands on it:</p><p>Rename user — POST …/app-user/rename-user/&lt;id&gt;/ — Give a user a new name.</p>" in item
    assert "Create user" not in item  # a create command does not run on an existing user


def test_the_list_has_a_filter_form_for_its_query_surface(api, users):
    page = api.get("/api/app-user/user/?name__icontains=ali&ordering=-name", **HTML).content.decode()
    form = re.search(r'<form class="form-horizontal fluvius-filters".*?</form>', page, re.S).group(0)
    # One box per declared field and operator, with what the request asked for filled in.
    assert re.search(r'name="name__icontains" value="ali"', form)
    assert 'name="email__iexact"' in form and 'name="version__gte"' in form
    assert 'name="created_at__gt"' in form and 'name="name__startswith"' in form
    assert 'name="active"' in form and '<option value="true"' in form
    assert '<option value="-name" selected>' in form
    assert 'name="search"' in form
    # Fields outside the surface get no box.
    assert 'name="id"' not in form
    # The form's parameters are the list's own: the filter applies.
    body = api.get("/api/app-user/user/", {"name__icontains": "ali"}).json()
    assert [u["name"] for u in body["results"]] == ["Alice"]


def test_an_item_page_has_no_filter_form(api, users):
    page = api.get(f"/api/app-user/user/{users[0]}/", **HTML).content.decode()
    assert "fluvius-filters" not in page


def test_allow_names_get_only_to_the_browsable_api(signed_in, db):
    # The schema leaves GET out of a command and a JSON GET is a 405: Allow must agree.
    json_options = signed_in.options("/api/app-user/create-user/", HTTP_ACCEPT="application/json")
    assert json_options.status_code == 200
    assert [m.strip() for m in json_options["Allow"].split(",")] == ["POST", "OPTIONS"]
    page = signed_in.get("/api/app-user/create-user/", **HTML)
    assert "GET" in page["Allow"] and "POST" in page["Allow"]
