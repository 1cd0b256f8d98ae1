"""The error window: the one place that decides a consumer has had too many errors, and words it.

Workers record each consumer error here the moment their callback returns
it. The error that brings the count within the window to ``max_errors``
closes the gate, before its worker takes another delivery; every worker
looks at the gate before it starts a callback, so none starts once the
decision is made. The consumer only reacts to that decision (it logs each
error and stops when told to). Workers, asyncio tasks and the reactor
thread share one window, so it is thread-safe.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from fedmq.config import Config
from fedmq.exceptions import CallbackError, ConsumerError
from fedmq.message import Message

log = logging.getLogger("fedmq")


class ErrorCount(NamedTuple):
    """One consumer error, as the window counted it."""

    #: Errors within the window, this one included.
    in_window: int
    #: ``max_errors``.
    limit: int
    #: The window's length in seconds.
    window: float
    #: This error is the one that decided to stop the consumer (true once at most).
    stops: bool


class ErrorWindow:
    """Counts consumer errors over the last ``window`` seconds; closes at ``limit``.

    Args:
        limit: how many errors within the window are too many.
        window: the window's length in seconds.
        now: returns the time in seconds (the reactor's ``seconds``); it is
            called from worker threads.

    """

    @classmethod
    def of(cls, config: Config, now: Callable[[], float]) -> ErrorWindow:
        """The window of a consumer with ``config`` (its ``max_errors`` and ``error_window``)."""
        return cls(config.max_errors, config.error_window, now)

    def __init__(self, limit: int, window: float, now: Callable[[], float]) -> None:
        self.limit = limit
        self.window = window
        self._now = now
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """Too many errors were counted: no callback may start any more."""
        return self._closed

    def record(self) -> ErrorCount:
        """Count an error now; the one that reaches the limit closes the window."""
        with self._lock:
            now = self._now()
            times = self._times
            times.append(now)
            while times and times[0] <= now - self.window:
                times.popleft()
            count = len(times)
            stops = count >= self.limit and not self._closed
            if stops:
                self._closed = True
        return ErrorCount(count, self.limit, self.window, stops)

    def add(self) -> int:
        """Record an error now; return how many the window holds, this one included."""
        return self.record().in_window


def log_consumer_error(
    exc: BaseException, message: Message | None, duration: float, errors: ErrorCount
) -> None:
    """Log one consumer error: on which message, and how many the window holds."""
    count = errors.in_window
    where = (
        f"message {message.id} (topic {message.topic!r}, queue {message.queue!r})"
        if message is not None
        else "a message"
    )
    tally = f"consumer error {count} of max_errors {errors.limit} within {errors.window:g} s"
    # The same facts as fields, for log_format = "json".
    fields: dict[str, object] = {"errors_in_window": count, "duration": round(duration, 3)}
    if message is not None:
        fields.update(message_id=message.id, topic=message.topic, queue=message.queue)
    from fedmq._settle_later import settlement_of

    # A message its callback took over stays with its Settlement.
    settled = "left to its Settlement" if settlement_of(message) is not None else "requeued"
    if isinstance(exc, ConsumerError):
        log.error("ConsumerError on %s: %s; %s (%s)", where, exc, settled, tally, extra=fields)
    elif message is None:
        log.error("%s; requeued (%s)", exc, tally, extra=fields)
    else:
        log.error(
            "The callback raised %s on %s after %.3f s; %s (%s)",
            type(exc).__name__,
            where,
            duration,
            settled,
            tally,
            exc_info=(type(exc), exc, exc.__traceback__),
            extra=fields,
        )


def too_many_errors(
    exc: BaseException, message: Message | None, errors: ErrorCount
) -> CallbackError:
    """What the consumer ends with when ``exc`` was the error that stopped it."""
    if errors.limit == 1:
        text = f"The callback raised {type(exc).__name__}: {exc}"
    else:
        text = (
            f"{errors.in_window} consumer errors within {errors.window:g} s (max_errors is "
            f"{errors.limit}); the last: {type(exc).__name__}: {exc}"
        )
    error = CallbackError(
        text,
        message_id=message.id if message is not None else None,
        topic=message.topic if message is not None else None,
        queue=message.queue if message is not None else None,
        raised_by_callback=True,
    )
    error.__cause__ = exc
    return error
