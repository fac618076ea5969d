"""The declared query surface: defaults from the model, overrides, describe(), system checks."""

import decimal
import uuid

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings

from django_fluvius import Domain
from django_fluvius.exceptions import InvalidQuery
from django_fluvius.read.replicas import check_read_database
from django_fluvius.read.surface import (
    QuerySurface,
    check_query_surfaces,
    describe,
    resolve_field,
    surface_class,
    surface_for,
    surface_problems,
)
from example_project.orders.domain import OrderDomain
from example_project.users.domain import UserDomain, UserQuery
from tests.query_domains import ScopedNoteDomain, ScopedNoteQuery
from tests.testapp.domain import NoteAggregate, NoteDomain
from tests.testapp.models import Note


def test_default_surface_is_derived_from_the_model():
    surface = surface_for(NoteDomain, "note")
    ops = {name: spec.operators for name, spec in surface.filterable.items()}
    assert ops["title"] == ("exact", "iexact", "icontains", "startswith", "in")
    assert ops["priority"] == ("exact", "gt", "gte", "lt", "lte", "range", "in")
    assert ops["created_at"] == ops["priority"]
    assert ops["archived"] == ("exact",)
    assert ops["id"] == ("exact", "in")
    assert ops["due"] == ("exact", "gt", "gte", "lt", "lte", "range", "in", "isnull")  # nullable
    assert "tags" not in ops  # JSON: nothing to filter with by default
    assert "tags" not in surface.sortable and "title" in surface.sortable
    assert surface.searchable == ("title", "body")
    assert surface.default_order == [("created_at", True)]  # no Meta.ordering: -created_at
    assert surface_for(NoteDomain, "note") is surface  # cached per (domain, resource)


def test_choices_fields_are_filtered_but_not_searched_and_decimals_parse():
    surface = surface_for(OrderDomain, "order")
    assert surface.searchable == ()  # status has choices: a code, not text
    assert surface.default_order == [("created_at", True)]  # Order.Meta.ordering
    q = surface.parse_params({"total__gte": "10.50", "status__in": "paid,shipped"}).filters
    assert q[0].children == [("total__gte", decimal.Decimal("10.50"))]
    assert q[1].children == [("status__in", ["paid", "shipped"])]
    with pytest.raises(InvalidQuery) as info:
        surface.parse_params({"total": "NaN"})
    assert "not a finite number" in info.value.errors["total"][0]
    with pytest.raises(InvalidQuery) as info:
        surface.parse_params({"total__lt": "1e999999"})  # numeric(12, 2) would overflow
    assert "out of range (at most 10 digits" in info.value.errors["total__lt"][0]
    assert surface.parse_params({"total__lt": "9999999999.99"}).filters
    with pytest.raises(InvalidQuery) as info:
        surface.parse_params({"search": "x"})
    assert "no searchable fields" in info.value.errors["search"][0]


def test_declared_surface_of_the_example_users():
    surface = surface_for(UserDomain, "user")
    assert isinstance(surface, UserQuery)
    assert surface.searchable == ("name", "email")
    assert set(surface.sortable) == {"name", "email", "created_at", "updated_at"}
    assert surface.filterable["active"].operators == ("exact",)


def test_filters_given_as_a_list_get_the_default_operators():
    class Titles(QuerySurface):
        filters = ["title", "priority"]
        ordering = ["title"]
        search = []

    surface = Titles(Note, "note")
    assert set(surface.filterable) == {"title", "priority"}
    assert surface.filterable["priority"].operators[-1] == "in"
    assert list(surface.sortable) == ["title"] and surface.searchable == ()
    assert surface.problems == []


def test_relations_are_followed_forwards():
    class PermissionQuery(QuerySurface):
        filters = {"codename": ["exact"], "content_type__app_label": ["exact", "in"], "content_type": "__default__"}
        ordering = ["content_type__model", "codename"]

    assert resolve_field(Permission, "content_type__app_label").name == "app_label"
    with pytest.raises(FieldDoesNotExist):
        resolve_field(Permission, "group__name")  # a reverse relation
    surface = PermissionQuery(Permission)
    assert surface.problems == []
    assert surface.filterable["content_type"].kind == "relation"
    (q,) = surface.parse_params({"content_type__app_label__in": "auth"}).filters
    assert q.children == [("content_type__app_label__in", ["auth"])]
    with pytest.raises(InvalidQuery) as info:
        surface.parse_params({"content_type": "abc"})
    assert "not a valid integer" in info.value.errors["content_type"][0]


