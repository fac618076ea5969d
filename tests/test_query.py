"""QueryBuilder: chaining, execution, untrusted parameters, cursors, row scoping."""

import asyncio
import datetime
import uuid

import pytest
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from django_fluvius import DomainContext, QueryBuilder
from django_fluvius.exceptions import InvalidQuery, UnknownResource
from django_fluvius.registry import domains
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.query_domains import ScopedNoteDomain, TenantNoteDomain
from tests.testapp.domain import NoteDomain
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def create_user(name, email=None, domain=None):
    domain = domain or UserDomain()
    return domain.process_command(
        domain.create_command("create-user", {"name": name, "email": email or f"{name.lower()}@x.io"}))


def make_notes(specs):
    """Projection rows straight into the table: (title, priority, archived, due) tuples."""
    rows = []
    for i, spec in enumerate(specs):
        title, priority, archived, due = (*spec, None, None, None)[:4] if isinstance(spec, tuple) else (spec, 0, False, None)
        rows.append(Note(id=uuid.uuid4(), title=title, priority=priority or 0, archived=bool(archived),
                         due=due, created_at=T0 + datetime.timedelta(minutes=i), version=1))
    Note.objects.bulk_create(rows)
    return rows


@pytest.fixture
def extra_domains():
    for domain in (ScopedNoteDomain, TenantNoteDomain):
        domains.register(domain)
    yield
    for domain in (ScopedNoteDomain, TenantNoteDomain):
        domains.unregister(domain.__namespace__)


# -- the builder ----------------------------------------------------------------


def test_design_example_filters_sorts_and_limits():
    users = [create_user(f"U{i}") for i in range(4)]
    domain = UserDomain()
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=users[1].aggregate_id))
    query = QueryBuilder("user").filter(active=True).sort("created_at", desc=True).limit(2)
    results = query.execute()
    assert [u.name for u in results] == ["U3", "U2"]
    assert isinstance(query.queryset, QuerySet)
    assert [u.name for u in query.queryset] == ["U3", "U2"]
    assert [u.name for u in query] == ["U3", "U2"]  # iteration
    assert query.count() == 3  # the total the page is cut from
    assert query.exists() and query.first().name == "U3"
    assert not QueryBuilder("user").filter(name="nobody").exists()
    assert QueryBuilder("user").filter(name="nobody").first() is None


def test_builder_is_immutable_each_step_is_a_new_builder():
    for name in ("Ann", "Bob", "Cid"):
        create_user(name)
    base = QueryBuilder("user").sort("name")
    only_b = base.filter(name__startswith="B")
    limited = base.limit(1)
    assert [u.name for u in base.execute()] == ["Ann", "Bob", "Cid"]
    assert [u.name for u in only_b.execute()] == ["Bob"]
    assert [u.name for u in limited.execute()] == ["Ann"]
    assert base is not only_b and base.limit(1) is not limited


def test_resource_by_qualified_name_and_ambiguity(extra_domains):
    make_notes(["a", "b"])
    assert QueryBuilder("test-notes.note").count() == 2
    assert QueryBuilder("app-user.user").count() == 0
    with pytest.raises(UnknownResource) as info:
        QueryBuilder("note")  # three registered domains have a 'note'
    assert "test-notes.note" in str(info.value)
    with pytest.raises(UnknownResource):
        QueryBuilder("nothing")
    with pytest.raises(UnknownResource):
        QueryBuilder("test-notes.nothing")


def test_q_objects_exclude_offset_and_order_by():
    make_notes([("a", 1), ("b", 2), ("c", 3), ("d", 4), ("e", 5)])
    q = QueryBuilder("test-notes.note")
    titles = lambda b: [n.title for n in b]  # noqa: E731
    assert titles(q.filter(Q(priority__lte=2) | Q(title="e")).sort("title")) == ["a", "b", "e"]
    assert titles(q.exclude(title__in=["a", "c"]).sort("priority", desc=True)) == ["e", "d", "b"]
    assert titles(q.sort("priority").offset(1).limit(2)) == ["b", "c"]
    assert titles(q.order_by("-priority")[1:3]) == ["d", "c"]
    assert q.order_by("-priority")[0].title == "e"
    assert titles(q.sort("-title").limit(2)) == ["e", "d"]


