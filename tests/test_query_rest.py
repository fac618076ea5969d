"""The REST list endpoints: filters, ordering, search, limit/offset and cursor pages, 400s, _meta."""

import datetime
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from example_project.users.domain import UserDomain
from tests.testapp.models import Note

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.query_urls")]

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
NOTES = "/api/test-notes/note/"
SCOPED = "/api/test-scoped-notes/note/"


def make_notes(n, **fields):
    rows = [Note(id=uuid.uuid4(), title=f"n{i:02}", priority=i % 4, version=1,
                 created_at=T0 + datetime.timedelta(minutes=i), **fields) for i in range(n)]
    Note.objects.bulk_create(rows)
    return rows


def titles(response):
    assert response.status_code == 200, response.content
    return [row["title"] for row in response.json()["results"]]


def bad(client, url, **params):
    response = client.get(url, params)
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["code"] == "invalid_query"
    return body["errors"]


def test_filters_ordering_and_limit(client):
    make_notes(12)
    response = client.get(NOTES, {"priority__gte": "2", "ordering": "-priority,title", "limit": "4"})
    assert titles(response) == ["n03", "n07", "n11", "n02"]
    assert titles(client.get(NOTES, {"title__in": "n01,n05,n99", "ordering": "title"})) == ["n01", "n05"]
    assert titles(client.get(NOTES, {"priority": "0", "created_at__gte": "2024-01-01T00:04:00Z",
                                     "ordering": "created_at"})) == ["n04", "n08"]
    assert titles(client.get(NOTES, {"title__icontains": "N1", "ordering": "-title"})) == ["n11", "n10"]
    assert titles(client.get(NOTES, {"search": "n03"})) == ["n03"]


def test_limit_offset_links_and_count(client):
    make_notes(7)
    response = client.get(NOTES, {"ordering": "title", "limit": "3"})
    body = response.json()
    assert body["count"] == 7 and body["count_estimated"] is False and body["previous"] is None
    assert "count" not in client.get(NOTES, {"limit": "3", "count": "false"}).json()
    assert [r["title"] for r in body["results"]] == ["n00", "n01", "n02"]
    assert "offset=3" in body["next"]
    second = client.get(body["next"]).json()
    assert [r["title"] for r in second["results"]] == ["n03", "n04", "n05"]
    assert "offset" not in second["previous"]  # back to the start
    third = client.get(second["next"] + "&count=true").json()
    assert third["count"] == 7 and third["next"] is None
    assert [r["title"] for r in third["results"]] == ["n06"]


def test_cursor_pages_follow_links_and_stay_stable_under_inserts(client):
    make_notes(10)
    seen = []
    response = client.get(NOTES, {"ordering": "created_at", "limit": "4", "cursor": ""})
    body = response.json()
    seen += [r["title"] for r in body["results"]]
    assert body["previous"] is None and "cursor=" in body["next"] and "offset" not in body["next"]
    # A newer row sorted before everything arrives while the client pages.
    Note.objects.create(id=uuid.uuid4(), title="early", created_at=T0 - datetime.timedelta(days=1))
    while body["next"]:
        body = client.get(body["next"]).json()
        seen += [r["title"] for r in body["results"]]
    assert seen == [f"n{i:02}" for i in range(10)]
    back = client.get(body["previous"]).json()
    assert [r["title"] for r in back["results"]] == ["n04", "n05", "n06", "n07"]


def test_cursor_from_another_ordering_or_tampered_is_a_400(client):
    make_notes(3)
    next_link = client.get(NOTES, {"ordering": "title", "limit": "1", "cursor": ""}).json()["next"]
    cursor = parse_qs(urlsplit(next_link).query)["cursor"][0]
    errors = bad(client, NOTES, ordering="priority", limit="1", cursor=cursor)
    assert "ordering" in errors["cursor"][0]
    errors = bad(client, NOTES, ordering="title", cursor="garbage")
    assert "not a valid cursor" in errors["cursor"][0]


@pytest.mark.parametrize("params, field, says", [
    ({"colour": "red"}, "colour", "Filterable fields:"),
    ({"priority__gt": "abc"}, "priority__gt", "'abc' is not a valid integer"),
    ({"priority__like": "1"}, "priority__like", "Operator 'like' is not allowed on 'priority' (integer)"),
    ({"title__gt": "a"}, "title__gt", "allowed: exact, iexact, icontains, startswith, in"),
    ({"limit": "100000000"}, "limit", "between 1 and 1000"),
    ({"limit": "-1"}, "limit", "between 1 and 1000"),
    ({"offset": "999999999999"}, "offset", "between 0 and"),
    ({"ordering": "tags"}, "ordering", "Sortable fields:"),
    ({"ordering": "title); DROP TABLE testapp_note; --"}, "ordering", "Cannot sort by"),
    ({"title' OR '1'='1": "x"}, "title' OR '1'='1", "Unknown filter"),
    ({"due": "not-a-date"}, "due", "not a valid date"),
    ({"created_at__range": "2024-01-01"}, "created_at__range", "two comma-separated values"),
    ({"id__in": ",".join(["00000000-0000-0000-0000-000000000000"] * 101)}, "id__in", "at most 100"),
])
def test_bad_parameters_are_400s_naming_the_field(client, params, field, says, strict_query):
    make_notes(2)
    with CaptureQueriesContext(connection) as queries:
        errors = bad(client, NOTES, **params)
    assert field in errors and says in " ".join(errors[field]), errors
    assert not [q for q in queries if "testapp_note" in q["sql"]]  # nothing ran on the table


