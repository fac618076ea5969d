"""Search: PostgreSQL full-text search over a GIN index, icontains elsewhere, one API."""

import pytest
from django.db import connection

from django_fluvius import QueryBuilder
from django_fluvius.read.search import SearchIndex, apply_search, terms
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.testapp.models import Note

pytestmark = pytest.mark.django_db


def create_users(*pairs):
    domain = UserDomain()
    for name, email in pairs:
        domain.process_command(domain.create_command("create-user", {"name": name, "email": email}))


def test_terms_keep_words_only():
    assert terms("  John  O'Brien & !x | y:* ") == ["john", "o", "brien", "x", "y"]
    assert terms("a a A") == ["a"]
    assert terms("!!! ---") == []
    assert len(terms(" ".join(f"w{i}" for i in range(40)))) == 16


def test_same_results_on_every_backend():
    create_users(("John Smith", "john@example.com"), ("Johanna Jones", "jj@example.org"),
                 ("Peter Pan", "peter@neverland.io"))
    names = lambda text: sorted(u.name for u in QueryBuilder("user").search(text))  # noqa: E731
    assert names("joh") == ["Johanna Jones", "John Smith"]  # prefix of a word
    assert names("john") == ["John Smith"]
    assert names("JOHN smith") == ["John Smith"]  # every word, any case
    assert names("pet") == ["Peter Pan"]
    assert names("jj") == ["Johanna Jones"]  # the email is searched too
    assert names("zzz") == []
    assert names("john & !smith | (") == ["John Smith"]  # operators are not syntax
    assert names("?!") == sorted(u.name for u in User.objects.all())


@pytest.mark.postgres
def test_postgres_uses_full_text_search_and_the_gin_index():
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'app_user_search'")
        (definition,) = cursor.fetchone()
    assert "USING gin" in definition and "to_tsvector" in definition
    create_users(*((f"User {i}", f"user{i}@example.com") for i in range(50)))
    sql = str(QueryBuilder("user").search("user 7").queryset.query)
    assert "to_tsvector" in sql and "@@" in sql
    query = QueryBuilder("user").search("user 7").queryset
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = query.explain()
    assert "app_user_search" in plan, plan


@pytest.mark.postgres
def test_postgres_search_matches_words_not_substrings():
    create_users(("Carla", "carla@example.com"), ("Oscar", "oscar@example.com"))
    # icontains would find "car" inside "Oscar"; full-text search matches word prefixes.
    assert [u.name for u in QueryBuilder("user").search("car")] == ["Carla"]


def test_sqlite_falls_back_to_icontains_on_each_field():
    if connection.vendor == "postgresql":
        pytest.skip("the fallback runs on the other backends")
    create_users(("Carla", "carla@example.com"), ("Oscar", "oscar@example.com"))
    assert sorted(u.name for u in QueryBuilder("user").search("car")) == ["Carla", "Oscar"]
    sql = str(apply_search(User.objects.all(), ["name", "email"], "car").query)
    assert "LIKE" in sql and "to_tsvector" not in sql


def test_search_on_a_default_surface_uses_the_text_fields():
    Note.objects.create(id="00000000-0000-0000-0000-000000000001", title="Groceries", body="milk and eggs")
    Note.objects.create(id="00000000-0000-0000-0000-000000000002", title="Work", body="ship the release")
    assert [n.title for n in QueryBuilder("test-notes.note").search("milk")] == ["Groceries"]
    assert [n.title for n in QueryBuilder("test-notes.note").search("work")] == ["Work"]


@pytest.mark.django_db(transaction=True)
def test_search_index_migrates_on_every_backend():
    index = SearchIndex(fields=["title", "body"], name="testapp_note_tmp_search")
    with connection.schema_editor() as editor:
        editor.add_index(Note, index)
    with connection.cursor() as cursor:
        names = [i for i in connection.introspection.get_constraints(cursor, "testapp_note")]
    assert ("testapp_note_tmp_search" in names) == (connection.vendor == "postgresql")
    with connection.schema_editor() as editor:
        editor.remove_index(Note, index)
    with connection.cursor() as cursor:
        assert "testapp_note_tmp_search" not in connection.introspection.get_constraints(cursor, "testapp_note")
    assert index.deconstruct() == ("django_fluvius.read.search.SearchIndex", (),
                                   {"fields": ["title", "body"], "name": "testapp_note_tmp_search",
                                    "config": "simple"})
    assert index.clone() == index


@pytest.mark.django_db(transaction=True)
def test_altering_a_searched_column_keeps_migrations_working():
    # On SQLite this remakes the table (indexes included); on PostgreSQL the GIN index follows.
    from django.db import models

    old = User._meta.get_field("name")
    new = models.CharField(max_length=300)
    new.set_attributes_from_name("name")
    new.model = User
    with connection.schema_editor() as editor:
        editor.alter_field(User, old, new)
    try:
        create_users(("Longer Name", "l@example.com"))
        assert [u.name for u in QueryBuilder("user").search("longer")] == ["Longer Name"]
    finally:
        with connection.schema_editor() as editor:
            editor.alter_field(User, new, old)