def test_only_loads_the_named_fields_and_the_sort_keys():
    make_notes([("a", 1)])
    row = QueryBuilder("test-notes.note").only("title").sort("priority").first()
    deferred = row.get_deferred_fields()
    assert "body" in deferred and "title" not in deferred and "priority" not in deferred
    assert QueryBuilder("test-notes.note").fields("title").execute()[0].title == "a"


def test_default_ordering_comes_from_the_surface_with_pk_tiebreak():
    a, b, c = make_notes(["a", "b", "c"])
    # testapp.Note has no Meta.ordering: the default is -created_at, then the pk.
    assert [n.title for n in QueryBuilder("test-notes.note")] == ["c", "b", "a"]
    sql = str(QueryBuilder("test-notes.note").sort("priority").queryset.query)
    quote = connection.ops.quote_name
    assert sql.rstrip().endswith(f'{quote("testapp_note")}.{quote("id")} ASC')


def test_search_matches_every_word_in_the_searched_fields():
    create_user("John Smith", "john@example.com")
    create_user("Joan Baker", "jb@example.org")
    create_user("Mary Jones", "mary@example.com")
    names = lambda q: sorted(u.name for u in q)  # noqa: E731
    users = QueryBuilder("user")
    assert names(users.search("john")) == ["John Smith"]
    assert names(users.search("jo")) == ["Joan Baker", "John Smith", "Mary Jones"]
    assert names(users.search("jb")) == ["Joan Baker"]  # found in the email
    assert names(users.search("smith john")) == ["John Smith"]
    assert names(users.search("john baker")) == []
    assert names(users.search("  ")) == names(users)  # no words: no narrowing
    assert names(users.search("'; DROP TABLE app_user_user; --")) == []
    assert users.count() == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("close_async_connections")
def test_async_forms():
    create_user("Async")

    async def read():
        query = QueryBuilder("user").filter(name="Async")
        rows = await query.aexecute()
        collected = [u async for u in query]
        return rows, collected, await query.acount(), await query.aexists(), await query.afirst(), \
            await query.limit(1).apage()

    rows, collected, count, exists, first, page = asyncio.run(read())
    assert [u.name for u in rows] == ["Async"] == [u.name for u in collected]
    assert count == 1 and exists and first.name == "Async" and page.items[0].name == "Async"


# -- untrusted parameters ----------------------------------------------------------


def test_from_params_applies_checked_filters_ordering_search_and_paging():
    make_notes([("alpha", 1), ("beta", 5), ("gamma", 9), ("delta", 5, True)])
    q = QueryBuilder.from_params("test-notes.note", {
        "priority__gte": "5", "archived": "false", "ordering": "-priority,title", "limit": "10",
    })
    assert [n.title for n in q] == ["gamma", "beta"]
    q = QueryBuilder.from_params("test-notes.note", {"title__in": "alpha, delta", "ordering": "title"})
    assert [n.title for n in q] == ["alpha", "delta"]
    q = QueryBuilder.from_params("test-notes.note", {"priority__range": "2,6", "ordering": "title"})
    assert [n.title for n in q] == ["beta", "delta"]
    q = QueryBuilder.from_params("test-notes.note", {"search": "alp", "offset": "0"})
    assert [n.title for n in q] == ["alpha"]
    assert QueryBuilder.from_params("test-notes.note", {"title__icontains": "ELT"}).count() == 1
    # apply_params adds to what the builder already has.
    assert QueryBuilder("test-notes.note").filter(priority=5).apply_params({"archived": "true"}).count() == 1


def invalid(params, resource="test-notes.note"):
    with pytest.raises(InvalidQuery) as info:
        QueryBuilder.from_params(resource, params)
    body = info.value.as_dict()
    assert info.value.status_code == 400 and body["code"] == "invalid_query"
    return body["errors"]


