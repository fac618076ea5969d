"""How committed events reach ``@event_handler`` functions.

The bus calls ``dispatch_committed(events, using)`` inside the command's
transaction; nothing runs until the transaction commits. Dispatchers are found
by ``FLUVIUS['DISPATCH']`` in ``DISPATCHERS`` (a lookup table): ``"inline"`` runs
handlers in-process right after commit; ``None`` turns dispatch off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from django.db import transaction

from .conf import fluvius_settings
from .handlers import HandlerSpec, handlers

logger = logging.getLogger("django_fluvius.dispatch")


def run_handler(spec: HandlerSpec, event: Any) -> bool:
    """Run one handler for one event; log and swallow its error. True when it succeeded."""
    try:
        spec(event)
    except Exception:
        logger.exception("Event handler %s failed on %s (position %s).", spec.name, event.evt_key,
                         event.position)
        return False
    return True


def run_inline(events: Sequence[Any]) -> None:
    for event in events:
        for spec in handlers.for_event(event):
            run_handler(spec, event)


class InlineDispatcher:
    """Run handlers in this process once the transaction commits."""

    def dispatch(self, events: Sequence[Any], using: str) -> None:
        transaction.on_commit(lambda: run_inline(events), using=using)


class NullDispatcher:
    def dispatch(self, events: Sequence[Any], using: str) -> None:
        return None


DISPATCHERS: dict[Any, Callable[[], Any]] = {
    "inline": InlineDispatcher,
    None: NullDispatcher,
    "off": NullDispatcher,
}


def get_dispatcher() -> Any:
    mode = fluvius_settings.DISPATCH
    try:
        return DISPATCHERS[mode]()
    except KeyError:
        raise ValueError(
            f"FLUVIUS['DISPATCH'] is {mode!r}; expected one of {sorted(map(str, DISPATCHERS))}."
        ) from None


def dispatch_committed(events: Sequence[Any], using: str) -> None:
    get_dispatcher().dispatch(events, using)
