"""Dead letters and subscriptions (projections and handlers) in the admin: what is behind or
failed, and the actions that retry, discard or rebuild."""

from __future__ import annotations

import time

import pytest
from django.contrib import admin as django_admin
from django.contrib.admin import helpers
from django.urls import reverse

from django_fluvius.delivery.handlers import event_handler, handlers
from django_fluvius.models import Checkpoint, DeadLetter, Event, HandlerReceipt, RebuildRun
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.admin_support import make_staff

DEAD = "/admin/django_fluvius/deadletter/"
PROJECTIONS = "/admin/django_fluvius/checkpoint/"
RECORDER = "tests.admin.recorder"


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def root(client, db):
    user = make_staff("root", superuser=True)
    client.force_login(user)
    return user


@pytest.fixture
def users(db):
    """Two users created before any handler below exists: their events reached nobody."""
    domain = UserDomain()
    ids = [domain.process_command(domain.create_command(
        "create-user", {"name": name, "email": f"{name}@example.com"})).aggregate_id for name in ("a", "b")]
    return ids


@pytest.fixture
def recorder():
    seen = []

    @event_handler("user-created", name=RECORDER)
    def record(event):
        seen.append((event.aggregate_id, event.version))

    yield seen
    handlers.unregister(RECORDER)


def act(client, url, action, objects, confirmed=True):
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects]}
    if confirmed:
        data["post"] = "yes"
    else:
        data["index"] = 0
    return client.post(url, data, follow=confirmed)


# -- handlers on the projections page ---------------------------------------------

def test_the_lag_page_shows_handlers_with_checkpoint_lag_pending_and_dead_letters(client, root, users,
                                                                                  recorder):
    events = list(Event.objects.filter(aggregate_id__in=users).order_by("position"))
    Checkpoint.objects.create(name=RECORDER, kind="handler", position=events[0].position - 1,
                              sent_position=events[-1].position)
    HandlerReceipt.objects.create(handler=RECORDER, position=events[1].position, status="pending")
    dead(events[0])
    Checkpoint.objects.create(name="tests.admin.retired-handler", kind="handler", position=1)
    rows = rows_of(client.get(PROJECTIONS))
    row = rows[RECORDER]
    assert (row.kind, row.position, row.lag) == ("handler", events[0].position - 1, 2)
    assert "user-created" in row.detail and "1 pending" in row.detail and "1 dead letters" in row.detail
    assert row.failures == 1 and row.last_error == "boom"
    gone = rows["tests.admin.retired-handler"]
    assert gone.kind == "orphan" and "nothing is delivered" in gone.detail


# -- dead letters ---------------------------------------------------------------

def dead(event, handler=RECORDER):
    return DeadLetter.objects.create(
        kind=DeadLetter.Kind.HANDLER, handler=handler, position=event.position, namespace=event.namespace,
        evt_key=event.evt_key, aggregate_id=event.aggregate_id, version=event.version, attempts=4,
        error_type="ValueError", error_message="boom", traceback="Traceback (most recent call last):\n  ...")


def test_dead_letters_show_the_error_and_traceback(client, root, users):
    letter = dead(Event.objects.get(aggregate_id=users[0]))
    listing = client.get(DEAD)
    assert listing.status_code == 200 and "ValueError: boom" in listing.content.decode()
    page = client.get(reverse("admin:django_fluvius_deadletter_change", args=[letter.pk])).content.decode()
    assert "Traceback (most recent call last):" in page
    assert reverse("admin:django_fluvius_event_change", args=[letter.position]) in page


def test_redrive_delivers_again_and_removes_the_letter(client, root, users, recorder):
    letters = [dead(e) for e in Event.objects.filter(aggregate_id__in=users)]
    ask = act(client, DEAD, "redrive", letters, confirmed=False)
    assert ask.status_code == 200 and "Yes, re-drive them" in ask.content.decode()
    done = act(client, DEAD, "redrive", letters)
    assert any("Re-drove 2 dead letters." in m for m in messages_of(done))
    assert sorted(recorder) == sorted((u, 1) for u in users)
    assert not DeadLetter.objects.exists()
    assert HandlerReceipt.objects.filter(handler=RECORDER, status="done").count() == 2


def test_redrive_of_a_handler_that_is_gone_says_so_and_keeps_the_letter(client, root, users):
    letter = dead(Event.objects.get(aggregate_id=users[0]), handler="old.module.gone")
    response = act(client, DEAD, "redrive", [letter])
    assert any("No event handler named 'old.module.gone' is registered." in m for m in messages_of(response))
    assert DeadLetter.objects.filter(pk=letter.pk).exists()


def test_discard_gives_up_for_good(client, root, users, recorder):
    letter = dead(Event.objects.get(aggregate_id=users[0]))
    done = act(client, DEAD, "discard", [letter])
    assert "Discarded 1 dead letter." in messages_of(done), "one letter, in the singular"
    assert not DeadLetter.objects.exists() and recorder == []
    assert HandlerReceipt.objects.get(handler=RECORDER, position=letter.position).status == "discarded"


def test_dead_letter_actions_follow_permissions(client, users, recorder):
    letter = dead(Event.objects.get(aggregate_id=users[0]))
    client.force_login(make_staff("watcher", "django_fluvius.view_deadletter"))
    assert client.get(DEAD).context["action_form"] is None
    act(client, DEAD, "redrive", [letter])
    act(client, DEAD, "discard", [letter])
    assert DeadLetter.objects.count() == 1 and recorder == []
    client.force_login(make_staff("nobody"))
    assert client.get(DEAD).status_code == 403


# -- projections ------------------------------------------------------------------

def rows_of(response):
    return {row.name: row for row, _url in response.context["rows"]}


