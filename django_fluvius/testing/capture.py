"""Capturing what handlers receive: ``capture_dispatch()`` and the ``fluvius_dispatch`` fixture.

Handlers run inline right after each command and every event handed to them is
recorded — even inside the transaction Django's ``TestCase`` wraps around each
test, where ``on_commit`` callbacks would otherwise never run.
"""


from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import connections
from django.test import override_settings

from django_fluvius.conf import DEFAULTS, fluvius_settings
from django_fluvius.delivery.handlers import HandlerSpec, handlers
from django_fluvius.models import Event
from django_fluvius.testing.scenarios import EventSpec, assert_events
from django_fluvius.write.bus import Command, CommandResult
from django_fluvius.write.cache import aggregate_cache

if TYPE_CHECKING:


    pass

# -- dispatch ------------------------------------------------------------------------------

CAPTURE_HANDLER = "django_fluvius.testing.capture"


class DispatchCapture:
    """Handlers run inline; every event handed to them is recorded in ``events``.

    Inside a Django test's wrapping transaction nothing ever commits, so
    ``transaction.on_commit`` callbacks (which is how events reach handlers)
    would never run. While active, a command-bus middleware runs the callbacks a
    command registered as soon as the command's own transaction is done — the
    moment a real commit would run them. Commands run inside an atomic block of
    your own wait for ``flush()`` (as they would wait for your block's commit).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._override: override_settings | None = None
        # Unique, so captures can nest (a fixture, and a context manager inside the test).
        self.handler_name = f"{CAPTURE_HANDLER}.{id(self):x}"

    # -- reading --------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return [e.evt_key for e in self.events]

    def of(self, evt_key: str) -> list[Event]:
        return [e for e in self.events if e.evt_key == evt_key]

    def clear(self) -> None:
        self.events.clear()

    def assert_dispatched(self, *expected: EventSpec | str) -> None:
        """Exactly these events, in order, reached the handlers (then forgets them)."""
        assert_events(self.events, *expected)
        self.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self):
        return iter(list(self.events))

    # -- switching on and off --------------------------------------------------------------

    def start(self) -> DispatchCapture:
        user = dict(getattr(settings, "FLUVIUS", {}) or {})
        chain = list(user.get("COMMAND_MIDDLEWARE", DEFAULTS["COMMAND_MIDDLEWARE"]))
        self._override = override_settings(FLUVIUS={
            **user, "DISPATCH": "inline", "COMMAND_MIDDLEWARE": [self.middleware, *chain],
        })
        self._override.enable()
        handlers.register(HandlerSpec(name=self.handler_name, func=self._record, evt_keys=("*",)))
        return self

    def stop(self) -> None:
        handlers.unregister(self.handler_name)
        if self._override is not None:
            self._override.disable()
            self._override = None
        # Callbacks run here filled the cache from a transaction the test will roll back.
        aggregate_cache.clear()

    def __enter__(self) -> DispatchCapture:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _record(self, evt: Event) -> None:
        self.events.append(evt)

    # -- running what commit would run ---------------------------------------------------

    def middleware(self, command: Command, call_next: Callable[[Command], CommandResult]) -> CommandResult:
        result = call_next(command)
        connection = connections[fluvius_settings.DATABASE]
        if connection.in_atomic_block and _only_test_atomics(connection):
            self.flush()
        return result

    def flush(self, using: str | None = None) -> int:
        """Run the on-commit callbacks queued in the test's transaction, as a commit would; how many ran.

        Like a commit, it runs each callback once and forgets it. Inside an atomic
        block of your own it refuses: that block has not committed yet.
        """
        connection = connections[using or fluvius_settings.DATABASE]
        if not _only_test_atomics(connection):
            raise RuntimeError("flush() inside an atomic block: its work has not committed yet.")
        ran = 0
        while connection.run_on_commit:
            # Callbacks may run commands that queue more: take the queue, then look again.
            pending, connection.run_on_commit = connection.run_on_commit, []
            for entry in pending:
                # (savepoint ids, callback, robust) on Django >= 4.2 (the stubs still say 2 items).
                _sids, callback, robust = cast("tuple[Any, Callable[[], Any], bool]", entry)
                ran += 1
                if not robust:
                    callback()
                    continue
                try:
                    callback()
                except Exception:  # noqa: BLE001 - robust callbacks log, as Django does
                    logging.getLogger("django.db.backends.base").exception(
                        "Error calling %s in on_commit() (robust).", callback)
        return ran


def _only_test_atomics(connection: Any) -> bool:
    """No atomic block is open but the ones Django's TestCase wraps around a test."""
    return all(getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def capture_dispatch() -> DispatchCapture:
    """``with capture_dispatch() as dispatched: ...`` (the ``fluvius_dispatch`` fixture)."""
    return DispatchCapture()


