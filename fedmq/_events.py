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
from typing import TYPE_CHECKING, Any

from twisted.internet.task import LoopingCall

from fedmq._flow import HOST_UNHEALTHY, Holds
from fedmq._reactor_types import as_reactor_time
from fedmq.events import (
    ErrorEvent,
    Event,
    EventHandler,
    QueuePaused,
    QueueReopenFailed,
    QueueResumed,
    QueueSuspended,
    SlowConsumerHigh,
    SlowConsumerNormal,
    StateChanged,
)

if TYPE_CHECKING:
    from fedmq._session import Session
    from fedmq.config import Config
    from fedmq.message import Message

log = logging.getLogger("fedmq")


class EventBus:
    """Hands every event to every handler, one event at a time.

    Args:
        handler: a first handler, if not None.

    """

    def __init__(self, handler: EventHandler | None = None) -> None:
        self._handlers: list[EventHandler] = [] if handler is None else [handler]
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

    def error(self, error: BaseException, message: Message | None) -> None:
        """Emit the :class:`ErrorEvent` of a consumer error."""
        if message is None:
            self.emit(ErrorEvent(error))
        else:
            self.emit(ErrorEvent(error, message.queue, message.id))

    def add_state_listener(self, listener: Callable[[str], object]) -> None:
        """Call ``listener(state)`` at every :class:`StateChanged`."""

        def on_state(event: Event) -> None:
            if isinstance(event, StateChanged):
                listener(event.state)

        self.add(on_state)

    def on_stop(self, stop: Callable[[], object]) -> None:
        """Call ``stop()`` once the consumer has stopped (its state is "stopped")."""

        def stopped(event: Event) -> None:
            if isinstance(event, StateChanged) and event.state == "stopped":
                stop()

        self.add(stopped)

    def _deliver(self, event: Event) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception as error:  # a handler's mistake must not reach the consumer
                self._report(handler, event, error)

    def _report(self, handler: EventHandler, event: Event, error: Exception) -> None:
        key = (id(handler), event.kind)
        name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
        if key in self._reported:
            log.debug("The event handler %s failed again on a %s event", name, event.kind)
            return
        self._reported.add(key)
        log.error(
            "The event handler %s failed on a %s event (further failures of it on "
            "this kind of event are logged at DEBUG)",
            name,
            event.kind,
            exc_info=error,
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

    @classmethod
    def of(
        cls, config: Config, in_flight: Callable[[], int], clock: Any, bus: EventBus
    ) -> SlowConsumerWatch:
        """The watch of a consumer: its backlog is what is in flight beyond ``concurrency``."""
        concurrency = config.concurrency
        watch = cls(
            lambda: max(0, in_flight() - concurrency),
            config.slow_consumer_high,
            config.slow_consumer_low,
            config.slow_consumer_interval,
            clock,
            bus.emit,
        )
        bus.on_stop(watch.stop)
        return watch

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


def consumed_queues(holds: Holds, session: Session) -> list[str]:
    """The queues ``session`` consumes: the broker's names of those nothing holds."""
    return [broker for name, broker in session.names().items() if holds.consumes(name)]


class QueueEvents:
    """Turns the changes of a consumer's queue holds into queue events.

    A queue that stops consuming is "queue_suspended" when the host's
    ill health is what newly holds it, "queue_paused" otherwise (with every
    reason holding it); one that consumes again is "queue_resumed"; one that
    could not be consumed again is "queue_reopen_failed".

    Args:
        holds: the consumer's holds.
        emit: called with each event.
        health_reason: why the host is unhealthy, when it is.
        session: the session in charge, if any (it knows the broker's
            names of server-named queues).

    """

    def __init__(
        self,
        holds: Holds,
        emit: Callable[[Event], None],
        health_reason: Callable[[], str | None],
        session: Callable[[], Session | None],
    ) -> None:
        self._emit = emit
        self._health_reason = health_reason
        self._session = session
        self._last: dict[str, frozenset[str]] = {}
        holds.add_listener(self.changed)
        holds.add_failure_listener(self.failed)

    def _shown(self, queue: str) -> str:
        session = self._session()
        if queue or session is None:
            return queue
        return session.names().get(queue, queue)

    def changed(self, queue: str, consuming: bool, reasons: frozenset[str]) -> None:
        """A queue's holds changed."""
        before = self._last.get(queue, frozenset())
        self._last[queue] = reasons
        if consuming:
            if before:
                self._emit(QueueResumed(self._shown(queue)))
        elif HOST_UNHEALTHY in reasons and HOST_UNHEALTHY not in before:
            why = self._health_reason() or "the host is unhealthy"
            self._emit(QueueSuspended(self._shown(queue), why))
        elif reasons != before:
            self._emit(QueuePaused(self._shown(queue), tuple(sorted(reasons))))

    def failed(self, queue: str, error: Exception) -> None:
        """Consuming a queue again failed."""
        self._emit(QueueReopenFailed(self._shown(queue), str(error)))
