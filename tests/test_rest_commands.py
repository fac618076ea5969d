"""Commands over HTTP: status codes, bodies, ETag/If-Match, errors, context."""

import uuid

import pytest
from django.contrib.auth.models import User as AuthUser
from django.test import override_settings
from rest_framework.test import APIClient

from django_fluvius.models import CommandLog, Event
from example_project.users.models import User

pytestmark = [pytest.mark.urls("tests.test_rest_urls"), pytest.mark.django_db]


@pytest.fixture
def api():
    return APIClient()


def post(api, url, data=None, **headers):
    return api.post(url, data if data is not None else {}, format="json", headers=headers)


def create_user(api, name="Ann", email="ann@example.com", **headers):
    response = post(api, "/api/app-user/create-user/", {"name": name, "email": email}, **headers)
    assert response.status_code == 201, response.content
    return response


# -- the happy paths -----------------------------------------------------------


def test_create_command_is_201_with_result_etag_and_location(api):
    response = create_user(api)
    body = response.json()
    aggregate_id = body["aggregate_id"]
    assert body["version"] == 1
    assert body["command"] == "create-user"
    assert body["state"] == {"name": "Ann", "email": "ann@example.com", "active": True}
    assert [e["evt_key"] for e in body["events"]] == ["user-created"]
    assert body["events"][0]["payload"]["email"] == "ann@example.com"
    assert response["ETag"] == '"1"'
    assert response["Location"] == f"/api/app-user/user/{aggregate_id}/"
    assert User.objects.get(pk=aggregate_id).name == "Ann"
    assert api.get(response["Location"]).json()["email"] == "ann@example.com"


def test_command_on_aggregate_is_200_and_bumps_the_etag(api):
    aggregate_id = create_user(api).json()["aggregate_id"]
    response = post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "Bea"})  # async action
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert "Location" not in response
    assert response.json()["state"]["name"] == "Bea"
    assert User.objects.get(pk=aggregate_id).name == "Bea"


def test_command_without_payload_fields_accepts_an_empty_body(api):
    aggregate_id = create_user(api).json()["aggregate_id"]
    response = api.post(f"/api/app-user/deactivate-user/{aggregate_id}/")  # no body, no content type
    assert response.status_code == 200, response.content
    assert response.json()["state"]["active"] is False


def test_create_command_with_a_client_chosen_id(api):
    chosen = uuid.uuid4()
    response = post(api, f"/api/app-user/create-user/{chosen}/", {"name": "C", "email": "c@x.io"})
    assert response.status_code == 201
    assert response.json()["aggregate_id"] == str(chosen)
    again = post(api, f"/api/app-user/create-user/{chosen}/", {"name": "C", "email": "c@x.io"})
    assert again.status_code == 409
    assert again.json()["code"] == "already_exists"
    assert Event.objects.filter(aggregate_id=chosen).count() == 1


def test_form_posts_work_like_json(api):
    # The browsable API posts forms, with a CSRF token field that is not part of the payload.
    response = api.post("/api/app-user/create-user/",
                        {"name": "Form", "email": "f@x.io", "csrfmiddlewaretoken": "x"})
    assert response.status_code == 201, response.content
    assert response.json()["state"]["name"] == "Form"


def test_browsable_api_shows_a_form_per_command(api):
    page = api.get("/api/app-user/create-user/", HTTP_ACCEPT="text/html").content.decode()
    assert 'name="name"' in page and 'name="email"' in page
    assert "<p>Register a new user.</p>" in page  # the action's docstring, as HTML
    assert "Not found" not in page  # the catch-all does not name the breadcrumbs
    page = api.get("/api/app-order/place-order/", HTTP_ACCEPT="text/html").content.decode()
    assert 'name="customer_id"' in page and 'name="email"' not in page


# -- bad payloads and bodies ---------------------------------------------------


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def assert_nothing_stored():
    assert Event.objects.count() == 0
    assert User.objects.count() == 0


def test_missing_and_wrong_fields_are_400_per_field(api):
    body = assert_error(post(api, "/api/app-user/create-user/", {"name": 5}), 400, "invalid_payload")
    assert set(body["errors"]) == {"name", "email"}
    body = assert_error(post(api, "/api/app-user/create-user/", {"name": "a", "email": "a@b.c", "x": 1}),
                        400, "invalid_payload")
    assert "x" in body["errors"]
    assert_nothing_stored()
    assert CommandLog.objects.filter(status="rejected").count() == 0  # refused before the bus


def test_non_object_json_is_400(api):
    response = api.post("/api/app-user/create-user/", "[1, 2]", content_type="application/json")
    body = assert_error(response, 400, "invalid_payload")
    assert "non_field_errors" in body["errors"]


