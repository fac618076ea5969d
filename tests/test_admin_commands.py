"""The command log page, and resource admins whose rows change only through commands."""

from __future__ import annotations

import decimal
import uuid

import pytest
from django import forms
from django.contrib.admin import helpers
from django.urls import reverse

from django_fluvius.admin.aggregates import ACTION_PREFIX, AggregateAdmin
from django_fluvius.admin.forms import command_form_class
from django_fluvius.exceptions import UnknownCommand
from django_fluvius.models import CommandLog, Event
from example_project.orders.models import Order
from example_project.users.domain import UserDomain
from example_project.users.models import User
from tests.admin_support import make_staff, user_history
from tests.testapp.domain import NoteAggregate

pytestmark = pytest.mark.django_db

USERS = "/admin/app_user/user/"
COMMANDS = "/admin/django_fluvius/commandlog/"


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


@pytest.fixture
def root(client):
    user = make_staff("root", superuser=True)
    client.force_login(user)
    return user


def create_url(key):
    return reverse("admin:app_user_user_command", args=[key])


def object_url(pk, key):
    return reverse("admin:app_user_user_object_command", args=[pk, key])


# -- the command log ----------------------------------------------------------

def test_command_log_shows_who_ran_what_with_outcome_error_and_duration(client, root):
    user_id = user_history(root)
    domain = UserDomain()
    with pytest.raises(Exception, match="already inactive"):
        domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=user_id))
    response = client.get(COMMANDS)
    assert response.status_code == 200
    rows = list(response.context["cl"].result_list)
    assert [(r.command, r.status) for r in rows] == [
        ("deactivate-user", "rejected"), ("deactivate-user", "done"), ("rename-user", "done"),
        ("create-user", "done")]
    html = response.content.decode()
    assert "deactivate-user.user-is-already-inactive: User is already inactive" in html
    assert "root (" in html and " ms</td>" in html

    rejected = client.get(COMMANDS, {"status": "rejected"}).context["cl"].result_list
    assert [r.command for r in rejected] == ["deactivate-user"]
    by_name = client.get(COMMANDS, {"command_name": "rename-user"}).context["cl"].result_list
    assert [r.command for r in by_name] == ["rename-user"]
    by_user = client.get(COMMANDS, {"user": "root"}).context["cl"].result_list
    assert len(by_user) == 3  # the rejected one ran without a user
    assert len(client.get(COMMANDS, {"q": str(user_id)}).context["cl"].result_list) == 4
    bad = client.get(COMMANDS, {"q": "nope"})
    assert bad.status_code == 200 and any("is not an id" in m for m in messages_of(bad))