@pytest.fixture
def sync_rebuilds(monkeypatch):
    monkeypatch.setattr(django_admin.site._registry[Checkpoint], "rebuild_in_background", False)


def test_projection_page_lists_inline_projections_and_orphan_checkpoints(client, root, users):
    Checkpoint.objects.create(name="retired.projection", position=1, failures=2, last_error="KeyError: 'x'")
    response = client.get(PROJECTIONS)
    assert response.status_code == 200
    rows = rows_of(response)
    head = Event.objects.order_by("-position").first().position
    user = rows["app-user.user"]
    assert (user.kind, user.detail, user.head, user.lag) == ("inline", "app_user.User", head, 0)
    assert {"app-order.order", "test-notes.note", "test-notes.folder"} <= set(rows)
    orphan = rows["retired.projection"]
    assert (orphan.kind, orphan.position, orphan.failures) == ("orphan", 1, 2)
    html = response.content.decode()
    assert reverse("admin:django_fluvius_checkpoint_rebuild", args=["app-user.user"]) in html
    assert reverse("admin:django_fluvius_checkpoint_rebuild", args=["retired.projection"]) not in html


def test_rebuild_an_inline_projection_after_confirming(client, root, users, sync_rebuilds):
    User.objects.filter(pk=users[0]).update(name="drifted")
    url = reverse("admin:django_fluvius_checkpoint_rebuild", args=["app-user.user"])
    ask = client.get(url)
    assert ask.status_code == 200 and "Yes, rebuild it" in ask.content.decode()
    assert User.objects.get(pk=users[0]).name == "drifted"
    done = client.post(url, {"post": "yes"}, follow=True)
    assert any("app-user.user was rebuilt." in m for m in messages_of(done))
    assert User.objects.get(pk=users[0]).name == "a"
    run = RebuildRun.objects.get(name="app-user.user")
    assert run.status == "done" and run.events_done == 2
    assert rows_of(done)["app-user.user"].run.status == "done"


@pytest.mark.django_db(transaction=True)
def test_rebuild_runs_in_the_background_and_shows_progress(client, users):
    client.force_login(make_staff("root", superuser=True))
    User.objects.filter(pk=users[1]).update(name="drifted")
    response = client.post(reverse("admin:django_fluvius_checkpoint_rebuild", args=["app-user.user"]),
                           {"post": "yes"}, follow=True)
    assert any("started" in m for m in messages_of(response))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = RebuildRun.objects.filter(name="app-user.user").first()
        if run is not None and run.status != "running":
            break
        time.sleep(0.1)
    assert run.status == "done", run.error
    assert User.objects.get(pk=users[1]).name == "b"
    assert rows_of(client.get(PROJECTIONS))["app-user.user"].run.status == "done"


def test_a_running_rebuild_is_not_started_twice(client, root, users, sync_rebuilds):
    from django.utils import timezone

    RebuildRun.objects.create(name="app-user.user", status="running", updated=timezone.now())
    User.objects.filter(pk=users[0]).update(name="drifted")
    response = client.post(reverse("admin:django_fluvius_checkpoint_rebuild", args=["app-user.user"]),
                           {"post": "yes"}, follow=True)
    assert any("already running" in m for m in messages_of(response))
    assert User.objects.get(pk=users[0]).name == "drifted"


def test_rebuild_of_an_unknown_projection_is_a_clear_404(client, root):
    response = client.get(reverse("admin:django_fluvius_checkpoint_rebuild", args=["no.such.thing"]))
    assert response.status_code == 404
    assert "Nothing to rebuild is called 'no.such.thing'" in response.content.decode().replace("&#x27;", "'")


def test_projection_page_permissions(client, users):
    client.force_login(make_staff("nobody"))
    assert client.get(PROJECTIONS).status_code == 403
    client.force_login(make_staff("watcher", "django_fluvius.view_checkpoint"))
    page = client.get(PROJECTIONS)
    assert page.status_code == 200 and "fluvius-rebuild" not in page.content.decode()
    url = reverse("admin:django_fluvius_checkpoint_rebuild", args=["app-user.user"])
    assert client.get(url).status_code == 403
    assert client.post(url, {"post": "yes"}).status_code == 403
    client.force_login(make_staff("rebuilder", "django_fluvius.view_checkpoint", "django_fluvius.add_rebuildrun"))
    assert "fluvius-rebuild" in client.get(PROJECTIONS).content.decode()
    assert client.get(url).status_code == 200


@pytest.fixture
def tally(users):
    """An async projection registered after the users were created: two events behind."""
    from django_fluvius.delivery.projections import AsyncProjection, async_projections, on

    seen = []

    class UserTally(AsyncProjection):
        name = "tests.admin.user-tally"
        namespace = "app-user"

        @on("user-created")
        def created(self, event):
            seen.append(event.aggregate_id)

    yield seen
    async_projections.unregister(UserTally.name)


def test_async_projection_shows_checkpoint_head_and_lag_and_rebuilds(client, root, users, tally,
                                                                      sync_rebuilds):
    head = Event.objects.order_by("-position").first().position
    row = rows_of(client.get(PROJECTIONS))["tests.admin.user-tally"]
    assert (row.kind, row.position, row.head, row.lag) == ("async", None, head, 2)
    assert row.detail == "app-user: user-created"

    url = reverse("admin:django_fluvius_checkpoint_rebuild", args=["tests.admin.user-tally"])
    assert "swapped in when they have caught up" in client.get(url).content.decode()
    done = client.post(url, {"post": "yes"}, follow=True)
    assert any("tests.admin.user-tally was rebuilt." in m for m in messages_of(done))
    assert sorted(tally) == sorted(users)
    row = rows_of(done)["tests.admin.user-tally"]
    assert (row.position, row.lag) == (head, 0)
    assert row.run.status == "done" and row.run.events_done == 2
