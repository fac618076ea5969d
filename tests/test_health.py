"""The health (liveness) and readiness endpoints of django_fluvius.health."""

import time

import pytest
from django.db import connections
from django.test import override_settings

from django_fluvius.delivery.projections import async_projections
from django_fluvius.models import Checkpoint, DeadLetter, Event
from tests.dispatch_handlers import NoteActivityProjection
from tests.testapp.domain import NoteDomain

from .dispatch_support import fluvius

pytestmark = [pytest.mark.urls("example_project.urls"), pytest.mark.django_db]
# The stand-in replica is a second connection to the test database: on SQLite it waits
# for the test's open transaction, so the tests that read it commit as they go.
with_replica = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


def test_liveness_answers_without_touching_the_database(django_assert_num_queries):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)  # as a real client: a POST meets the CSRF middleware
    with django_assert_num_queries(0):
        response = client.get("/health/")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"
    for method in (client.post, client.put, client.delete):
        refused = method("/health/ready/")
        assert refused.status_code == 405 and refused.json()["code"] == "method_not_allowed"
        assert refused["Allow"] == "GET, HEAD"
    assert client.head("/health/").status_code == 200


@with_replica
def test_ready_when_the_databases_answer_and_nothing_waits(client):
    with override_settings(FLUVIUS=fluvius(READ_DATABASE="replica")):
        response = client.get("/health/ready/")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"status": "ok", "databases": {"default": "ok", "replica": "ok"}}
    delivery = body["checks"]["delivery"]
    assert (delivery["status"], delivery["lag_seconds"], delivery["max_lag_seconds"]) == ("ok", 0.0, 60.0)
    assert delivery["dead_letters"] == 0
    welcome = delivery["subscriptions"]["example_project.users.handlers.send_welcome_email"]
    assert welcome == {"kind": "handler", "behind": False, "oldest_seconds": 0.0, "pending": 0}


def test_a_handler_subscription_left_behind_fails_readiness_past_the_threshold(client):
    """What a dead relay, broker or worker leaves: events a handler has not settled."""
    name = "example_project.users.handlers.send_welcome_email"
    from example_project.users.domain import UserDomain

    domain = UserDomain()
    with override_settings(FLUVIUS=fluvius(DISPATCH=None)):  # nothing delivers them
        user = domain.process_command(domain.create_command("create-user", {"name": "L", "email": "l@x.io"}))
    event = Event.objects.get(aggregate_id=user.aggregate_id)
    Checkpoint.objects.update_or_create(name=name, defaults={
        "kind": "handler", "txid": event.txid or 0, "position": event.position - 1,
        "sent_txid": event.txid or 0, "sent_position": event.position - 1})
    time.sleep(0.3)
    with override_settings(FLUVIUS=fluvius(HEALTH_MAX_DELIVERY_LAG=0.2)):
        response = client.get("/health/ready/")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable" and body["checks"]["database"]["status"] == "ok"
    delivery = body["checks"]["delivery"]
    assert delivery["status"] == "failing" and delivery["subscriptions"][name]["behind"] is True
    assert delivery["subscriptions"][name]["oldest_seconds"] >= 0.3 and delivery["lag_seconds"] >= 0.3
    assert client.get("/health/ready/").status_code == 200, "within the default 60 s"

    # A load balancer asks only whether this process can serve: it can.
    assert client.get("/health/ready/?check=database").status_code == 200
    with override_settings(FLUVIUS=fluvius(HEALTH_MAX_DELIVERY_LAG=None)):
        assert client.get("/health/ready/").status_code == 200
    Checkpoint.objects.filter(name=name).update(txid=event.txid or 0, position=event.position)  # settled
    DeadLetter.objects.create(handler="tests.record", position=1, attempts=3)
    response = client.get("/health/ready/")
    assert response.status_code == 200 and response.json()["checks"]["delivery"]["dead_letters"] == 1


def test_an_async_projection_behind_fails_readiness_until_it_catches_up(client):
    async_projections.register(NoteActivityProjection)
    try:
        with override_settings(FLUVIUS=fluvius(DISPATCH=None, HEALTH_MAX_DELIVERY_LAG=0.2)):
            domain = NoteDomain()
            domain.process_command(domain.create_command("create-note", {"title": "behind"}))
            time.sleep(0.3)  # no worker catches the projection up meanwhile
            delivery = client.get("/health/ready/").json()["checks"]["delivery"]
            assert delivery["status"] == "failing" and delivery["lag_seconds"] >= 0.3
            assert delivery["subscriptions"][NoteActivityProjection.name]["behind"] is True
            for cls in async_projections:
                cls().catch_up()
            response = client.get("/health/ready/")
            assert response.status_code == 200, response.json()
            assert response.json()["checks"]["delivery"]["subscriptions"][NoteActivityProjection.name] == {
                "kind": "projection", "behind": False, "oldest_seconds": 0.0}
    finally:
        async_projections.unregister(NoteActivityProjection.name)


@with_replica
def test_an_unreachable_database_fails_readiness_without_telling_its_secrets(client, monkeypatch):
    replica = connections["replica"]
    broken = dict(replica.settings_dict)
    if replica.vendor == "sqlite":
        broken["NAME"] = "/nonexistent-fluvius-dir/replica.sqlite3"
    else:
        broken["NAME"] = "fluvius_no_such_database"
    replica.close()
    monkeypatch.setattr(replica, "settings_dict", broken)
    try:
        with override_settings(FLUVIUS=fluvius(READ_DATABASE="replica")):
            response = client.get("/health/ready/?check=database")
    finally:
        replica.close()
    assert response.status_code == 503
    databases = response.json()["checks"]["database"]["databases"]
    assert databases["default"] == "ok" and databases["replica"] == "failing: OperationalError"
    assert "nonexistent" not in response.content.decode() and "no_such" not in response.content.decode()


def test_an_unknown_check_is_a_400_naming_it(client):
    response = client.get("/health/ready/?check=database&check=disk")
    assert response.status_code == 400
    assert response.json()["code"] == "unknown_check" and "disk" in response.json()["message"]


def test_the_threshold_is_checked(settings):
    from django_fluvius.checks import check_health_settings

    for bad in (0, -1, "60", True):
        with override_settings(FLUVIUS=fluvius(HEALTH_MAX_DELIVERY_LAG=bad)):
            assert [e.id for e in check_health_settings()] == ["fluvius.E091"], bad
    with override_settings(FLUVIUS=fluvius(HEALTH_MAX_DELIVERY_LAG=None)):
        assert check_health_settings() == []
