"""The OpenAPI document of the example project, the router's rules, the REST checks."""

import io

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from django_fluvius import Aggregate, Domain, action
from django_fluvius.registry import domains
from django_fluvius.rest import CommandViewSet, DomainRouter
from django_fluvius.rest.checks import check_routes
from example_project.users.domain import UserDomain


@pytest.fixture(scope="module")
def schema():
    """``manage.py spectacular --validate --fail-on-warn`` over the example project's URLs."""
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    return yaml.safe_load(out.getvalue())


def test_every_command_and_resource_has_its_operation(schema):
    paths = schema["paths"]
    assert paths["/api/app-user/create-user/"]["post"]["operationId"] == "app_user_create_user"
    for command in ("rename-user", "deactivate-user"):
        assert "post" in paths[f"/api/app-user/{command}/{{aggregate_id}}/"]
    for command in ("place-order", "add-item", "pay-order", "ship-order", "cancel-order"):
        assert any(p.startswith(f"/api/app-order/{command}/") for p in paths), command
    for ns, resource in (("app-user", "user"), ("app-order", "order")):
        for suffix in ("", "{aggregate_id}/", "{aggregate_id}/events/"):
            assert "get" in paths[f"/api/{ns}/{resource}/{suffix}"]
    assert "get" in paths["/api/app-user/_meta/"]


def test_command_request_bodies_come_from_the_action_signature(schema):
    operation = schema["paths"]["/api/app-user/create-user/"]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/AppUserCreateUserPayload"
    payload = schema["components"]["schemas"]["AppUserCreateUserPayload"]
    assert payload["required"] == ["email", "name"]
    assert payload["additionalProperties"] is False
    assert payload["properties"]["name"] == {"type": "string", "minLength": 1}
    assert operation["description"] == "Register a new user."
    order = schema["components"]["schemas"]["AppOrderPlaceOrderPayload"]["properties"]
    assert order["customer_id"]["format"] == "uuid"
    assert order["items"]["type"] == "array"


def test_command_responses_and_errors_are_described(schema):
    create = schema["paths"]["/api/app-user/create-user/"]["post"]["responses"]
    assert create["201"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/CommandResult"
    assert {"ETag", "X-Correlation-ID"} <= set(create["201"]["headers"])
    rename = schema["paths"]["/api/app-user/rename-user/{aggregate_id}/"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "412", "413", "415", "422"} <= set(rename["responses"])
    assert rename["responses"]["412"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Error"
    headers = {p["name"]: p for p in rename["parameters"] if p["in"] == "header"}
    assert {"If-Match", "Idempotency-Key", "X-Correlation-ID"} <= set(headers)
    assert headers["If-Match"]["schema"]["pattern"]
    [path_id] = [p for p in rename["parameters"] if p["in"] == "path"]
    assert path_id["schema"]["format"] == "uuid"
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["code", "message"]
    result = schema["components"]["schemas"]["CommandResult"]
    assert {"aggregate_id", "version", "events", "state"} <= set(result["required"])


def test_resources_have_their_fields_filters_and_pages(schema):
    listing = schema["paths"]["/api/app-user/user/"]["get"]
    params = {p["name"] for p in listing["parameters"]}
    assert {"limit", "offset", "name", "ordering"} <= params
    page = listing["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert page == "#/components/schemas/PaginatedAppUserUserList"
    user = schema["components"]["schemas"]["AppUserUser"]
    assert {"id", "version", "name", "email", "active"} <= set(user["properties"])
    item = schema["paths"]["/api/app-user/user/{aggregate_id}/"]["get"]
    assert {"version", "at"} <= {p["name"] for p in item["parameters"]}
    assert "ETag" in item["responses"]["200"]["headers"]
    events = schema["paths"]["/api/app-user/user/{aggregate_id}/events/"]["get"]
    assert {"limit", "offset", "after_version"} <= {p["name"] for p in events["parameters"]}


def test_schema_is_served(client):
    response = client.get("/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/app-user/create-user/" in response.json()["paths"]
    assert client.get("/schema/docs/").status_code == 200


# -- the router ---------------------------------------------------------------------


class ClashAggregate(Aggregate):
    @action(resources=["note"], create=True)
    def note(self, text: str):  # command "note" = resource "note"
        return {"text": text}


class ClashDomain(Domain):
    __aggregate__ = ClashAggregate
    __namespace__ = "clash"
    __resources__ = {"note": "testapp.Note"}


class BadNameDomain(Domain):
    __aggregate__ = UserDomain.__aggregate__
    __namespace__ = "bad namespace/x"
    __resources__ = {"user": "app_user.User"}


def test_router_refuses_duplicates_and_unroutable_domains():
    router = DomainRouter()
    router.register(UserDomain)
    with pytest.raises(ImproperlyConfigured, match="already registered"):
        router.register(UserDomain)
    with pytest.raises(ImproperlyConfigured, match="both a command and a resource"):
        router.register(ClashDomain)
    with pytest.raises(ImproperlyConfigured, match="not usable as a URL segment"):
        router.register(BadNameDomain)
    with pytest.raises(ImproperlyConfigured, match="not a Domain subclass"):
        router.register(object)
    with pytest.raises(ImproperlyConfigured, match="fly"):
        DomainRouter().register(UserDomain, command_viewset={"fly": CommandViewSet})


def test_router_takes_dotted_paths_and_names_its_routes():
    router = DomainRouter(catch_all=False, root_view=False)
    router.register("example_project.users.domain.UserDomain")
    names = {p.name for p in router.urls}
    assert {"app-user-meta", "app-user-create-user", "app-user-create-user-aggregate",
            "app-user-rename-user-aggregate", "app-user-deactivate-user-aggregate",
            "app-user-user-list", "app-user-user-detail", "app-user-user-events"} <= names
    assert "fluvius-root" not in names and None not in names  # no root view, no catch-all


def test_checks_report_unroutable_domains():
    for domain in (ClashDomain, BadNameDomain):
        domains.register(domain)
    try:
        errors = {(e.id, e.obj) for e in check_routes()}
    finally:
        for domain in (ClashDomain, BadNameDomain):
            domains.unregister(domain.__namespace__)
    assert ("fluvius.E020", ClashDomain) in errors
    assert ("fluvius.E021", BadNameDomain) in errors
    assert not check_routes()


@pytest.mark.parametrize("ttl", [-1, "1 day", True])
def test_checks_report_a_bad_idempotency_ttl(settings, ttl):
    with override_settings(FLUVIUS={**settings.FLUVIUS, "IDEMPOTENCY_TTL": ttl}):
        assert [e.id for e in check_routes()] == ["fluvius.E022"]
