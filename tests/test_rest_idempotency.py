"""Idempotency-Key: a retry returns the first response and runs nothing."""

import json

import pytest
from django.contrib.auth.models import User as AuthUser
from django.test import override_settings
from rest_framework.test import APIClient

from django_fluvius.models import CommandLog, Event, IdempotencyRecord
from django_fluvius.rest.idempotency import IdempotencyStore
from example_project.users.models import User

pytestmark = [pytest.mark.urls("tests.test_rest_urls"), pytest.mark.django_db]

CREATE = "/api/app-user/create-user/"


@pytest.fixture
def api():
    return APIClient()


def post(api, url, data, key=None, **headers):
    if key is not None:
        headers["Idempotency-Key"] = key
    return api.post(url, data, format="json", headers=headers)


def test_same_key_and_body_returns_the_first_response_and_runs_once(api):
    first = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-1")
    second = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["ETag"] == first["ETag"] == '"1"'
    assert second["Location"] == first["Location"]
    assert second["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert User.objects.count() == 1
    assert Event.objects.count() == 1
    assert CommandLog.objects.count() == 1


def test_same_key_with_another_body_is_422(api):
    post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-2")
    response = post(api, CREATE, {"name": "Other", "email": "a@x.io"}, key="k-2")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert User.objects.count() == 1


def test_same_key_on_another_aggregate_or_command_is_422(api):
    ann = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}).json()["aggregate_id"]
    bob = post(api, CREATE, {"name": "Bob", "email": "b@x.io"}).json()["aggregate_id"]
    assert post(api, f"/api/app-user/rename-user/{ann}/", {"name": "A2"}, key="k-3").status_code == 200
    assert post(api, f"/api/app-user/rename-user/{bob}/", {"name": "A2"}, key="k-3").status_code == 422
    assert post(api, f"/api/app-user/deactivate-user/{ann}/", {}, key="k-3").status_code == 422
    assert User.objects.get(pk=bob).name == "Bob"


def test_if_match_is_part_of_the_request(api):
    ann = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}).json()["aggregate_id"]
    url = f"/api/app-user/rename-user/{ann}/"
    assert post(api, url, {"name": "B"}, key="k-4", **{"If-Match": '"1"'}).status_code == 200
    replay = post(api, url, {"name": "B"}, key="k-4", **{"If-Match": '"1"'})
    assert replay.status_code == 200  # not 412: the first response comes back
    assert replay["ETag"] == '"2"'
    assert post(api, url, {"name": "B"}, key="k-4").status_code == 422


def test_keys_are_per_user(api):
    AuthUser.objects.create_user("u1", password="pw")
    AuthUser.objects.create_user("u2", password="pw")
    api.login(username="u1", password="pw")
    first = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="shared")
    other = APIClient()
    other.login(username="u2", password="pw")
    second = post(other, CREATE, {"name": "Ann", "email": "a@x.io"}, key="shared")
    assert first.status_code == second.status_code == 201
    assert first.json()["aggregate_id"] != second.json()["aggregate_id"]
    assert "Idempotent-Replayed" not in second
    assert User.objects.count() == 2


def test_a_failed_command_stores_nothing_so_its_retry_runs(api):
    refused = post(api, CREATE, {"name": "Ann", "email": "no-at"}, key="k-5")
    assert refused.status_code == 422
    assert IdempotencyRecord.objects.count() == 0
    assert CommandLog.objects.get().status == "rejected"  # the rejection is still logged
    invalid = post(api, CREATE, {"name": "Ann"}, key="k-5")
    assert invalid.status_code == 400
    ok = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-5")
    assert ok.status_code == 201
    assert IdempotencyRecord.objects.get().key == "k-5"


@pytest.mark.parametrize("key", ["has space", "x" * 256, "tab\tkey", "é"])
def test_malformed_key_is_400(api, key):
    response = api.post(CREATE, {"name": "Ann", "email": "a@x.io"}, format="json",
                        HTTP_IDEMPOTENCY_KEY=key)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert User.objects.count() == 0


def test_expired_keys_run_again(api):
    post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-6")
    with override_settings(FLUVIUS={"IDEMPOTENCY_TTL": 0}):
        again = post(api, CREATE, {"name": "Ann", "email": "a@x.io"}, key="k-6")
        assert again.status_code == 201 and "Idempotent-Replayed" not in again
        assert IdempotencyStore("default").purge_expired() == 1
    assert User.objects.count() == 2


def test_the_stored_response_is_what_was_sent(api):
    first = post(api, "/api/app-order/place-order/",
                 {"customer_id": "3b241101-e2bb-4255-8caf-4136c566a962",
                  "items": [{"sku": "A", "quantity": 2, "price": "1.50"}]}, key="k-7")
    assert first.status_code == 201, first.content
    record = IdempotencyRecord.objects.get()
    assert json.loads(record.response) == first.json()
    assert record.status_code == 201
    assert record.namespace == "app-order" and record.command == "place-order"
    replay = post(api, "/api/app-order/place-order/",
                  {"items": [{"price": "1.50", "quantity": 2, "sku": "A"}],
                   "customer_id": "3b241101-e2bb-4255-8caf-4136c566a962"}, key="k-7")
    assert replay.content == first.content  # key order of the body does not matter
