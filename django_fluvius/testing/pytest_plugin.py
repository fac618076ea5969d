"""pytest fixtures for testing projects built on django-fluvius.

Registered as a ``pytest11`` entry point, so installing django-fluvius makes them
available (with pytest-django) in any project; or list it yourself:
``pytest_plugins = ["django_fluvius.testing.pytest_plugin"]``. Nothing Django-related is
imported until a fixture is used, so loading the plugin costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from django_fluvius.testing import AggregateScenario, DispatchCapture


@pytest.fixture
def fluvius_dispatch(db: None) -> Iterator[DispatchCapture]:
    """Handlers run inline right after each command; ``.events`` lists what they received."""
    from django_fluvius.testing import DispatchCapture

    capture = DispatchCapture().start()
    try:
        yield capture
    finally:
        capture.stop()


@pytest.fixture
def fluvius_given(db: None) -> Callable[..., AggregateScenario]:
    """``fluvius_given(UserDomain, *events)``: a given/when/then scenario through the database."""
    from django_fluvius.testing import given

    def make(domain: Any, *events: Any, **kwargs: Any) -> AggregateScenario:
        kwargs.setdefault("database", True)
        return given(domain, *events, **kwargs)

    return make