@pytest.mark.parametrize("params, key, expected", [
    ({"colour": "red"}, "colour", "Filterable fields: archived, body, created_at"),
    ({"priority__gt": "abc"}, "priority__gt", "'abc' is not a valid integer"),
    ({"priority__gt": "99999999999999999999"}, "priority__gt", "out of range"),
    ({"priority__in": "1,x"}, "priority__in", "'x' is not a valid integer"),
    ({"priority__range": "1"}, "priority__range", "two comma-separated values"),
    ({"archived": "maybe"}, "archived", "not a boolean"),
    ({"archived__icontains": "t"}, "archived__icontains", "allowed: exact"),
    ({"title__gt": "b"}, "title__gt", "Operator 'gt' is not allowed on 'title' (text)"),
    ({"tags": "x"}, "tags", "Unknown filter 'tags'"),  # JSON: no operators -> not filterable by default
    ({"due": "2024-13-45"}, "due", "not a valid date"),
    ({"due__isnull": "perhaps"}, "due__isnull", "not a boolean"),
    ({"created_at__gte": "yesterday"}, "created_at__gte", "not a valid date-time"),
    ({"created_at__gte": "0001-01-01T00:00:00+01:00"}, "created_at__gte", "out of range"),
    ({"created_at__lt": "9999-12-31T23:59:59-01:00"}, "created_at__lt", "out of range"),
    ({"id": "not-a-uuid"}, "id", "not a valid UUID"),
    ({"title": "a\x00b"}, "title", "NUL"),
    ({"title": "x" * 5000}, "title", "longer than"),
    ({"limit": "0"}, "limit", "between 1 and 1000"),
    ({"limit": "1000000"}, "limit", "between 1 and 1000"),
    ({"limit": "ten"}, "limit", "not an integer"),
    ({"offset": "-1"}, "offset", "between 0 and"),
    ({"ordering": "colour"}, "ordering", "Sortable fields: archived, body, created_at"),
    ({"ordering": "tags"}, "ordering", "Cannot sort by 'tags'"),
    ({"ordering": "title;DROP TABLE testapp_note"}, "ordering", "Cannot sort by"),
    ({"ordering": "title,-title"}, "ordering", "names a field twice"),
    ({"title__regex": ".*"}, "title__regex", "Operator 'regex' is not allowed on 'title' (text); allowed: "),
    ({"1=1; DROP TABLE testapp_note; --": "x"}, "1=1; DROP TABLE testapp_note; --", "Unknown filter"),
    ({"edits__gt": "1e400"}, "edits__gt", "not a valid integer"),
    ({"search": "x" * 500}, "search", "longer than"),
    ({"cursor": "abc", "offset": "3"}, "cursor", "cannot be combined with offset"),
    ({"count": "lots"}, "count", "not a boolean"),
    ({"fields": "title,secret"}, "fields", "Unknown or hidden field"),
])
def test_bad_params_are_refused_before_any_query(params, key, expected, django_assert_num_queries, strict_query):
    make_notes(["a"])
    with django_assert_num_queries(0):
        errors = invalid(params)
    assert key in errors, errors
    assert any(expected in message for message in errors[key]), errors[key]


@pytest.mark.parametrize("key", ["title__icontain", "title__startwith", "priority__bogus", "title__regex",
                                 "title__icontains__", "priority__gt__x", "created_at__date__gte"])
def test_a_misspelt_operator_is_refused_not_ignored(key):
    """Unknown parameters are ignored (not strict), but a known field's typo'd operator would
    quietly return every row: it is the field's filter, refused."""
    make_notes(["a", "b"])
    errors = invalid({key: "a"})
    name, operator = key.split("__", 1)
    assert list(errors) == [key] and f"Operator {operator!r} is not allowed on {name!r}" in errors[key][0]
    assert QueryBuilder.from_params("test-notes.note", {"utm_source": "x"}).count() == 2  # still ignored


def test_every_problem_is_reported_at_once(strict_query):
    errors = invalid({"colour": "x", "priority": "y", "ordering": "z", "limit": "-5"})
    assert set(errors) == {"colour", "priority", "ordering", "limit"}


def test_sql_looking_values_are_plain_values():
    make_notes(["' OR 1=1 --", "normal"])
    assert [n.title for n in QueryBuilder.from_params("test-notes.note", {"title": "' OR 1=1 --"})] == ["' OR 1=1 --"]
    assert QueryBuilder.from_params("test-notes.note", {"title": "x' OR '1'='1"}).count() == 0
    assert Note.objects.count() == 2


def test_declared_surface_hides_fields_and_narrows_operators(extra_domains, strict_query):
    make_notes([("a", 1)])
    errors = invalid({"body__icontains": "x"}, "test-scoped-notes.note")
    assert "Unknown filter 'body'" in errors["body__icontains"][0]
    errors = invalid({"ordering": "body"}, "test-scoped-notes.note")
    assert "Cannot sort by 'body'" in errors["ordering"][0]
    errors = invalid({"title__startswith": "a"}, "test-scoped-notes.note")
    assert "allowed: exact, icontains" in errors["title__startswith"][0]
    errors = invalid({"limit": "21"}, "test-scoped-notes.note")
    assert "between 1 and 20" in errors["limit"][0]
    # Trusted code may still filter on anything.
    assert QueryBuilder("test-scoped-notes.note").filter(body="").count() == 1


