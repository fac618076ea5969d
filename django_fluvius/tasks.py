"""Celery tasks: deliveries to ``@event_handler`` functions, async projections, the relay.

Every worker also runs a relay thread of its own (``FLUVIUS['RELAY_IN_WORKER']``):
it ``LISTEN``s for commits and polls, and hands the events of the subscriptions
the worker knows to the workers. So a handler deployed to the workers alone gets
every event written after its subscription started, whatever code wrote it.

Autodiscovered by the project's Celery app (``app.autodiscover_tasks()``) since
``django_fluvius`` is an installed app. Every task acknowledges its message only
once it has run (``acks_late``), and a worker that dies mid-task gives the
message back (``reject_on_worker_lost``): delivery is at least once, and the
receipts of dispatch.py make the effect happen once. Run workers with
``--prefetch-multiplier=1`` (``worker_prefetch_multiplier = 1``) so a dead worker
holds back one message, not many; with Redis set the transport's
``visibility_timeout`` to how long a message may stay unacknowledged before
another worker gets it.

Task names are stable strings (``fluvius.deliver`` ...) because the relay sends
them by name, from processes that need not import this module.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutdown

from django_fluvius.conf import fluvius_settings
from django_fluvius.delivery import dispatch
from django_fluvius.delivery.projections import APPLIED, BUSY, FAILED, async_projections

logger = logging.getLogger("django_fluvius.tasks")

TASK_OPTIONS: dict[str, Any] = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
}

# How often a projection task tries again when another worker holds the
# projection or a running transaction holds the feed back (the periodic
# catch-up covers anything beyond).
PROJECT_RETRIES = 20


def _schedule(using: str | None):
    def schedule(attempt: dispatch.Attempt, countdown: float) -> None:
        spec = dispatch.handlers.get(attempt.handler)
        dispatch.send(dispatch.celery_app(), dispatch.DELIVER_TASK, ([attempt.as_message()], using),
                      queue=spec.queue or fluvius_settings.CELERY_QUEUE, countdown=countdown)

    return schedule


@shared_task(name=dispatch.DELIVER_TASK, **TASK_OPTIONS)
def deliver(deliveries: list[list[Any]], using: str | None = None) -> dict[str, int]:
    """Run a batch of (handler, event) deliveries; each failure is retried on its own."""
    schedule = _schedule(using)
    outcomes: dict[str, int] = {}
    for message in deliveries:
        try:
            outcome = dispatch.run_attempt(dispatch.Attempt.from_message(message), schedule=schedule)
        except Exception:  # noqa: BLE001 - e.g. the database went away: the others still get their turn
            logger.exception("Delivery %r could not run; it is sent again.", message)
            item = dispatch.Attempt.from_message(message)
            try:
                schedule(item, dispatch.retry_delay(item.attempt))
            except Exception as exc:  # noqa: BLE001 - database and broker both failing
                # Give the whole message back to the broker: done deliveries have receipts.
                time.sleep(1.0)
                raise Reject(exc, requeue=True) from exc
            outcome = dispatch.FAILED
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


@shared_task(name=dispatch.PROJECT_TASK, bind=True, max_retries=None, **TASK_OPTIONS)
def project(self: Any, name: str, using: str | None = None, tries: int = 0) -> dict[str, Any]:
    """Catch one async projection up with the feed."""
    if name not in async_projections:
        logger.error("No async projection named %r is registered in this worker.", name)
        return {"status": "unknown"}
    result = async_projections.get(name)(using=using).catch_up(wait=False)
    again = None
    if result.status == FAILED:
        again = dispatch.retry_delay(tries + 1)
    elif result.status == BUSY or result.held:
        again = float(fluvius_settings.ORDERED_WAIT)
    if again is not None and tries < PROJECT_RETRIES:
        raise self.retry(args=(name, using, tries + 1), countdown=again)
    return {"status": result.status, "applied": result.applied, "position": result.position}


@shared_task(name="fluvius.catch_up_all", **TASK_OPTIONS)
def catch_up_all(using: str | None = None) -> dict[str, int]:
    """Catch every async projection up (periodic: Celery beat)."""
    applied = {}
    for cls in async_projections:
        result = cls(using=using).catch_up(wait=False)
        if result.status == APPLIED:
            applied[cls.name] = result.applied
    return applied


@shared_task(name=dispatch.RELAY_TASK, **TASK_OPTIONS)
def relay(using: str | None = None) -> dict[str, int]:
    """Move every subscription this worker knows forward (periodic: Celery beat)."""
    result = dispatch.deliver_pending(using=using)
    return {"handed_over": result.handed_over, "redelivered": result.redelivered, "failed": result.failed,
            "busy": result.busy}


_worker_relay: dict[str, Any] = {}


@worker_ready.connect
def start_worker_relay(sender: Any = None, **kwargs: Any) -> None:
    """The worker's own relay thread (LISTEN + poll), in its main process."""
    if fluvius_settings.DISPATCH != "celery" or not fluvius_settings.RELAY_IN_WORKER:
        return
    _worker_relay["stop"] = dispatch.start_background_relay()
    logger.info("Fluvius relay started in the worker (LISTEN %s, poll every %ss).", dispatch.CHANNEL,
                fluvius_settings.RELAY_POLL)


@worker_shutdown.connect
def stop_worker_relay(sender: Any = None, **kwargs: Any) -> None:
    stop = _worker_relay.pop("stop", None)
    if stop is not None:
        stop.set()


@shared_task(name="fluvius.sweep_uploads", **TASK_OPTIONS)
def sweep_uploads(max_age: float | None = None) -> dict[str, int]:
    """Remove staged uploads of dead processes or unwritten for long (periodic: Celery beat)."""
    from django_fluvius.media.storage import sweep_stages

    removed = sweep_stages() if max_age is None else sweep_stages(max_age=max_age)
    return {"removed": len(removed)}