def test_json_null_is_400_not_an_empty_payload(api):
    """``null`` is not an object of fields: refused as such, not read as ``{}`` (missing fields)."""
    user_id = post(api, "/api/app-user/create-user/", {"name": "a", "email": "a@b.c"}).json()["aggregate_id"]
    for url in ("/api/app-user/create-user/", f"/api/app-user/deactivate-user/{user_id}/"):
        body = assert_error(api.post(url, "null", content_type="application/json"), 400, "invalid_payload")
        assert body["errors"] == {"non_field_errors": ["Expected a JSON object of fields, got null."]}
    assert Event.objects.count() == 1
    empty = api.post(f"/api/app-user/deactivate-user/{user_id}/", "", content_type="application/json")
    assert empty.status_code == 200, empty.content  # no body at all: a command without fields


def test_malformed_json_is_400(api):
    response = api.post("/api/app-user/create-user/", '{"name": ', content_type="application/json")
    body = assert_error(response, 400, "parse_error")
    assert "JSON parse error" in body["message"]
    assert_nothing_stored()


def test_wrong_content_type_is_415(api):
    response = api.post("/api/app-user/create-user/", "name=x", content_type="text/plain")
    body = assert_error(response, 415, "unsupported_media_type")
    assert "text/plain" in body["message"]
    assert_nothing_stored()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_body_over_data_upload_max_memory_size_is_413(api):
    big = {"name": "x" * 2000, "email": "big@example.com"}
    body = assert_error(post(api, "/api/app-user/create-user/", big), 413, "request_too_large")
    assert "1000" in body["message"]
    big_form = api.post("/api/app-user/create-user/", {"name": "x" * 2000, "email": "f@x.io"})
    assert_error(big_form, 413, "request_too_large")
    assert_nothing_stored()
    assert post(api, "/api/app-user/create-user/", {"name": "x", "email": "s@x.io"}).status_code == 201


def test_domain_error_is_422_and_stores_nothing(api):
    body = assert_error(post(api, "/api/app-user/create-user/", {"name": "a", "email": "nope"}),
                        422, "create-user.invalid-email")  # derived: the action's and the message's
    assert body["message"] == "Invalid email"
    assert_nothing_stored()
    assert CommandLog.objects.get().status == "rejected"


def test_domain_error_on_an_aggregate_keeps_its_version(api):
    aggregate_id = create_user(api).json()["aggregate_id"]
    assert post(api, f"/api/app-user/deactivate-user/{aggregate_id}/").status_code == 200
    body = assert_error(post(api, f"/api/app-user/deactivate-user/{aggregate_id}/"), 422,
                        "deactivate-user.user-is-already-inactive")
    assert body["message"] == "User is already inactive"
    assert Event.objects.filter(aggregate_id=aggregate_id).count() == 2


# -- ids, unknown routes -------------------------------------------------------


def test_non_uuid_id_in_command_path_is_404(api):
    body = assert_error(post(api, "/api/app-user/rename-user/not-a-uuid/", {"name": "x"}),
                        404, "invalid_aggregate_id")
    assert "not-a-uuid" in body["message"]


def test_unknown_aggregate_is_404(api):
    assert_error(post(api, f"/api/app-user/rename-user/{uuid.uuid4()}/", {"name": "x"}), 404, "not_found")


def test_command_sent_to_an_aggregate_of_another_resource_is_refused(api):
    folder = post(api, "/api/test-notes/create-folder/", {"name": "F"}).json()["aggregate_id"]
    body = assert_error(post(api, f"/api/test-notes/edit-note/{folder}/", {"body": "x"}), 400, "wrong_resource")
    assert "folder" in body["message"]
    assert Event.objects.filter(aggregate_id=folder).count() == 1


def test_unknown_namespace_command_and_resource_are_json_404(api):
    body = assert_error(post(api, "/api/nowhere/create-user/", {}), 404, "unknown_domain")
    assert "app-user" in body["message"]  # names the known namespaces
    body = assert_error(post(api, "/api/app-user/fly/", {}), 404, "unknown_command")
    assert "create-user" in body["message"]
    assert_error(api.get("/api/app-user/planes/"), 404, "unknown_resource")
    body = assert_error(post(api, "/api/app-user/rename-user/", {"name": "x"}), 404, "aggregate_id_required")
    assert "/api/app-user/rename-user/<aggregate_id>/" in body["message"]
    assert_error(post(api, "/api/app-user/create-user", {}), 404, "missing_trailing_slash")


def test_wrong_method_is_405_json(api):
    body = assert_error(api.put("/api/app-user/create-user/", {}, format="json"), 405, "method_not_allowed")
    assert "PUT" in body["message"]


# -- If-Match / ETag -------------------------------------------------------------