def test_datetime_values_with_offsets_and_naive_ones():
    make_notes(["a", "b", "c"])  # created at T0, T0+1min, T0+2min
    gte = lambda value: [n.title for n in QueryBuilder.from_params(  # noqa: E731
        "test-notes.note", {"created_at__gte": value, "ordering": "created_at"})]
    assert gte("2024-01-01T00:01:00Z") == ["b", "c"]
    assert gte("2024-01-01T01:01:00+01:00") == ["b", "c"]
    assert gte("2024-01-01T01:01:00 01:00") == ["b", "c"]  # '+' unescaped in a URL
    assert gte("2024-01-01 00:02:00") == ["c"]  # naive: UTC
    assert gte("2024-01-01") == ["a", "b", "c"]


# -- pages ---------------------------------------------------------------------------


def walk(query, limit):
    """Every page forwards from the start, by cursor; returns the titles page by page."""
    pages, page = [], query.limit(limit).page()
    while True:
        pages.append([n.title for n in page.items])
        if not page.has_next:
            return pages
        page = query.limit(limit).page(page.next_cursor)


def test_cursor_pages_cover_everything_once_forwards_and_backwards():
    make_notes([(f"n{i:02}", i % 3) for i in range(11)])
    query = QueryBuilder("test-notes.note").sort("priority").sort("title", desc=True)
    expected = [n.title for n in query]
    pages = walk(query, 4)
    assert [t for p in pages for t in p] == expected
    assert [len(p) for p in pages] == [4, 4, 3]
    # And back again from the last page.
    last = query.limit(4).page(query.limit(4).page(query.limit(4).page().next_cursor).next_cursor)
    back = query.limit(4).page(last.previous_cursor)
    assert [n.title for n in back] == expected[4:8]
    first = query.limit(4).page(back.previous_cursor)
    assert [n.title for n in first] == expected[:4] and not first.has_previous and first.has_next


def test_cursor_pages_are_stable_under_inserts_offset_pages_are_not():
    make_notes([(f"n{i:02}", i) for i in range(10)])
    query = QueryBuilder("test-notes.note").sort("priority")
    first = query.limit(4).page()
    assert [n.title for n in first] == ["n00", "n01", "n02", "n03"]
    # A row that sorts onto the first page arrives between two page reads.
    Note.objects.create(id=uuid.uuid4(), title="early", priority=-1, created_at=timezone.now())
    by_cursor = query.limit(4).page(first.next_cursor)
    by_offset = query.offset(4).limit(4).execute()
    assert [n.title for n in by_cursor] == ["n04", "n05", "n06", "n07"]
    assert [n.title for n in by_offset] == ["n03", "n04", "n05", "n06"]  # n03 seen twice


def test_cursor_pages_with_nulls_in_the_sort_key_both_directions():
    specs = [(f"n{i}", 0, False, None if i % 3 == 0 else datetime.date(2024, 1, 1 + i % 4)) for i in range(10)]
    make_notes(specs)
    for desc in (False, True):
        query = QueryBuilder("test-notes.note").sort("due", desc=desc)
        expected = [n.title for n in query]
        titles = [n.title for n in query]
        assert len(set(titles)) == 10
        assert [t for p in walk(query, 3) for t in p] == expected
        dues = [n.due for n in query]
        non_null = [d for d in dues if d is not None]
        assert non_null == sorted(non_null, reverse=desc)
        # Nulls last going up, first going down, on every backend.
        assert (dues[-1] is None) if not desc else (dues[0] is None)


