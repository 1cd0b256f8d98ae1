"""Host health: tell a consumer its host is unwell, so it suspends the queues marked for it.

Either the configuration names a check (``health_check = "module:callable"``,
polled every ``health_interval`` seconds in a thread of its own), or code
holds a :class:`HealthMonitor` and says when the host is healthy or not::

    health = fedmq.HealthMonitor()
    fedmq.consume(handle, config="config.toml", health=health)
    ...
    health.set_unhealthy("the disk is full")   # from any thread
    health.set_healthy()

While the host is unhealthy, every queue with ``suspend_on_bad_host_health
= true`` stops receiving new deliveries (those in flight finish), the
consumer's state is ``"suspended"`` and ``/ready`` answers 503 with the
reason; once healthy, those queues are consumed again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fedmq.exceptions import PublishError

__all__ = ["ConsumerSuspended", "HealthMonitor"]

#: Called with ``(healthy, reason)``; ``reason`` is None when healthy.
HealthListener = Callable[[bool, "str | None"], Any]


class ConsumerSuspended(PublishError):
    """A publish from a suspended consumer, refused because ``fail_publish_when_suspended`` is set.

    Nothing was sent. The message says why the host is unhealthy.
    """


class HealthMonitor:
    """Whether the host is healthy, as code says it; safe to call from any thread.

    Hand it to :func:`fedmq.consume` or :class:`fedmq.Consumer` as ``health=``.
    It starts healthy. Saying the same thing twice changes nothing; a new
    reason while unhealthy replaces the reason ``/ready`` gives, without
    a new event. Told by several threads at once, the last call wins: a
    consumer acts on what the monitor says when a change reaches it.

    Attributes:
        healthy: True unless :meth:`set_unhealthy` was the last call.
        reason: why the host is unhealthy; None while healthy.

    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: list[HealthListener] = []
        self.healthy = True
        self.reason: str | None = None

    def set_healthy(self) -> None:
        """The host is healthy: suspended queues are consumed again."""
        self._change(healthy=True, reason=None)

    def set_unhealthy(self, reason: str = "the host is unhealthy") -> None:
        """The host is unhealthy: queues marked ``suspend_on_bad_host_health`` are suspended.

        Args:
            reason: why, shown by ``/ready`` and in the ``host_unhealthy`` event.

        """
        self._change(healthy=False, reason=str(reason) or "the host is unhealthy")

    def add_listener(self, listener: HealthListener) -> None:
        """Call ``listener(healthy, reason)`` at each change of either, in the changing thread."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: HealthListener) -> None:
        """Stop calling ``listener``; one not added is ignored."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def _change(self, *, healthy: bool, reason: str | None) -> None:
        with self._lock:
            if healthy == self.healthy and (healthy or reason == self.reason):
                return
            # The reason alone says the state (None while healthy): a
            # follower reads that one attribute, without the lock.
            self.healthy, self.reason = healthy, reason
            listeners = list(self._listeners)
        for listener in listeners:
            listener(healthy, reason)

    def __repr__(self) -> str:
        if self.healthy:
            return "<HealthMonitor healthy>"
        return f"<HealthMonitor unhealthy: {self.reason}>"
