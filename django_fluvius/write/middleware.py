"""The command-bus middleware of the framework: logging, timing, retry (authorization is in security/).

``FLUVIUS['COMMAND_MIDDLEWARE']`` lists callables ``(command, call_next) -> result``,
outermost first; a class is instantiated once (again when the setting changes).
The default chain is::

    FLUVIUS = {"COMMAND_MIDDLEWARE": [
        "django_fluvius.write.middleware.LoggingMiddleware",           # one log line per command, any outcome
        "django_fluvius.write.middleware.TimingMiddleware",            # duration, slow-command warning, signal
        "django_fluvius.security.permissions.AuthorizationMiddleware", # command permissions and policies
        "django_fluvius.write.middleware.RetryMiddleware",             # lost races of retry_safe commands
    ]}

Reorder, remove or add to it; a middleware of your own is a function or a class::

    def audit(command, call_next):
        result = call_next(command)             # everything inward, then the transaction
        ...
        return result

    class RateLimit:
        async def __call__(self, command, call_next):   # async works too: await call_next(command)
            ...

The core is synchronous (``aprocess_command`` wraps it), so a synchronous
middleware costs a function call; an ``async def`` one is driven on an event loop
and its ``call_next`` runs the rest back on the bus's thread (a thread hop each
way), so keep those for middleware that really awaits something.

What is not middleware, because it must hold whatever the chain says: the
transaction, the tenant check (tenancy.py), the command log (every outcome,
denials included) and the wake-up of delivery.
"""

from __future__ import annotations

import logging
import random
import time
from typing import TYPE_CHECKING, Any

from django.dispatch import Signal

from django_fluvius.conf import fluvius_settings
from django_fluvius.exceptions import ConcurrencyConflict, FluviusError

if TYPE_CHECKING:
    from django_fluvius.write.bus import Command, CommandResult, Handler

logger = logging.getLogger("django_fluvius.commands")

# Sent by TimingMiddleware after every command: sender=the Command class, command=, result= (None on
# error), error= (None on success), duration= (seconds, every try included). For metrics.
command_timed = Signal()


def _describe(command: Command) -> str:
    target = command.aggregate_id or "new"
    return f"{command.namespace}:{command.key} on {target}"


class LoggingMiddleware:
    """A log line per command on the ``django_fluvius.commands`` logger.

    DEBUG when done, INFO when a ``FluviusError`` refused it (validation, a
    business rule, a denied permission, a conflict), ERROR with the traceback
    when it failed otherwise. Each record carries ``command``, ``command_id``,
    ``correlation_id`` and ``user`` as attributes (for structured logging).
    """

    logger = logger

    def __call__(self, command: Command, call_next: Handler) -> CommandResult:
        started = time.perf_counter()
        try:
            result = call_next(command)
        except FluviusError as exc:
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.info("%s refused (%s): %s [%.1f ms]", _describe(command), exc.code, exc.message,
                                 (time.perf_counter() - started) * 1000, extra=self.extra(command))
            raise
        except Exception:
            self.logger.exception("%s failed [%.1f ms]", _describe(command),
                                  (time.perf_counter() - started) * 1000, extra=self.extra(command))
            raise
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug("%s done: %s v%s [%.1f ms]", _describe(command), result.aggregate_id, result.version,
                              (time.perf_counter() - started) * 1000, extra=self.extra(command))
        return result

    @staticmethod
    def extra(command: Command) -> dict[str, Any]:
        context = command.context
        return {
            "command": f"{command.namespace}:{command.key}",
            "command_id": str(command.id),
            "correlation_id": getattr(context, "correlation_id", ""),
            "user": getattr(context, "user_id", ""),
        }


class TimingMiddleware:
    """Times each command (every try included) into ``result.duration_ms``.

    Warns on ``django_fluvius.commands`` when a command takes longer than
    ``FLUVIUS['SLOW_COMMAND_MS']`` (None: never) and sends ``command_timed`` for
    metrics collectors (free when nothing listens).
    """

    def __init__(self) -> None:
        slow = fluvius_settings.SLOW_COMMAND_MS
        self.slow_ms = float(slow) if slow is not None else None

    def __call__(self, command: Command, call_next: Handler) -> CommandResult:
        started = time.perf_counter()
        result = None
        error: BaseException | None = None
        try:
            result = call_next(command)
            return result
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds = time.perf_counter() - started
            if result is not None:
                result.duration_ms = seconds * 1000
            if self.slow_ms is not None and seconds * 1000 > self.slow_ms:
                logger.warning("%s took %.1f ms (FLUVIUS['SLOW_COMMAND_MS'] is %s)", _describe(command),
                               seconds * 1000, self.slow_ms)
            if command_timed.receivers:
                command_timed.send(sender=type(command), command=command, result=result, error=error,
                                   duration=seconds)


class RetryMiddleware:
    """Runs a ``retry_safe`` command again when it lost a race at commit.

    Only for actions declared ``@action(..., retry_safe=True)`` (running them on
    the newer state must be as right as running them first), only for a lost race
    (``ConcurrencyConflict`` with code ``concurrency_conflict``: another writer took
    the version), never when the command named an ``expected_version`` (the caller
    asked for that version and no other), at most ``FLUVIUS['COMMAND_RETRY_TRIES']``
    tries in all, with a short randomised pause (``COMMAND_RETRY_BACKOFF`` seconds
    times the try number) so racing writers spread out. Each try is a fresh
    transaction that reloads the aggregate from the store. The command log keeps
    one row: the final outcome.
    """

    def __init__(self) -> None:
        self.tries = max(1, int(fluvius_settings.COMMAND_RETRY_TRIES))
        self.backoff = max(0.0, float(fluvius_settings.COMMAND_RETRY_BACKOFF))

    def __call__(self, command: Command, call_next: Handler) -> CommandResult:
        if self.tries == 1 or not command.spec.retry_safe or command.expected_version is not None:
            return call_next(command)
        attempt = 1
        while True:
            try:
                return call_next(command)
            except ConcurrencyConflict as exc:
                if exc.code != ConcurrencyConflict.default_code or attempt >= self.tries:
                    raise
                delay = self.backoff * attempt * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not crypto
                logger.info("%s lost a race (try %d of %d); trying again in %.3f s", _describe(command), attempt,
                            self.tries, delay)
                if delay:
                    time.sleep(delay)
                attempt += 1
