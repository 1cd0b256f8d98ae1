"""The error window: the one place that decides a consumer has had too many errors.

Workers record each consumer error here the moment their callback returns
it. The error that brings the count within the window to ``max_errors``
closes the gate, before its worker takes another delivery; every worker
looks at the gate before it starts a callback, so none starts once the
decision is made. The consumer only reacts to that decision (it logs each
error and stops when told to). Workers, asyncio tasks and the reactor
thread share one window, so it is thread-safe.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from fedmq.config import Config


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

    def __init__(self, limit: int, window: float, now: Callable[[], float]):
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
