"""``FluviusTestMixin``: the testing helpers for unittest-style Django ``TestCase`` classes."""


from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from django_fluvius.context import DomainContext
from django_fluvius.domain import Domain
from django_fluvius.testing.capture import DispatchCapture
from django_fluvius.testing.scenarios import (
    AggregateScenario,
    DomainLike,
    EventSpec,
    assert_events,
    assert_no_projection,
    assert_projection,
    assert_projection_current,
    given,
)

if TYPE_CHECKING:

    from django.db.models import Model


# -- unittest ---------------------------------------------------------------------------------


class FluviusTestMixin:
    """For Django ``TestCase`` / ``TransactionTestCase`` subclasses.

    Each test gets ``self.dispatched`` (a ``DispatchCapture``: handlers run inline
    and the events they receive are recorded) unless ``capture_dispatch = False``,
    plus ``given`` and projection assertions.
    """

    capture_dispatch: ClassVar[bool] = True
    dispatched: DispatchCapture

    def setUp(self) -> None:
        super().setUp()  # type: ignore[misc]
        if self.capture_dispatch:
            self.dispatched = DispatchCapture().start()
            self.addCleanup(self.dispatched.stop)  # type: ignore[attr-defined]

    def given(self, domain: DomainLike, *events: EventSpec, database: bool = True,
              **kwargs: Any) -> AggregateScenario:
        return given(domain, *events, database=database, **kwargs)

    def domain(self, domain_class: type[Domain], user: Any = None, **context: Any) -> Domain:
        """A domain instance with a test context (``user``, ``tenant``...)."""
        return domain_class(DomainContext.create(namespace=domain_class.__namespace__, user=user,
                                                 source="test", **context))

    def assertEvents(self, actual: Iterable[Any], *expected: EventSpec | str) -> None:  # noqa: N802
        assert_events(actual, *expected)

    def assertDispatched(self, *expected: EventSpec | str) -> None:  # noqa: N802
        self.dispatched.assert_dispatched(*expected)

    def assertProjection(self, domain: DomainLike, aggregate_id: Any,  # noqa: N802
                         resource: str | None = None, /, **fields: Any) -> Model:
        return assert_projection(domain, aggregate_id, resource, **fields)

    def assertNoProjection(self, domain: DomainLike, aggregate_id: Any,  # noqa: N802
                           resource: str | None = None) -> None:
        assert_no_projection(domain, aggregate_id, resource)

    def assertProjectionCurrent(self, domain: DomainLike, aggregate_id: Any) -> None:  # noqa: N802
        assert_projection_current(domain, aggregate_id)
