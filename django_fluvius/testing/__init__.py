"""Helpers for testing your own domains: given / when / then, dispatch capture, projections.

Two forms of the same scenario::

    from django_fluvius.testing import event, given

    # In memory: folds the given events and runs the action; no database at all.
    given(UserDomain, event("user-created", name="Jo", email="jo@example.com", active=True)) \\
        .when("deactivate-user").then(event("user-deactivated", active=False))

    # Through the real command bus and database (middleware, projections, handlers).
    given(UserDomain, database=True).when("create-user", name="Jo", email="bad") \\
        .then_error(DomainError, match="Invalid email")

``capture_dispatch()`` (the ``fluvius_dispatch`` pytest fixture) runs handlers
inline and records every event handed to them. ``FluviusTestMixin`` offers all of
it to unittest-style ``TestCase`` classes. The pytest plugin (``pytest_plugin.py``,
a ``pytest11`` entry point) is loaded before Django is set up, so the names here
are loaded lazily (PEP 562): importing this package imports no model.
"""

from __future__ import annotations

from django_fluvius.lazy import lazy_names

_PUBLIC = {
    "AggregateScenario": "scenarios",
    "StoredScenario": "scenarios",
    "EventSpec": "scenarios",
    "assert_events": "scenarios",
    "assert_no_projection": "scenarios",
    "assert_projection": "scenarios",
    "assert_projection_current": "scenarios",
    "event": "scenarios",
    "given": "scenarios",
    "DispatchCapture": "capture",
    "capture_dispatch": "capture",
    "FluviusTestMixin": "mixins",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_names(__name__, globals(), _PUBLIC)


