"""The domain map: read from the registered code, exported by ``fluvius_catalog``, shown in the admin.

The AsyncAPI document is validated against the official AsyncAPI 3.0.0 JSON
Schema (tests/data, from the ``@asyncapi/specs`` package).
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import jsonschema
import pytest
from django.core.management import CommandError, call_command

from django_fluvius.ops.catalog import domain_map, issued_commands

SCHEMA = Path(__file__).parent / "data" / "asyncapi-3.0.0.schema.json"


def catalog(*args: str) -> str:
    out = StringIO()
    call_command("fluvius_catalog", *args, stdout=out)
    return out.getvalue()


def test_the_map_follows_commands_to_events_to_subscribers():
    maps = {m.namespace: m for m in domain_map()}
    users = maps["app-user"]
    assert [c.key for c in users.commands] == ["create-user", "rename-user", "deactivate-user"]
    created = users.event("user-created")
    assert [c.key for c in created.produced_by] == ["create-user"]
    kinds = {s.name: s.kind for s in created.subscribers}
    assert kinds["app-user.user"] == "projection"
    assert kinds["example_project.users.handlers.send_welcome_email"] == "handler"
    # The process manager is found with the command it issues in another domain.
    manager = next(s for s in users.event("user-deactivated").subscribers if s.kind == "process manager")
    assert manager.short_name == "cancel_open_orders_of_deactivated_customer"
    assert manager.issues == [("app-order", "cancel-order")]
    # A handler of another event is not listed under this one.
    assert "example_project.users.handlers.send_welcome_email" not in {
        s.name for s in users.event("user-renamed").subscribers}


def test_issued_commands_needs_a_literal_key_and_a_domain():
    from django_fluvius.delivery.process import issue
    from example_project.orders.domain import OrderDomain

    def manager(event):
        issue(OrderDomain, "ship-order", {}, caused_by=event)
        issue(OrderDomain, event.payload["key"], {}, caused_by=event)  # computed: not seen
        issue(len, "nothing", caused_by=event)                          # not a domain

    assert issued_commands(manager) == [("app-order", "ship-order")]


def test_markdown_lists_each_command_with_its_event_and_subscribers():
    text = catalog("--namespace", "app-user")
    assert "## app-user (UserDomain)" in text and "app-order" not in text.split("|", 1)[0]
    assert ("| **Deactivate user** `deactivate-user` | `user-deactivated` | projection: `user`<br>"
            "process manager: `cancel_open_orders_of_deactivated_customer` → `app-order:cancel-order` |") in text


def test_mermaid_is_a_flowchart_with_the_issued_command_edge():
    text = catalog("--format", "mermaid")
    assert text.startswith("flowchart LR\n")
    assert "  c_app_user_create_user --> e_app_user_user_created\n" in text
    assert ("s_example_project_orders_handlers_cancel_open_orders_of_deactivated_customer "
            "-. issues .-> c_app_order_cancel_order") in text


def test_asyncapi_document_is_valid_asyncapi_3():
    document = json.loads(catalog("--format", "asyncapi"))
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert document["asyncapi"] == "3.0.0"
    message = document["components"]["messages"]["app-order.order-placed"]
    assert message["payload"]["required"] == ["customer_id", "items"]
    assert message["payload"]["properties"]["customer_id"] == {"type": "string", "format": "uuid"}
    assert document["channels"]["app-user"]["messages"]["user-created"] == {
        "$ref": "#/components/messages/app-user.user-created"}
    assert document["operations"]["app-order.place-order"]["action"] == "send"
    # The schema is strict enough to tell: a made-up operation action is refused.
    document["operations"]["app-order.place-order"]["action"] = "publish"
    assert list(validator.iter_errors(document))


def test_unknown_namespace_is_an_error_naming_the_known_ones():
    with pytest.raises(CommandError, match="app-nothing.*known: app-order, app-user"):
        catalog("--namespace", "app-nothing")