@pytest.mark.django_db
def test_relation_filters_run():
    class PermissionQuery(QuerySurface):
        filters = {"content_type__app_label": ["exact"]}

    surface = PermissionQuery(Permission)
    (q,) = surface.parse_params({"content_type__app_label": "auth"}).filters
    assert Permission.objects.filter(q).exists()
    assert not Permission.objects.filter(q).exclude(content_type__app_label="auth").exists()


def test_describe_for_meta():
    described = describe(ScopedNoteDomain, "note")
    assert described["filters"]["title"] == {"type": "text", "operators": ["exact", "icontains"],
                                             "sortable": True, "nullable": False}
    assert described["filters"]["archived"]["sortable"] is False
    assert described["ordering"] == ["created_at", "due", "priority", "title"]
    assert described["search"]["fields"] == ["title"]
    assert described["pagination"]["max_limit"] == 20


def test_surface_class_lookup():
    assert surface_class(NoteDomain, "note") is QuerySurface
    assert surface_class(ScopedNoteDomain, "note") is ScopedNoteQuery

    class ByPath(Domain):
        __aggregate__ = NoteAggregate
        __namespace__ = "by-path"
        __resources__ = {"note": "testapp.Note"}
        __query__ = {"note": "tests.query_domains.ScopedNoteQuery"}

    assert surface_class(ByPath, "note") is ScopedNoteQuery

    class NotASurface(ByPath):
        __query__ = {"note": dict}

    with pytest.raises(ImproperlyConfigured):
        surface_class(NotASurface, "note")


def test_system_checks_report_bad_surfaces():
    class Broken(QuerySurface):
        filters = {"title": ["exact", "gt", "regex"], "colour": ["exact"], "archived": ["icontains"]}
        ordering = ["tags", "nope"]
        search = ["priority", "body"]
        exclude = ["body"]
        default_ordering = ["-missing"]
        default_limit = 500
        max_limit = 100

    class BrokenDomain(Domain):
        __aggregate__ = NoteAggregate
        __namespace__ = "broken-query"
        __resources__ = {"note": "testapp.Note"}
        __query__ = {"note": Broken, "ghost": Broken}

    class BadPath(BrokenDomain):
        __query__ = {"note": "tests.nowhere.Query"}

    problems = surface_problems(BrokenDomain)
    ids = sorted(check_id for check_id, _, _ in problems)
    messages = " | ".join(message for _, message, _ in problems)
    assert ids.count("fluvius.E030") == 1 and "'ghost'" in messages
    assert "'colour'" in messages and "'nope'" in messages and "'-missing'" not in messages
    assert ids.count("fluvius.E033") == 2  # regex on text, icontains on a boolean
    assert "E032" in " ".join(ids) and "tags" in messages  # a JSON field cannot be sorted
    assert ids.count("fluvius.E034") == 2  # priority is no text; body is excluded
    assert ids.count("fluvius.E035") == 1
    assert [i for i, _, _ in surface_problems(BadPath)] == ["fluvius.E031"]
    # Bad operators are dropped, not enforced halfway: the rest of the surface stands.
    assert Broken(Note).filterable["title"].operators == ("exact", "gt")


def test_registered_domains_pass_the_checks():
    assert check_query_surfaces() == []
    call_command("check", "--fail-level", "ERROR")


def test_read_database_check():
    assert check_read_database() == []
    with override_settings(FLUVIUS={"READ_DATABASE": "nope"}):
        (error,) = check_read_database()
    assert error.id == "fluvius.E036" and "'nope'" in error.msg
    with override_settings(FLUVIUS={"READ_DATABASE": "replica"}):
        assert check_read_database() == []


def test_uuid_and_boolean_values():
    surface = surface_for(NoteDomain, "note")
    pk = uuid.uuid4()
    (q,) = surface.parse_params({"id": str(pk)}).filters
    assert q.children == [("id", pk)]
    for raw, value in (("true", True), ("1", True), ("No", False), ("off", False)):
        (q,) = surface.parse_params({"archived": raw}).filters
        assert q.children == [("archived", value)]