def test_if_match_with_the_current_version_runs(api):
    aggregate_id = create_user(api).json()["aggregate_id"]
    response = post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "B"}, **{"If-Match": '"1"'})
    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "C"},
                **{"If-Match": "*"}).status_code == 200


def test_stale_if_match_is_412_and_stores_nothing(api):
    aggregate_id = create_user(api).json()["aggregate_id"]
    post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "B"})
    response = post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "C"}, **{"If-Match": '"1"'})
    body = assert_error(response, 412, "precondition_failed")
    assert body["details"] == {"expected_version": 1, "actual_version": 2}
    assert User.objects.get(pk=aggregate_id).name == "B"
    assert Event.objects.filter(aggregate_id=aggregate_id).count() == 2


@pytest.mark.parametrize("value", ["garbage", '"abc"', 'W/"1"', '"1", "2"', '"-1"', ""])
def test_if_match_garbage_is_400(api, value):
    aggregate_id = create_user(api).json()["aggregate_id"]
    response = post(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": "C"}, **{"If-Match": value})
    body = assert_error(response, 400, "invalid_if_match")
    assert "If-Match" in body["errors"]
    assert Event.objects.filter(aggregate_id=aggregate_id).count() == 1


def test_if_match_on_a_create_command_is_400(api):
    response = post(api, "/api/app-user/create-user/", {"name": "a", "email": "a@b.c"}, **{"If-Match": '"1"'})
    assert_error(response, 400, "invalid_if_match")
    assert_nothing_stored()


# -- context: correlation id, user, client address -------------------------------


def test_correlation_id_is_taken_from_the_header_and_echoed(api):
    response = create_user(api, **{"X-Correlation-ID": "flow-42"})
    assert response["X-Correlation-ID"] == "flow-42"
    event = Event.objects.get()
    assert event.correlation_id == "flow-42"
    assert event.metadata["correlation_id"] == "flow-42"
    assert event.metadata["client_address"] == "127.0.0.1"
    assert event.metadata["source"] == "http"
    log = CommandLog.objects.get()
    assert log.correlation_id == "flow-42"
    assert log.metadata["client_address"] == "127.0.0.1"


def test_correlation_id_is_made_when_absent_or_unusable(api):
    made = create_user(api)["X-Correlation-ID"]
    assert len(made) == 32
    assert Event.objects.get().correlation_id == made
    replaced = create_user(api, name="B", **{"X-Correlation-ID": "has spaces in it"})["X-Correlation-ID"]
    assert replaced != "has spaces in it" and len(replaced) == 32


def test_errors_echo_the_correlation_id_too(api):
    response = post(api, "/api/app-user/create-user/", {"name": "a", "email": "bad"},
                    **{"X-Correlation-ID": "err-1"})
    assert response.status_code == 422
    assert response["X-Correlation-ID"] == "err-1"
    assert CommandLog.objects.get().correlation_id == "err-1"
    assert api.get("/api/nowhere/", headers={"X-Correlation-ID": "err-2"})["X-Correlation-ID"] == "err-2"


def test_authenticated_user_lands_in_events_and_command_log(api):
    user = AuthUser.objects.create_user("carol", password="pw")
    api.force_authenticate(user)
    create_user(api)
    event = Event.objects.get()
    assert event.user == str(user.pk)
    assert event.metadata["username"] == "carol"
    assert CommandLog.objects.get().user == str(user.pk)


# -- authentication and permissions ------------------------------------------------


def test_anonymous_user_gets_401_when_authentication_is_required(api):
    response = post(api, "/locked/app-user/create-user/", {"name": "a", "email": "a@b.c"})
    body = assert_error(response, 401, "not_authenticated")
    assert "credentials" in body["message"]
    assert response["WWW-Authenticate"].startswith("Basic")
    assert_error(api.get("/locked/app-user/user/"), 401, "not_authenticated")
    assert_nothing_stored()


def test_bad_credentials_are_401(api):
    api.credentials(HTTP_AUTHORIZATION="Basic Ym9iOndyb25n")  # bob:wrong
    assert_error(post(api, "/locked/app-user/create-user/", {"name": "a", "email": "a@b.c"}),
                 401, "authentication_failed")


def test_forbidden_user_gets_403(api):
    AuthUser.objects.create_user("dave", password="pw")
    api.login(username="dave", password="pw")
    api.credentials(HTTP_AUTHORIZATION="Basic ZGF2ZTpwdw==")  # dave:pw
    created = post(api, "/locked/app-user/create-user/", {"name": "a", "email": "a@b.c"})
    assert created.status_code == 201
    assert created["Location"] == f"/locked/app-user/user/{created.json()['aggregate_id']}/"
    response = post(api, f"/locked/app-user/deactivate-user/{created.json()['aggregate_id']}/")
    assert_error(response, 403, "permission_denied")
    assert Event.objects.count() == 1


def test_domain_permission_denied_is_403(api, monkeypatch):
    from django_fluvius.exceptions import PermissionDenied
    from example_project.users.domain import UserAggregate

    def refuse(self):
        raise PermissionDenied("Only HR may deactivate users.")

    monkeypatch.setattr(UserAggregate, "deactivate_user", refuse)
    aggregate_id = create_user(api).json()["aggregate_id"]
    body = assert_error(post(api, f"/api/app-user/deactivate-user/{aggregate_id}/"), 403, "permission_denied")
    assert body["message"] == "Only HR may deactivate users."



# -- bad input the payload's types let through: never a 500 ---------------------------


@pytest.mark.parametrize("line", [
    {"sku": "a", "quantity": "abc", "price": "1"},
    {"sku": "a", "quantity": 1, "price": "x"},
    {"sku": "a", "quantity": 1, "price": "NaN"},
    {"sku": "a", "quantity": 1.5, "price": "1"},
    {"sku": "a", "quantity": 10**30, "price": "1"},
    {"sku": "a", "quantity": 1, "price": 1e308},
    {"sku": "a", "quantity": 0, "price": "1"},
    {"sku": "a", "quantity": 1, "price": "-1"},
])
def test_free_form_order_lines_are_checked_by_the_domain(api, line):
    response = post(api, "/api/app-order/place-order/",
                    {"customer_id": str(uuid.uuid4()), "items": [line]})
    assert_error(response, 422, "invalid_line")  # the rule code the domain gives
    assert Event.objects.count() == 0


def test_an_order_total_over_its_column_is_refused(api):
    line = {"sku": "gold", "quantity": 10_000, "price": "1000000"}
    response = post(api, "/api/app-order/place-order/", {"customer_id": str(uuid.uuid4()), "items": [line] * 2})
    body = assert_error(response, 422, "order_total_too_large")
    assert "total" in body["message"]


@pytest.mark.mysql
def test_a_uuid_mariadb_refuses_is_400_not_500(api):
    # A valid Python UUID of the NCS variant: MariaDB's native uuid column refuses it (1292).
    line = {"sku": "a", "quantity": 1, "price": "1"}
    response = post(api, "/api/app-order/place-order/",
                    {"customer_id": "f7ad61ff-583e-e7b6-5b3f-9d6f99029742", "items": [line]})
    body = assert_error(response, 400, "invalid_data")
    assert "uuid" in body["message"].lower()
    assert_nothing_stored()


@pytest.mark.server_database
def test_a_refused_value_under_an_idempotency_key_still_logs_the_failure(api):
    response = post(api, "/api/app-user/create-user/", {"name": "n" * 500, "email": "long@example.com"},
                    **{"Idempotency-Key": "refused-once"})
    assert_error(response, 400, "invalid_data")
    assert_nothing_stored()
    assert CommandLog.objects.get().status == "failed"  # the log row outlived the rollback


def test_a_value_the_database_cannot_hold_is_400_not_500(api):
    from django.db import connection

    response = post(api, "/api/app-user/create-user/", {"name": "n" * 500, "email": "long@example.com"})
    if connection.vendor in ("postgresql", "mysql"):  # varchar(200) refuses it; SQLite does not enforce lengths
        body = assert_error(response, 400, "invalid_data")
        assert "too long" in body["message"]
        assert_nothing_stored()
        assert CommandLog.objects.get().status == "failed"
    else:
        assert response.status_code == 201


def test_throttled_requests_are_429_with_retry_after(api, settings):
    import types

    from django.core.cache import cache
    from django.urls import include, path
    from rest_framework.throttling import AnonRateThrottle

    from django_fluvius.rest import CommandViewSet, DomainRouter
    from example_project.users.domain import UserDomain

    class OnePerMinute(AnonRateThrottle):
        rate = "1/min"

    class Throttled(CommandViewSet):
        throttle_classes = [OnePerMinute]

    router = DomainRouter()
    router.register(UserDomain, command_viewset=Throttled)
    urlconf = types.ModuleType("throttled_urls")
    urlconf.urlpatterns = [path("t/", include(router.urls))]
    settings.ROOT_URLCONF = urlconf
    cache.clear()
    assert post(api, "/t/app-user/create-user/", {"name": "a", "email": "a@b.c"}).status_code == 201
    response = post(api, "/t/app-user/create-user/", {"name": "b", "email": "b@b.c"})
    body = assert_error(response, 429, "throttled")
    assert "throttled" in body["message"].lower()
    assert int(response["Retry-After"]) > 0
    assert User.objects.count() == 1


def test_options_describes_the_command_payload(api):
    response = api.options("/api/app-user/create-user/")
    assert response.status_code == 200
    fields = response.json()["actions"]["POST"]
    assert fields["name"]["required"] is True and fields["email"]["type"] == "string"
