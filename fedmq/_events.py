"""Delivering session events to handlers, and the slow-consumer watermarks.

:class:`EventBus` calls each handler with each event, on the reactor
thread, in order. An event emitted while handlers run (a handler paused a
queue, say) waits until the current event has reached every handler, so
every handler sees the same order and no handler is re-entered. A handler
that raises is logged once per handler and kind of event (later failures at
DEBUG), and the others still get the event.

:class:`SlowConsumerWatch` measures the backlog on a timer of the consumer's
clock, so the per-message path pays nothing for it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.task import LoopingCall

from fedmq._reactor_types import as_reactor_time
from fedmq.events import Event, EventHandler, SlowConsumerHigh, SlowConsumerNormal

log = logging.getLogger("fedmq")


class EventBus:
    """Hands every event to every handler, one event at a time."""

    def __init__(self) -> None:
        self._handlers: list[EventHandler] = []
        self._queued: deque[Event] = deque()
        self._emitting = False
        # (handler id, kind) pairs already logged with a traceback.
        self._reported: set[tuple[int, str]] = set()

    def add(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` for every event from now on."""
        self._handlers.append(handler)

    def remove(self, handler: EventHandler) -> None:
        """Stop calling ``handler``; one not added is ignored."""
        if handler in self._handlers:
            self._handlers.remove(handler)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every handler, after any event still being delivered."""
        self._queued.append(event)
        if self._emitting:
            return
        self._emitting = True
        try:
            while self._queued:
                self._deliver(self._queued.popleft())
        finally:
            self._emitting = False

    def _deliver(self, event: Event) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - a handler's mistake must not reach the consumer
                self._report(handler, event)

    def _report(self, handler: EventHandler, event: Event) -> None:
        key = (id(handler), event.kind)
        name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
        if key in self._reported:
            log.debug("The event handler %s failed again on a %s event", name, event.kind)
            return
        self._reported.add(key)
        log.exception(
            "The event handler %s failed on a %s event (further failures of it on "
            "this kind of event are logged at DEBUG)",
            name,
            event.kind,
        )


class SlowConsumerWatch:
    """Emits :class:`SlowConsumerHigh` and :class:`SlowConsumerNormal` as the backlog crosses.

    Every ``interval`` seconds on ``clock`` it reads ``backlog()``; at or
    above ``high`` it emits the high event once, and at or below ``low``
    after that the normal event once.

    Args:
        backlog: returns the messages received and not yet started.
        high: the high watermark (0 turns the watch off).
        low: the low watermark, below ``high``.
        interval: seconds between measurements.
        clock: what the timer runs on.
        emit: called with each event.

    """

    def __init__(
        self,
        backlog: Callable[[], int],
        high: int,
        low: int,
        interval: float,
        clock: Any,
        emit: Callable[[Event], None],
    ) -> None:
        self._backlog = backlog
        self.high = high
        self.low = low
        self._emit = emit
        self.is_high = False
        self._timer = LoopingCall(self.measure)
        self._timer.clock = as_reactor_time(clock)
        self._interval = interval

    def start(self) -> None:
        """Measure every ``interval`` seconds from now on (nothing when ``high`` is 0)."""
        if self.high and not self._timer.running:
            self._timer.start(self._interval, now=False)

    def stop(self) -> None:
        """Measure no more."""
        if self._timer.running:
            self._timer.stop()

    def measure(self) -> None:
        """Read the backlog once; emit an event if it crossed a watermark."""
        backlog = self._backlog()
        if not self.is_high and backlog >= self.high:
            self.is_high = True
            self._emit(SlowConsumerHigh(backlog, self.high))
        elif self.is_high and backlog <= self.low:
            self.is_high = False
            self._emit(SlowConsumerNormal(backlog, self.low))