def test_sparse_fields_are_refused_rather_than_deferred(client):
    errors = bad(client, NOTES, fields="title")
    assert "not supported" in errors["fields"][0]


@pytest.mark.django_db
def test_decimal_filters_never_overflow_the_column(client):
    response = client.get("/api/app-order/order/", {"total__gte": "1e999999"})
    assert response.status_code == 400 and "out of range" in response.json()["errors"]["total__gte"][0]
    assert client.get("/api/app-order/order/", {"total__gte": "10.5"}).status_code == 200


def test_sql_looking_values_are_just_values(client):
    make_notes(2)
    assert titles(client.get(NOTES, {"title": "n00' OR '1'='1"})) == []
    assert titles(client.get(NOTES, {"search": "'; DROP TABLE testapp_note; --"})) == []
    assert Note.objects.count() == 2


def test_declared_surface_hides_fields_and_bounds_limits(client, strict_query):
    make_notes(8)
    errors = bad(client, SCOPED, ordering="body")
    assert "Cannot sort by 'body'" in errors["ordering"][0]
    errors = bad(client, SCOPED, body__icontains="x")
    assert "Unknown filter 'body'" in errors["body__icontains"][0]
    errors = bad(client, SCOPED, limit="21")
    assert "between 1 and 20" in errors["limit"][0]
    # default_limit 5, default ordering -priority (then -id).
    body = client.get(SCOPED).json()
    assert len(body["results"]) == 5 and [r["title"] for r in body["results"]][:2] in (
        ["n03", "n07"], ["n07", "n03"])


def test_row_scoping_applies_to_lists_and_items(client, django_user_model):
    rows = make_notes(4)
    Note.objects.filter(pk=rows[0].pk).update(archived=True)
    assert sorted(titles(client.get(SCOPED, {"ordering": "title"}))) == ["n01", "n02", "n03"]
    assert titles(client.get(SCOPED, {"archived": "true"})) == []
    assert client.get(f"{SCOPED}{rows[0].pk}/").status_code == 404
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    client.force_login(staff)
    assert titles(client.get(SCOPED, {"archived": "true"})) == ["n00"]
    assert client.get(f"{SCOPED}{rows[0].pk}/").status_code == 200


def test_detail_views_ignore_the_list_parameters(client):
    domain = UserDomain()
    result = domain.process_command(domain.create_command("create-user", {"name": "A", "email": "a@x.io"}))
    response = client.get(f"/api/app-user/user/{result.aggregate_id}/", {"version": "1"})
    assert response.status_code == 200 and response.json()["name"] == "A"


def test_user_search_on_name_and_email(client):
    domain = UserDomain()
    for name, email in (("John Smith", "john@example.com"), ("Ann Lee", "ann@jolly.org"), ("Bo", "bo@x.io")):
        domain.process_command(domain.create_command("create-user", {"name": name, "email": email}))
    names = lambda r: sorted(row["name"] for row in r.json()["results"])  # noqa: E731
    assert names(client.get("/api/app-user/user/", {"search": "john"})) == ["John Smith"]
    assert names(client.get("/api/app-user/user/", {"search": "ann"})) == ["Ann Lee"]
    assert names(client.get("/api/app-user/user/", {"search": "smi jo"})) == ["John Smith"]
    errors = bad(client, "/api/app-user/user/", version__in="1")
    assert "allowed: exact, gt, gte, lt, lte" in errors["version__in"][0]


def test_meta_describes_the_query_surface(client):
    body = client.get("/api/test-scoped-notes/_meta/").json()
    (note,) = [r for r in body["resources"] if r["name"] == "note"]
    query = note["query"]
    assert query["filters"]["title"]["operators"] == ["exact", "icontains"]
    assert query["filters"]["priority"]["operators"] == ["exact", "gt", "gte", "lt", "lte", "range", "in"]
    assert "isnull" in query["filters"]["due"]["operators"]  # nullable
    assert "body" not in query["filters"] and "body" not in query["ordering"]
    assert query["ordering"] == ["created_at", "due", "priority", "title"]
    assert query["default_ordering"] == ["-priority"]
    assert query["search"]["fields"] == ["title"]
    assert query["pagination"]["max_limit"] == 20 and query["pagination"]["default_limit"] == 5
    users = client.get("/api/app-user/_meta/").json()
    (user,) = users["resources"]
    assert user["query"]["search"]["fields"] == ["name", "email"]
    assert user["query"]["search"]["backend"] == (
        "postgres-fulltext" if connection.vendor == "postgresql" else "icontains")