def test_cursor_is_opaque_signed_and_tied_to_its_ordering():
    make_notes(["a", "b", "c"])
    query = QueryBuilder("test-notes.note").sort("title")
    cursor = query.limit(1).page().next_cursor
    with pytest.raises(InvalidQuery) as info:
        query.limit(1).page(cursor[:-3] + "abc")
    assert "not a valid cursor" in info.value.errors["cursor"][0]
    with pytest.raises(InvalidQuery) as info:
        QueryBuilder("test-notes.note").sort("priority").limit(1).page(cursor)
    assert "was made for the ordering title,id" in info.value.errors["cursor"][0]
    with pytest.raises(InvalidQuery):
        query.limit(1).offset(2).page(cursor)
    # after()/cursor() continue a builder from a page's cursor.
    assert [n.title for n in query.after(cursor).limit(5)] == ["b", "c"]


def test_page_with_offset_and_count():
    make_notes([(f"n{i}", i) for i in range(7)])
    query = QueryBuilder("test-notes.note").sort("priority")
    page = query.offset(2).limit(3).page(count=True)
    assert [n.title for n in page] == ["n2", "n3", "n4"] and page.count == 7 and page.offset == 2
    assert [n.title for n in query.limit(3).page(page.next_cursor)] == ["n5", "n6"]
    assert [n.title for n in query.limit(3).page(page.previous_cursor)] == ["n0", "n1"]
    assert query.limit(3).page().count is None


# -- row scoping -------------------------------------------------------------------------


def test_resource_scope_hook_applies_to_every_read_path(extra_domains, django_user_model):
    make_notes([("open", 1, False), ("shut", 2, True)])
    staff = django_user_model(username="staff", is_staff=True)
    visitor = DomainContext.create(namespace="test-scoped-notes")
    admin = DomainContext.create(namespace="test-scoped-notes", user=staff)
    assert [n.title for n in QueryBuilder("test-scoped-notes.note", context=visitor)] == ["open"]
    assert QueryBuilder("test-scoped-notes.note", context=visitor).filter(archived=True).count() == 0
    assert QueryBuilder.from_params("test-scoped-notes.note", {"archived": "true"}, context=visitor).count() == 0
    assert QueryBuilder("test-scoped-notes.note", context=admin).count() == 2
    domain = ScopedNoteDomain(visitor)
    shut = Note.objects.get(title="shut")
    assert list(domain.statemgr.find("note")) == [Note.objects.get(title="open")]
    from django_fluvius import AggregateNotFound

    with pytest.raises(AggregateNotFound):
        domain.statemgr.fetch("note", shut.pk)
    assert ScopedNoteDomain(admin).statemgr.fetch("note", shut.pk) == shut
    # The unscoped domain on the same table sees both.
    assert QueryBuilder("test-notes.note").count() == 2


def test_domain_scope_queryset_applies_with_the_default_surface(extra_domains):
    make_notes(["acme:one", "acme:two", "globex:three"])
    acme = DomainContext.create(namespace="test-tenant-notes", tenant="acme")
    assert sorted(n.title for n in QueryBuilder("test-tenant-notes.note", context=acme)) == ["acme:one", "acme:two"]
    assert QueryBuilder("test-tenant-notes.note", context=acme).search("three").count() == 0
    assert QueryBuilder("test-tenant-notes.note").count() == 3  # no tenant in the context


def test_builder_given_a_domain_instance():
    make_notes(["a"])
    domain = NoteDomain()
    assert QueryBuilder("note", domain=domain).count() == 1
    assert QueryBuilder("test-notes.note", domain=domain).count() == 1
    with pytest.raises(UnknownResource):
        QueryBuilder("user", domain=domain)
    assert User.objects.count() == 0


@pytest.mark.parametrize("ordering", [
    ("priority", "-due"), ("-priority", "due"), ("due", "title"), ("-due", "-priority"), ("-archived", "due"),
])
def test_keyset_walks_match_the_full_ordering_with_ties_and_nulls(ordering):
    import random

    rng = random.Random(4)
    make_notes([(f"n{i:02}", rng.choice([0, 1, 2]), rng.random() < 0.3,
                 rng.choice([None, datetime.date(2024, 1, 1), datetime.date(2024, 2, 1)])) for i in range(23)])
    query = QueryBuilder("test-notes.note").order_by(*ordering)
    expected = [n.title for n in query]
    assert [t for p in walk(query, 4) for t in p] == expected
    # Backwards from past the end, page by page.
    page = query.limit(4).page()
    while page.has_next:
        page = query.limit(4).page(page.next_cursor)
    collected = [n.title for n in page]
    while page.has_previous:
        page = query.limit(4).page(page.previous_cursor)
        collected = [n.title for n in page] + collected
    assert collected == expected
