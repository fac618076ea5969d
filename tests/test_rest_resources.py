"""Resources over HTTP: lists, items with ETag, time travel, event streams, _meta."""

import datetime
import time
import uuid

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from django_fluvius.rest.views import ResourceViewSet
from tests.testapp.domain import NoteDomain

pytestmark = [pytest.mark.urls("tests.test_rest_urls"), pytest.mark.django_db]


@pytest.fixture
def api():
    return APIClient()


def run(api, url, data=None):
    response = api.post(url, data or {}, format="json")
    assert response.status_code in (200, 201), response.content
    return response.json()


@pytest.fixture
def user_history(api):
    """A user created as Ann, renamed to Bea then Cid, with the time between each step."""
    created = run(api, "/api/app-user/create-user/", {"name": "Ann", "email": "ann@example.com"})
    aggregate_id = created["aggregate_id"]
    times = [timezone.now()]
    for name in ("Bea", "Cid"):
        time.sleep(0.01)
        run(api, f"/api/app-user/rename-user/{aggregate_id}/", {"name": name})
        times.append(timezone.now())
    return aggregate_id, times


def test_list_pages_and_filters(api):
    for i in range(3):
        run(api, "/api/app-user/create-user/", {"name": f"U{i}", "email": f"u{i}@x.io"})
    body = api.get("/api/app-user/user/", {"limit": 2, "count": "true"}).json()
    assert body["count"] == 3
    assert len(body["results"]) == 2
    assert body["next"]
    assert {"id", "version", "name", "email", "active"} <= set(body["results"][0])
    only = api.get("/api/app-user/user/", {"name": "U1"}).json()["results"]
    assert [u["name"] for u in only] == ["U1"]


def test_list_ignores_unknown_parameters_unless_strict(api, settings):
    assert api.get("/api/app-user/user/", {"nosuchfield": "1", "_": "123"}).status_code == 200
    settings.FLUVIUS = {**settings.FLUVIUS, "STRICT_QUERY_PARAMS": True}
    response = api.get("/api/app-user/user/", {"nosuchfield": "1"})
    assert response.status_code == 400
    assert "nosuchfield" in response.json()["errors"]


def test_item_has_its_version_as_etag(api, user_history):
    aggregate_id, _ = user_history
    response = api.get(f"/api/app-user/user/{aggregate_id}/")
    assert response.status_code == 200
    assert response["ETag"] == '"3"'
    assert response.json()["name"] == "Cid"
    assert response.json()["version"] == 3


def test_if_none_match_with_the_current_etag_is_304(api, user_history):
    aggregate_id, _ = user_history
    assert api.get(f"/api/app-user/user/{aggregate_id}/", HTTP_IF_NONE_MATCH='"3"').status_code == 304
    assert api.get(f"/api/app-user/user/{aggregate_id}/", HTTP_IF_NONE_MATCH='"2"').status_code == 200


