"""What a consumer tells and watches: its session events, its host's health, its backlog.

:class:`Observers` gathers, for one consumer, the :class:`~fedmq._events.EventBus`
its handlers hear, the :class:`~fedmq._health.HostHealth` that suspends its
marked queues, the :class:`~fedmq._events.SlowConsumerWatch` of its backlog,
and the :class:`~fedmq._events.QueueEvents` its queue holds make; the
consumer facade only wires them in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedmq._events import EventBus, QueueEvents, SlowConsumerWatch, consumed_queues
from fedmq._health import HostHealth, host_health_for
from fedmq.events import EventHandler
from fedmq.health import HealthMonitor

if TYPE_CHECKING:
    from fedmq._queue_control import QueueControl
    from fedmq._reconnect import Reconnector
    from fedmq._session import Session


class Observers:
    """One consumer's events, host health and backlog watch.

    Args:
        on_event: a first event handler, if not None.
        health: the monitor to follow; a new one when None.

    Attributes:
        events: the consumer's event bus.
        health: the monitor it follows.

    """

    def __init__(self, on_event: EventHandler | None, health: HealthMonitor | None) -> None:
        self.events = EventBus(on_event)
        self.health = health if health is not None else HealthMonitor()
        self._flow: QueueControl | None = None
        self._host: HostHealth | None = None
        self._slow: SlowConsumerWatch | None = None

    def attach(
        self,
        flow: QueueControl,
        machine: Reconnector,
        in_flight: Callable[[], int],
        clock: Any,
        reactor: Any,
        on_reactor_thread: Callable[[], bool],
    ) -> None:
        """Wire in the consumer's parts, once they exist.

        Raises:
            ConfigurationError: ``health_check`` cannot be imported or is not callable.

        """

        def on_reactor(function: Callable[..., Any], *args: Any) -> None:
            if on_reactor_thread():
                function(*args)
            else:
                reactor.callFromThread(function, *args)

        self._flow = flow
        self._host = host = host_health_for(
            flow, self.health, clock, reactor, machine.suspend, self.events, on_reactor
        )
        self._slow = SlowConsumerWatch.of(flow.config, in_flight, clock, self.events)
        QueueEvents(flow.holds, self.events.emit, lambda: host.reason, lambda: machine.session)

    def start(self) -> None:
        """The consumer starts: follow the health monitor, poll, measure the backlog."""
        if self._host is not None and self._slow is not None:
            self._host.start()
            self._slow.start()

    def reopened(self, session: Session) -> list[str]:
        """The queues a new session consumes (nothing holds them)."""
        if self._flow is None:
            return list(session.queues)
        return consumed_queues(self._flow.holds, session)
