"""System checks fluvius.E001-E005 and loading FLUVIUS['DOMAINS']."""

import pytest
from django.core import checks
from django.test import override_settings

from django_fluvius import Aggregate, Domain, action
from django_fluvius.loading import load_domains, load_problems
from django_fluvius.registry import DomainRegistry, domains


class EmptyAggregate(Aggregate):
    @action("made", create=True, resources=["thing"])
    def make(self):
        return {}


class ClashingDomain(Domain):
    __aggregate__ = EmptyAggregate
    __namespace__ = "app-user"  # taken by the example project's UserDomain
    __resources__ = {"thing": "app_user.User"}


class DuplicateKeyAggregate(Aggregate):
    @action("a", name="same", create=True)
    def first(self):
        return {}

    @action("b", name="same")
    def second(self):
        return {}


class DuplicateKeyDomain(Domain):
    __aggregate__ = DuplicateKeyAggregate
    __namespace__ = "dup-keys"


class MissingModelDomain(Domain):
    __aggregate__ = EmptyAggregate
    __namespace__ = "no-model"
    __resources__ = {"other": "app_user.Nope"}


class NoNamespaceDomain(Domain):
    __aggregate__ = EmptyAggregate


def check_ids(domain_paths):
    """Load these domains as FLUVIUS['DOMAINS'] would, run the checks, restore the registry."""
    saved = list(domains)
    try:
        with override_settings(FLUVIUS={"DOMAINS": domain_paths}):
            domains.clear()
            load_domains()
            # Only the domain checks: the handler checks (E04x) look at other things.
            errors = [e for e in checks.run_checks(tags=["fluvius"]) if e.id < "fluvius.E010"]
    finally:
        domains.clear()
        for d in saved:
            domains.register(d)
        load_problems.clear()
    return errors


def test_the_example_project_passes_its_checks():
    assert checks.run_checks(tags=["fluvius"]) == []


def test_bad_dotted_path_is_E001():
    errors = check_ids(["myapp.domain.Missing"])
    assert [e.id for e in errors] == ["fluvius.E001"]
    assert "myapp.domain.Missing" in errors[0].msg


def test_duplicate_namespace_is_E002():
    errors = check_ids(["example_project.users.domain.UserDomain", "tests.test_checks.ClashingDomain"])
    assert [e.id for e in errors] == ["fluvius.E002"]
    assert "app-user" in errors[0].msg


def test_duplicate_command_key_is_E003():
    errors = check_ids(["tests.test_checks.DuplicateKeyDomain"])
    assert "fluvius.E003" in [e.id for e in errors]
    assert "'same'" in next(e.msg for e in errors if e.id == "fluvius.E003")


def test_resource_without_model_is_E004():
    errors = check_ids(["tests.test_checks.MissingModelDomain"])
    ids = [e.id for e in errors]
    assert ids.count("fluvius.E004") == 2  # 'thing' is not mapped; 'other' names no model
    assert any("app_user.Nope" in e.msg for e in errors)


def test_incomplete_domain_is_E005():
    errors = check_ids(["tests.test_checks.NoNamespaceDomain", "tests.test_checks.EmptyAggregate"])
    assert [e.id for e in errors] == ["fluvius.E005", "fluvius.E005"]


def test_registry_refuses_duplicate_namespaces():
    from django.core.exceptions import ImproperlyConfigured

    from example_project.users.domain import UserDomain

    registry = DomainRegistry()
    registry.register(UserDomain)
    registry.register(UserDomain)  # the same class again is harmless
    with pytest.raises(ImproperlyConfigured, match="app-user"):
        registry.register(ClashingDomain)


def test_resource_lookup_by_name_and_namespace():
    from django_fluvius.exceptions import UnknownResource

    assert domains.find_resource("user")[1] == "user"
    assert domains.find_resource("app-order.order")[0].__namespace__ == "app-order"
    with pytest.raises(UnknownResource):
        domains.find_resource("nothing")
    with pytest.raises(UnknownResource):
        domains.find_resource("app-order.user")