def test_item_errors(api):
    response = api.get("/api/app-user/user/nope/")
    assert response.status_code == 404 and response.json()["code"] == "invalid_aggregate_id"
    response = api.get(f"/api/app-user/user/{uuid.uuid4()}/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_an_aggregate_of_another_resource_is_not_found_under_this_one(api):
    note = run(api, "/api/test-notes/create-note/", {"title": "T"})["aggregate_id"]
    assert api.get(f"/api/test-notes/note/{note}/").status_code == 200
    assert api.get(f"/api/test-notes/folder/{note}/").status_code == 404
    assert api.get(f"/api/test-notes/folder/{note}/?version=1").status_code == 404
    assert api.get(f"/api/test-notes/folder/{note}/events/").status_code == 404
    assert api.get(f"/api/app-user/user/{note}/").status_code == 404


def test_time_travel_by_version(api, user_history):
    aggregate_id, _ = user_history
    url = f"/api/app-user/user/{aggregate_id}/"
    for version, name in ((1, "Ann"), (2, "Bea"), (3, "Cid")):
        response = api.get(url, {"version": version})
        assert response.status_code == 200
        assert response.json()["name"] == name
        assert response.json()["version"] == version
        assert response["ETag"] == f'"{version}"'


def test_time_travel_reads_the_event_store_not_the_row(api, user_history):
    from example_project.users.models import User

    aggregate_id, _ = user_history
    User.objects.filter(pk=aggregate_id).update(name="tampered row")
    assert api.get(f"/api/app-user/user/{aggregate_id}/").json()["name"] == "tampered row"
    assert api.get(f"/api/app-user/user/{aggregate_id}/", {"version": 3}).json()["name"] == "Cid"


def test_time_travel_by_time(api, user_history):
    aggregate_id, times = user_history
    url = f"/api/app-user/user/{aggregate_id}/"
    assert api.get(url, {"at": times[0].isoformat()}).json()["name"] == "Ann"
    assert api.get(url, {"at": times[1].isoformat()}).json()["name"] == "Bea"
    naive_utc = times[1].astimezone(datetime.UTC).replace(tzinfo=None).isoformat()
    assert api.get(url, {"at": naive_utc}).json()["name"] == "Bea"  # naive = the project's time zone (UTC)
    before = (times[0] - datetime.timedelta(hours=1)).isoformat()
    response = api.get(url, {"at": before})
    assert response.status_code == 404 and "did not exist" in response.json()["message"]


@pytest.mark.parametrize(("params", "status", "code"), [
    ({"version": "0"}, 400, "invalid_parameter"),
    ({"version": "abc"}, 400, "invalid_parameter"),
    ({"version": "-1"}, 400, "invalid_parameter"),
    ({"version": "99"}, 404, "unknown_version"),
    ({"at": "yesterday"}, 400, "invalid_parameter"),
    ({"at": "2024-13-45T99:00:00"}, 400, "invalid_parameter"),
    ({"version": "1", "at": "2024-01-01T00:00:00Z"}, 400, "invalid_parameter"),
])
def test_time_travel_errors(api, user_history, params, status, code):
    aggregate_id, _ = user_history
    response = api.get(f"/api/app-user/user/{aggregate_id}/", params)
    assert response.status_code == status, response.content
    assert response.json()["code"] == code


def test_events_stream_pages_in_version_order(api, user_history):
    aggregate_id, _ = user_history
    url = f"/api/app-user/user/{aggregate_id}/events/"
    body = api.get(url).json()
    assert [e["version"] for e in body["results"]] == [1, 2, 3]
    assert [e["evt_key"] for e in body["results"]] == ["user-created", "user-renamed", "user-renamed"]
    assert body["results"][1]["payload"] == {"name": "Bea"}
    page = api.get(url, {"limit": 1, "offset": 1}).json()
    assert [e["version"] for e in page["results"]] == [2]
    assert page["count"] == 3 and page["next"] and page["previous"]
    after = api.get(url, {"after_version": 1}).json()
    assert [e["version"] for e in after["results"]] == [2, 3]
    assert api.get(url, {"after_version": "x"}).status_code == 400
    assert api.get(f"/api/app-user/user/{uuid.uuid4()}/events/").status_code == 404


class OwnNotesDomain(NoteDomain):
    """Only the notes titled 'mine' are visible (row scoping)."""

    def scope_queryset(self, resource, queryset):
        return queryset.filter(title="mine")


def test_row_scoping_applies_to_items_time_travel_and_events(api, settings):
    from django.urls import include, path

    from django_fluvius.rest import DomainRouter

    router = DomainRouter()
    router.register(OwnNotesDomain)
    hidden = run(api, "/api/test-notes/create-note/", {"title": "theirs"})["aggregate_id"]
    mine = run(api, "/api/test-notes/create-note/", {"title": "mine"})["aggregate_id"]

    import types
    urlconf = types.ModuleType("scoped_urls")
    urlconf.urlpatterns = [path("scoped/", include(router.urls))]
    settings.ROOT_URLCONF = urlconf
    listed = api.get("/scoped/test-notes/note/").json()["results"]
    assert [n["id"] for n in listed] == [mine]
    assert api.get(f"/scoped/test-notes/note/{mine}/").status_code == 200
    for suffix in ("", "?version=1", "events/"):
        response = api.get(f"/scoped/test-notes/note/{hidden}/{suffix}")
        assert response.status_code == 404, suffix


def test_meta_lists_commands_with_schemas_and_resources(api):
    body = api.get("/api/app-user/_meta/").json()
    assert body["namespace"] == "app-user"
    commands = {c["name"]: c for c in body["commands"]}
    assert set(commands) == {"create-user", "rename-user", "deactivate-user"}
    create = commands["create-user"]
    assert create["url"] == "/api/app-user/create-user/"
    assert create["create"] is True and create["needs_aggregate_id"] is False
    assert create["schema"]["required"] == ["name", "email"]
    assert create["schema"]["properties"]["name"]["type"] == "string"
    assert create["schema"]["additionalProperties"] is False
    assert create["description"] == "Register a new user."
    rename = commands["rename-user"]
    assert rename["url"] == "/api/app-user/rename-user/{aggregate_id}/"
    assert rename["needs_aggregate_id"] is True
    [resource] = body["resources"]
    assert resource["name"] == "user"
    assert resource["model"] == "app_user.User"
    assert resource["url"] == "/api/app-user/user/"
    assert resource["schema"]["properties"]["email"]["format"] == "email"
    assert isinstance(resource["query"], dict)


def test_meta_schemas_follow_type_hints(api):
    body = api.get("/api/test-notes/_meta/").json()
    create = next(c for c in body["commands"] if c["name"] == "create-note")
    props = create["schema"]["properties"]
    assert props["tags"]["type"] == ["array", "null"]
    assert props["tags"]["items"]["type"] == "string"
    assert props["priority"] == {"type": "integer", "default": 0}
    assert props["due"]["format"] == "date"
    assert create["schema"]["required"] == ["title"]
    assert {r["name"] for r in body["resources"]} == {"note", "folder"}


def test_root_lists_namespaces(api):
    body = api.get("/api/").json()
    assert body["namespaces"]["app-user"] == "/api/app-user/_meta/"
    assert set(body["namespaces"]) == {"app-user", "app-order", "test-notes"}


def test_resource_viewset_subclass_with_own_serializer_and_pagination(api, settings):
    import types

    from django.urls import include, path
    from rest_framework import serializers
    from rest_framework.pagination import LimitOffsetPagination

    from django_fluvius.rest import DomainRouter
    from example_project.users.domain import UserDomain
    from example_project.users.models import User

    class NameOnly(serializers.ModelSerializer):
        class Meta:
            model = User
            fields = ["id", "name"]

    class Small(LimitOffsetPagination):
        default_limit = 1

    class Users(ResourceViewSet):
        serializer_class = NameOnly
        pagination_class = Small

    router = DomainRouter()
    router.register(UserDomain, resource_viewset={"user": Users})
    for i in range(2):
        run(api, "/api/app-user/create-user/", {"name": f"N{i}", "email": f"n{i}@x.io"})
    urlconf = types.ModuleType("custom_urls")
    urlconf.urlpatterns = [path("c/", include(router.urls))]
    settings.ROOT_URLCONF = urlconf
    body = api.get("/c/app-user/user/").json()
    assert body["count"] == 2
    assert len(body["results"]) == 1 and set(body["results"][0]) == {"id", "name"}
    meta = api.get("/c/app-user/_meta/").json()
    assert set(meta["resources"][0]["schema"]["properties"]) == {"id", "name"}
