"""Read replicas: FLUVIUS['READ_DATABASE'] sends the read side to another alias.

The test settings define ``replica`` as a test mirror of ``default`` (the same
database through a second connection), so what matters here is which connection
each query runs on.
"""

import pytest
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext

from django_fluvius import QueryBuilder
from django_fluvius.read.replicas import ReadReplicaRouter, read_alias
from example_project.users.domain import UserDomain
from example_project.users.models import User

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "replica"]),
              pytest.mark.urls("tests.query_urls")]


@pytest.fixture
def replica(settings):
    settings.FLUVIUS = {**settings.FLUVIUS, "READ_DATABASE": "replica"}
    return settings


def user_queries(captured):
    return [q["sql"] for q in captured if "app_user_user" in q["sql"]]


class Both:
    """Capture the queries of both connections."""

    def __enter__(self):
        self.default = CaptureQueriesContext(connections["default"]).__enter__()
        self.replica = CaptureQueriesContext(connections["replica"]).__enter__()
        return self

    def __exit__(self, *exc):
        self.replica.__exit__(*exc)
        self.default.__exit__(*exc)


def create_user(name):
    domain = UserDomain()
    return domain.process_command(domain.create_command("create-user", {"name": name, "email": f"{name}@x.io"}))


def test_reads_go_to_the_replica_and_writes_do_not(replica, client):
    with Both() as written:
        created = create_user("ann")
    assert user_queries(written.default) and not written.replica.captured_queries

    with Both() as read:
        assert [u.name for u in QueryBuilder("user").execute()] == ["ann"]
        assert UserDomain().statemgr.fetch("user", created.aggregate_id).name == "ann"
        assert User.objects.filter(name="ann").count() == 1  # plain ORM, through the router
        response = client.get("/api/app-user/user/", {"search": "ann"})
        assert [r["name"] for r in response.json()["results"]] == ["ann"]
    assert len(user_queries(read.replica)) >= 4
    assert user_queries(read.default) == []


def test_inside_a_transaction_reads_stay_on_the_write_database(replica):
    create_user("bob")
    with Both() as read:
        with transaction.atomic():
            assert read_alias() == "default"
            create_user("cid")  # not committed yet: only the write connection sees it
            assert sorted(u.name for u in QueryBuilder("user")) == ["bob", "cid"]
            assert User.objects.count() == 2
    assert user_queries(read.replica) == []
    assert read_alias() == "replica"


def test_without_a_read_database_everything_stays_on_default(settings):
    assert settings.FLUVIUS.get("READ_DATABASE") is None
    create_user("dee")
    with Both() as read:
        assert QueryBuilder("user").count() == 1
        assert User.objects.count() == 1
    assert user_queries(read.default) and not read.replica.captured_queries
    router = ReadReplicaRouter()
    assert router.db_for_read(User) is None and router.db_for_write(User) is None


def test_router_only_routes_projection_models(replica):
    from django.contrib.auth.models import Group

    router = ReadReplicaRouter()
    assert router.db_for_read(User) == "replica"
    assert router.db_for_write(User) == "default"
    assert router.db_for_read(Group) is None
    a, b = User(name="a"), User(name="b")
    a._state.db, b._state.db = "default", "replica"
    assert router.allow_relation(a, b) is True
    assert router.allow_migrate("replica", "app_user") is None
