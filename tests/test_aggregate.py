"""Aggregates, @action and @apply, without a database."""

import uuid

import pytest

from django_fluvius import Aggregate, DomainError, action, apply
from django_fluvius.models import Event
from django_fluvius.write.aggregate import awaits_anything, drive, kebab_case
from example_project.users.domain import UserAggregate


def event(evt_key, version, **payload):
    return Event(evt_key=evt_key, version=version, payload=payload)


def test_command_keys_are_kebab_case_of_method_names():
    assert set(UserAggregate.actions()) == {"create-user", "rename-user", "deactivate-user"}
    assert kebab_case("create_user") == "create-user"
    assert kebab_case("placeOrder") == "place-order"


def test_action_spec_records_the_declaration():
    spec = UserAggregate.actions()["create-user"]
    assert spec.evt_key == "user-created"
    assert spec.resources == ("user",)
    assert spec.create is True
    assert UserAggregate.actions()["rename-user"].is_async
    assert not UserAggregate.actions()["deactivate-user"].create


def test_name_overrides_the_command_key_and_evt_key_defaults_to_it():
    class Thing(Aggregate):
        @action(name="do-it")
        def something(self):
            return {}

    spec = Thing.actions()["do-it"]
    assert spec.evt_key == "do-it"
    assert "something" not in Thing.actions()


def test_default_fold_merges_payload_and_apply_overrides_it():
    class Counter(Aggregate):
        @apply("added")
        def _added(self, state, event):
            return {**state, "total": state.get("total", 0) + event.payload["n"]}

    agg = Counter(uuid.uuid4(), "counter")
    agg.fold(event("created", 1, name="c", total=0))
    agg.fold(event("added", 2, n=5))
    agg.fold(event("added", 3, n=2))
    agg.fold(event("renamed", 4, name="d"))
    assert agg.state == {"name": "d", "total": 7}
    assert agg.version == 4


def test_subclass_inherits_and_overrides_actions():
    class Base(Aggregate):
        @action("a-done")
        def do_a(self):
            return {"v": 1}

        @action("b-done")
        def do_b(self):
            return {}

    class Child(Base):
        @action("a-done-better")
        def do_a(self):
            return {"v": 2}

    assert set(Child.actions()) == {"do-a", "do-b"}
    assert Child.actions()["do-a"].evt_key == "a-done-better"
    assert Base.actions()["do-a"].evt_key == "a-done"


def test_duplicate_command_keys_are_recorded_for_the_system_check():
    class Twice(Aggregate):
        @action(name="same")
        def one(self):
            return {}

        @action(name="same")
        def two(self):
            return {}

    assert Twice._action_conflicts == [("same", "one", "two")]


def test_run_returns_payload_for_sync_and_async_actions():
    agg = UserAggregate(uuid.uuid4(), "user", version=1, state={"name": "a", "active": True})
    assert agg.run(UserAggregate.actions()["rename-user"], {"name": "b"}) == {"name": "b"}
    assert agg.run(UserAggregate.actions()["deactivate-user"], {}) == {"active": False}
    agg.state["active"] = False
    with pytest.raises(DomainError, match="already inactive"):
        agg.run(UserAggregate.actions()["deactivate-user"], {})


def test_async_action_that_awaits_runs_through_an_event_loop():
    import asyncio

    class Sleepy(Aggregate):
        @action("slept")
        async def nap(self):
            await asyncio.sleep(0)
            return {"slept": True}

    spec = Sleepy.actions()["nap"]
    assert not spec.never_suspends
    assert Sleepy(uuid.uuid4(), "x").run(spec, {}) == {"slept": True}


def test_await_free_coroutines_are_detected_and_driven():
    async def plain():
        return 42

    async def waits():
        import asyncio

        await asyncio.sleep(0)

    assert not awaits_anything(plain)
    assert awaits_anything(waits)
    assert drive(plain()) == 42


def test_action_must_return_a_dict():
    class Bad(Aggregate):
        @action("bad")
        def bad(self):
            return ["not", "a", "dict"]

    with pytest.raises(TypeError, match="must return a dict"):
        Bad(uuid.uuid4(), "x").run(Bad.actions()["bad"], {})
