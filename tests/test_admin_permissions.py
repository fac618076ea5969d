"""Each part of the event browser is seen only by staff holding the matching permission."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.test import RequestFactory
from django.urls import reverse

from django_fluvius.admin.aggregates import ACTION_PREFIX
from django_fluvius.models import CommandLog, Event
from example_project.users.admin import UserAdmin
from example_project.users.models import User
from tests.admin_support import make_staff, user_history

pytestmark = pytest.mark.django_db


@pytest.fixture
def user_id():
    return user_history()


def event_urls(user_id):
    event = Event.objects.filter(aggregate_id=user_id).first()
    return [
        reverse("admin:django_fluvius_event_changelist"),
        reverse("admin:django_fluvius_event_change", args=[event.pk]),
        reverse("admin:django_fluvius_event_timeline", args=[user_id]),
        reverse("admin:django_fluvius_event_diff", args=[user_id]) + "?from=1&to=2",
        reverse("admin:django_fluvius_event_json", args=[event.pk]),
    ]


def command_log_urls():
    return [reverse("admin:django_fluvius_commandlog_changelist"),
            reverse("admin:django_fluvius_commandlog_change", args=[CommandLog.objects.first().pk])]


def user_command_urls(user_id):
    return [reverse("admin:app_user_user_command", args=["create-user"]),
            reverse("admin:app_user_user_object_command", args=[user_id, "rename-user"])]


def test_anonymous_and_non_staff_users_are_sent_to_log_in(client, user_id):
    urls = event_urls(user_id) + command_log_urls() + user_command_urls(user_id)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_user("visitor", password="x"))
    for url in urls:
        assert "/admin/login/" in client.get(url)["Location"], url


def test_staff_without_permissions_sees_nothing(client, user_id):
    client.force_login(make_staff("nobody"))
    for url in event_urls(user_id) + command_log_urls() + user_command_urls(user_id):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("admin:app_user_user_command", args=["create-user"]),
                       {"name": "x", "email": "x@example.com"}).status_code == 403
    assert User.objects.count() == 1
    index = client.get("/admin/").content.decode()
    assert "/admin/django_fluvius/event/" not in index and "/admin/django_fluvius/commandlog/" not in index


def test_view_event_opens_the_event_pages_only(client, user_id):
    client.force_login(make_staff("reader", "django_fluvius.view_event"))
    for url in event_urls(user_id):
        assert client.get(url).status_code == 200, url
    for url in command_log_urls():
        assert client.get(url).status_code == 403, url
    index = client.get("/admin/").content.decode()
    assert "/admin/django_fluvius/event/" in index and "/admin/django_fluvius/commandlog/" not in index
    # The timeline does not offer links into the command log to someone who cannot open it.
    timeline = client.get(reverse("admin:django_fluvius_event_timeline", args=[user_id])).content.decode()
    assert "/admin/django_fluvius/commandlog/" not in timeline


def test_view_commandlog_opens_the_command_log_only(client, user_id):
    client.force_login(make_staff("auditor", "django_fluvius.view_commandlog"))
    for url in command_log_urls():
        assert client.get(url).status_code == 200, url
    for url in event_urls(user_id):
        assert client.get(url).status_code == 403, url


def test_change_permission_on_events_grants_no_writes(client, user_id):
    client.force_login(make_staff("writer", "django_fluvius.change_event", "django_fluvius.delete_event",
                                  "django_fluvius.add_event"))
    event = Event.objects.filter(aggregate_id=user_id).first()
    assert client.get(reverse("admin:django_fluvius_event_changelist")).status_code == 200
    assert client.post(reverse("admin:django_fluvius_event_change", args=[event.pk]),
                       {"evt_key": "x"}).status_code == 403
    assert client.post(reverse("admin:django_fluvius_event_delete", args=[event.pk]),
                       {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:django_fluvius_event_add")).status_code == 403


def test_viewing_a_resource_does_not_allow_commands(client, user_id):
    client.force_login(make_staff("viewer", "app_user.view_user"))
    listing = client.get("/admin/app_user/user/")
    assert listing.status_code == 200
    assert reverse("admin:app_user_user_command", args=["create-user"]) not in listing.content.decode()
    assert listing.context.get("action_form") is None or not any(
        name.startswith(ACTION_PREFIX) for name, _ in listing.context["action_form"].fields["action"].choices)
    page = client.get(reverse("admin:app_user_user_change", args=[user_id])).content.decode()
    assert "fluvius-command" not in page and "fluvius-timeline-link" not in page
    for url in user_command_urls(user_id):
        assert client.get(url).status_code == 403, url
    # Posting the action by hand does not run it either.
    client.post("/admin/app_user/user/", {"action": ACTION_PREFIX + "rename-user", "_fluvius_run": "1",
                                          "name": "Hacked", helpers.ACTION_CHECKBOX_NAME: [str(user_id)]})
    assert User.objects.get(pk=user_id).name == "Ada L."


def test_change_permission_runs_commands_on_aggregates_but_does_not_create(client, user_id):
    client.force_login(make_staff("editor", "app_user.change_user"))
    assert client.get(reverse("admin:app_user_user_command", args=["create-user"])).status_code == 403
    url = reverse("admin:app_user_user_object_command", args=[user_id, "rename-user"])
    assert client.post(url, {"name": "Edited"}).status_code == 302
    assert User.objects.get(pk=user_id).name == "Edited"
    page = client.get(reverse("admin:app_user_user_change", args=[user_id])).content.decode()
    assert 'data-command="rename-user"' in page


def test_add_permission_runs_create_commands_only(client, user_id):
    client.force_login(make_staff("creator", "app_user.add_user", "app_user.view_user"))
    listing = client.get("/admin/app_user/user/").content.decode()
    assert 'data-command="create-user"' in listing
    assert client.post(reverse("admin:app_user_user_command", args=["create-user"]),
                       {"name": "New", "email": "new@example.com"}).status_code == 302
    assert User.objects.filter(name="New").exists()
    assert client.get(reverse("admin:app_user_user_object_command",
                              args=[user_id, "rename-user"])).status_code == 403


def test_a_command_can_require_its_own_permission():
    class StrictUserAdmin(UserAdmin):
        command_permissions = {"deactivate-user": "app_user.delete_user"}

    model_admin = StrictUserAdmin(User, admin.AdminSite(name="strict"))
    specs = model_admin.command_specs()
    request = RequestFactory().get("/")
    request.user = make_staff("editor", "app_user.change_user")
    assert model_admin.has_command_permission(request, specs["rename-user"])
    assert not model_admin.has_command_permission(request, specs["deactivate-user"])
    request.user = make_staff("remover", "app_user.change_user", "app_user.delete_user")
    assert model_admin.has_command_permission(request, specs["deactivate-user"])