def test_a_command_log_entry_links_to_the_events_it_produced(client, root):
    user_id = user_history(root)
    entry = CommandLog.objects.get(command="rename-user")
    page = client.get(reverse("admin:django_fluvius_commandlog_change", args=[entry.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    events_url = reverse("admin:django_fluvius_event_changelist") + f"?command={entry.command_id}"
    assert f'href="{events_url}"' in html
    assert "&quot;name&quot;: &quot;Ada L.&quot;" in html  # the payload, pretty
    produced = client.get(events_url).context["cl"].result_list
    assert [(e.evt_key, e.aggregate_id, e.version) for e in produced] == [("user-renamed", user_id, 2)]
    # And back: an event links to its command's log entry.
    event_page = client.get(reverse("admin:django_fluvius_event_change", args=[produced[0].pk]))
    log_url = reverse("admin:django_fluvius_commandlog_changelist") + f"?command={entry.command_id}"
    assert f'href="{log_url}"' in event_page.content.decode()
    assert list(client.get(log_url).context["cl"].result_list) == [entry]


def test_the_command_log_is_read_only(client, root):
    user_history(root)
    entry = CommandLog.objects.first()
    assert client.post(reverse("admin:django_fluvius_commandlog_change", args=[entry.pk]),
                       {"status": "done"}).status_code == 403
    assert client.post(reverse("admin:django_fluvius_commandlog_delete", args=[entry.pk]),
                       {"post": "yes"}).status_code == 403
    assert CommandLog.objects.count() == 3


# -- forms from action signatures ----------------------------------------------

def test_a_form_is_built_from_the_action_signature():
    spec = NoteAggregate.actions()["create-note"]
    form = command_form_class(spec)()
    fields = form.fields
    assert isinstance(fields["title"], forms.CharField) and fields["title"].required
    assert isinstance(fields["body"], forms.CharField) and not fields["body"].required
    assert isinstance(fields["tags"], forms.JSONField) and not fields["tags"].required
    assert isinstance(fields["priority"], forms.IntegerField) and fields["priority"].initial == 0
    assert isinstance(fields["due"], forms.DateField) and not fields["due"].required

    bound = command_form_class(spec)({"title": "T", "body": "", "tags": '["a", "b"]', "priority": "3",
                                      "due": "2030-01-02"})
    assert bound.is_valid(), bound.errors
    import datetime
    assert bound.payload() == {"title": "T", "tags": ["a", "b"], "priority": 3,
                               "due": datetime.date(2030, 1, 2)}


def test_decimal_and_uuid_fields():
    from example_project.orders.domain import OrderAggregate

    add = command_form_class(OrderAggregate.actions()["add-item"])({"sku": "x", "quantity": "2",
                                                                     "price": "1.25"})
    assert add.is_valid() and add.payload()["price"] == decimal.Decimal("1.25")
    assert isinstance(add.fields["price"], forms.DecimalField)
    place = command_form_class(OrderAggregate.actions()["place-order"])()
    assert isinstance(place.fields["customer_id"], forms.UUIDField)
    assert isinstance(place.fields["items"], forms.JSONField)


def test_an_admin_listing_an_unknown_command_says_which_exist():
    class Broken(AggregateAdmin):
        commands = ["rename-user", "fly-away"]

    from django.contrib import admin

    model_admin = Broken(User, admin.site)
    with pytest.raises(UnknownCommand, match="'fly-away'.*known: create-user, deactivate-user, rename-user"):
        model_admin.command_specs()


# -- creating through a command -------------------------------------------------

def test_create_command_button_and_form(client, root):
    listing = client.get(USERS).content.decode()
    assert f'href="{create_url("create-user")}"' in listing
    assert reverse("admin:app_user_user_add") not in listing  # no plain "Add"

    form_page = client.get(create_url("create-user"))
    assert form_page.status_code == 200
    html = form_page.content.decode()
    assert 'name="name"' in html and 'name="email"' in html and "Register a new user." in html

    response = client.post(create_url("create-user"), {"name": "Grace", "email": "grace@example.com"})
    assert response.status_code == 302
    user = User.objects.get()
    assert response["Location"] == reverse("admin:app_user_user_change", args=[user.pk])
    assert (user.name, user.email, user.version) == ("Grace", "grace@example.com", 1)
    event = Event.objects.get(aggregate_id=user.pk)
    # The command ran as the staff user, from the admin.
    assert event.user == str(root.pk)
    assert event.metadata["source"] == "admin" and event.metadata["username"] == "root"
    log = CommandLog.objects.get()
    assert (log.command, log.status, log.user) == ("create-user", "done", str(root.pk))


def test_create_command_refused_by_a_rule_stores_nothing_and_says_why(client, root):
    response = client.post(create_url("create-user"), {"name": "X", "email": "no-at-sign"})
    assert response.status_code == 200
    assert "Invalid email" in response.content.decode()
    assert not Event.objects.exists() and not User.objects.exists()

    missing = client.post(create_url("create-user"), {"name": "X"})
    assert missing.status_code == 200
    assert missing.context["form"].errors["email"] == ["This field is required."]
    assert not Event.objects.exists()


# -- commands on one aggregate ------------------------------------------------

@pytest.fixture
def ada():
    domain = UserDomain()
    return domain.process_command(domain.create_command(
        "create-user", {"name": "Ada", "email": "ada@example.com"})).aggregate_id


def test_change_page_is_read_only_with_command_buttons(client, root, ada):
    page = client.get(reverse("admin:app_user_user_change", args=[ada]))
    html = page.content.decode()
    assert 'name="_save"' not in html and 'name="name"' not in html
    assert f'href="{object_url(ada, "rename-user")}"' in html
    assert f'href="{object_url(ada, "deactivate-user")}"' in html
    assert f'href="{reverse("admin:django_fluvius_event_timeline", args=[ada])}"' in html
    # And the row cannot be edited or deleted directly.
    url = reverse("admin:app_user_user_change", args=[ada])
    assert client.post(url, {"name": "Hacked", "email": "h@x.io", "active": "on"}).status_code == 403
    assert client.post(reverse("admin:app_user_user_delete", args=[ada]), {"post": "yes"}).status_code == 403
    assert User.objects.get(pk=ada).name == "Ada"


def test_rename_through_the_object_command(client, root, ada):
    form = client.get(object_url(ada, "rename-user"))
    assert form.status_code == 200
    assert 'name="_expected_version" value="1"' in form.content.decode()
    response = client.post(object_url(ada, "rename-user"), {"name": "Ada L.", "_expected_version": "1"},
                           follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:app_user_user_change", args=[ada])
    assert any("Rename user: done" in m and "is at version 2" in m for m in messages_of(response))
    user = User.objects.get(pk=ada)
    assert (user.name, user.version) == ("Ada L.", 2)


def test_a_stale_form_is_refused_as_a_concurrent_change(client, root, ada):
    client.post(object_url(ada, "rename-user"), {"name": "First", "_expected_version": "1"})
    stale = client.post(object_url(ada, "rename-user"), {"name": "Second", "_expected_version": "1"})
    assert stale.status_code == 200
    assert "Someone changed it since this page was opened" in stale.content.decode()
    assert User.objects.get(pk=ada).name == "First"
    assert Event.objects.filter(aggregate_id=ada).count() == 2


def test_a_business_rule_refusal_is_shown_on_the_form(client, root, ada):
    client.post(object_url(ada, "deactivate-user"), {})
    again = client.post(object_url(ada, "deactivate-user"), {})
    assert again.status_code == 200
    assert "User is already inactive" in again.content.decode()
    assert Event.objects.filter(aggregate_id=ada).count() == 2


@pytest.mark.parametrize("path, message", [
    (lambda ada: object_url(ada, "fly-away"), "'fly-away' is not a command of this admin page."),
    (lambda ada: object_url(uuid.UUID(int=1), "rename-user"),
     "No user with id '00000000-0000-0000-0000-000000000001'."),
    (lambda ada: object_url("not-a-uuid", "rename-user"), "No user with id 'not-a-uuid'."),
    (lambda ada: create_url("rename-user"), "'rename-user' runs on an existing user."),
    (lambda ada: object_url(ada, "create-user"), "'create-user' creates an aggregate; it does not run on one."),
])
def test_bad_command_addresses_say_what_is_wrong(client, root, ada, path, message):
    response = client.get(path(ada))
    assert response.status_code in (400, 404)
    assert message in response.content.decode().replace("&#x27;", "'")


# -- commands as list actions ---------------------------------------------------

def test_commands_are_list_actions_with_a_payload_form(client, root):
    domain = UserDomain()
    ids = [domain.process_command(domain.create_command(
        "create-user", {"name": n, "email": f"{n}@example.com"})).aggregate_id for n in ("a", "b", "c")]
    listing = client.get(USERS)
    choices = dict(listing.context["action_form"].fields["action"].choices)
    assert ACTION_PREFIX + "rename-user" in choices and ACTION_PREFIX + "deactivate-user" in choices
    assert "delete_selected" not in choices

    chosen = [str(ids[0]), str(ids[2])]
    ask = client.post(USERS, {"action": ACTION_PREFIX + "rename-user", "index": 0,
                              helpers.ACTION_CHECKBOX_NAME: chosen})
    assert ask.status_code == 200  # the payload form, listing the targets
    assert 'name="name"' in ask.content.decode() and len(ask.context["objects"]) == 2

    # "   " passes the form; the action's serializer refuses it, before any command runs.
    bad = client.post(USERS, {"action": ACTION_PREFIX + "rename-user", "_fluvius_run": "1", "name": "   ",
                              helpers.ACTION_CHECKBOX_NAME: chosen})
    assert bad.status_code == 200 and "may not be blank" in bad.content.decode()
    assert set(User.objects.values_list("name", flat=True)) == {"a", "b", "c"}

    done = client.post(USERS, {"action": ACTION_PREFIX + "rename-user", "_fluvius_run": "1",
                               "name": "Renamed", helpers.ACTION_CHECKBOX_NAME: chosen}, follow=True)
    assert "Rename user: done on 2 users." in messages_of(done)
    assert dict(User.objects.values_list("pk", "name")) == {ids[0]: "Renamed", ids[1]: "b", ids[2]: "Renamed"}
    assert CommandLog.objects.filter(command="rename-user", status="done", user=str(root.pk)).count() == 2


def test_a_list_action_reports_each_refusal(client, root):
    domain = UserDomain()
    ids = [domain.process_command(domain.create_command(
        "create-user", {"name": n, "email": f"{n}@example.com"})).aggregate_id for n in ("a", "b")]
    domain.process_command(domain.create_command("deactivate-user", {}, aggregate_id=ids[0]))
    response = client.post(USERS, {"action": ACTION_PREFIX + "deactivate-user", "_fluvius_run": "1",
                                   helpers.ACTION_CHECKBOX_NAME: [str(i) for i in ids]}, follow=True)
    texts = messages_of(response)
    assert "Deactivate user: done on 1 user." in texts
    assert any("User is already inactive" in m for m in texts)
    assert not User.objects.filter(active=True).exists()


def test_order_admin_exposes_every_order_command(client, root):
    page = client.get(reverse("admin:app_order_order_command", args=["place-order"]))
    assert page.status_code == 200
    customer = uuid.uuid4()
    response = client.post(reverse("admin:app_order_order_command", args=["place-order"]), {
        "customer_id": str(customer), "items": '[{"sku": "tea", "quantity": 2, "price": "4.50"}]'})
    assert response.status_code == 302
    order = Order.objects.get()
    assert order.customer_id == customer and order.total == decimal.Decimal("9.00")
    add = client.post(reverse("admin:app_order_order_object_command", args=[order.pk, "add-item"]),
                      {"sku": "cake", "quantity": "1", "price": "3.00", "_expected_version": "1"})
    assert add.status_code == 302
    assert Order.objects.get().total == decimal.Decimal("12.00")
    not_json = client.post(reverse("admin:app_order_order_command", args=["place-order"]),
                           {"customer_id": str(customer), "items": "[{oops"})
    assert not_json.status_code == 200 and "Enter a valid JSON." in not_json.content.decode()
    assert Order.objects.count() == 1


def test_a_resource_admin_without_a_domain_still_shows_its_rows(client, root, rf):
    """A model no registered domain keeps: the page says so instead of failing."""
    from django.contrib import admin
    from django.contrib.auth.models import Group

    site = admin.AdminSite(name="lonely")

    class GroupAdmin(AggregateAdmin):
        commands = ["create-user"]

    model_admin = GroupAdmin(Group, site)
    request = rf.get("/")
    request.user = root
    from django.contrib.messages.storage.fallback import FallbackStorage

    request.session = {}
    request._messages = FallbackStorage(request)
    assert model_admin.allowed_commands(request, create=True) == []
    assert any("No registered domain keeps auth.Group" in str(m) for m in request._messages)
