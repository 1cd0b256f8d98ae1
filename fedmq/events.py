"""Session events: what happens to a running consumer, as typed records.

A handler given to :func:`fedmq.consume` (``on_event=``), to
:class:`~fedmq.Consumer` (``on_event=``) or to
:meth:`Consumer.add_event_handler <fedmq.Consumer.add_event_handler>` is
called with one :class:`Event` at a time, on the reactor thread, in the
order things happened. Each kind of event is a frozen class of its own with
a ``kind`` string, so a handler can match on either::

    def on_event(event: fedmq.Event) -> None:
        if isinstance(event, fedmq.Disconnected):
            print("lost the broker:", event.reason)
        elif event.kind == "host_unhealthy":
            print("suspended:", event.reason)

A handler that raises is logged (once per handler and kind of event, then
quietly) and neither the other handlers nor the consumer notice. A handler
may call the consumer back (``pause``, ``resume``, ``cancel``, ``publish``):
an event that causes is delivered after the current one has reached every
handler. No event carries a secret: URLs are shown without their password.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = [
    "Blocked",
    "Connected",
    "Disconnected",
    "ErrorEvent",
    "Event",
    "EventHandler",
    "HostHealthy",
    "HostUnhealthy",
    "QueuePaused",
    "QueueReopenFailed",
    "QueueReopened",
    "QueueResumed",
    "QueueSuspended",
    "Reconnected",
    "Reconnecting",
    "SlowConsumerHigh",
    "SlowConsumerNormal",
    "StateChanged",
    "TopologyRestored",
    "Unblocked",
]


@dataclass(frozen=True, slots=True)
class Event:
    """The base class of every session event; ``kind`` names the kind, e.g. ``"connected"``."""

    kind: ClassVar[str] = "event"


#: What an event handler is: called with each event, its return value ignored.
EventHandler = Callable[[Event], Any]


@dataclass(frozen=True, slots=True)
class StateChanged(Event):
    """The consumer's :attr:`~fedmq.Consumer.state` changed to ``state``."""

    kind: ClassVar[str] = "state_changed"
    state: str


@dataclass(frozen=True, slots=True)
class Connected(Event):
    """The first connection is open and every queue is consumed.

    Attributes:
        url: the broker's URL, its password replaced by ``***``.

    """

    kind: ClassVar[str] = "connected"
    url: str


@dataclass(frozen=True, slots=True)
class Disconnected(Event):
    """The connection consumed on was lost; the consumer reconnects.

    Attributes:
        reason: why, as the broker or the network said it.

    """

    kind: ClassVar[str] = "disconnected"
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnecting(Event):
    """The consumer is about to try connection ``attempt`` after waiting ``delay`` seconds.

    Attributes:
        attempt: 1 for the first attempt after a loss or a failure, then 2, 3, ...
        delay: seconds waited before the attempt (0 right after a lost connection).

    """

    kind: ClassVar[str] = "reconnecting"
    attempt: int
    delay: float


@dataclass(frozen=True, slots=True)
class Reconnected(Event):
    """A connection after the first is open.

    Attributes:
        url: the broker's URL, its password replaced by ``***``.

    """

    kind: ClassVar[str] = "reconnected"
    url: str


@dataclass(frozen=True, slots=True)
class TopologyRestored(Event):
    """After a reconnect, everything is declared and bound again, and consumed (unless held).

    Attributes:
        queues: the queues consumed (the broker's names for server-named ones).

    """

    kind: ClassVar[str] = "topology_restored"
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Blocked(Event):
    """The broker blocked the connection (a resource alarm); ``reason`` is the broker's."""

    kind: ClassVar[str] = "blocked"
    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked(Event):
    """The broker unblocked the connection."""

    kind: ClassVar[str] = "unblocked"


@dataclass(frozen=True, slots=True)
class QueuePaused(Event):
    """No new deliveries come from ``queue``; ``reasons`` are what holds it."""

    kind: ClassVar[str] = "queue_paused"
    queue: str
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class QueueResumed(Event):
    """Deliveries from ``queue`` come again."""

    kind: ClassVar[str] = "queue_resumed"
    queue: str


@dataclass(frozen=True, slots=True)
class QueueSuspended(Event):
    """``queue`` is held because the host is unhealthy; ``reason`` says why."""

    kind: ClassVar[str] = "queue_suspended"
    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class QueueReopened(Event):
    """After a reconnect, ``queue`` is consumed again (one event per queue nothing holds)."""

    kind: ClassVar[str] = "queue_reopened"
    queue: str


@dataclass(frozen=True, slots=True)
class QueueReopenFailed(Event):
    """Consuming ``queue`` again (a resume, a reconfigure) failed; ``reason`` says why."""

    kind: ClassVar[str] = "queue_reopen_failed"
    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class HostUnhealthy(Event):
    """The host health check failed (or a :class:`~fedmq.HealthMonitor` was told so)."""

    kind: ClassVar[str] = "host_unhealthy"
    reason: str


@dataclass(frozen=True, slots=True)
class HostHealthy(Event):
    """The host is healthy again."""

    kind: ClassVar[str] = "host_healthy"


@dataclass(frozen=True, slots=True)
class SlowConsumerHigh(Event):
    """The unstarted backlog reached ``slow_consumer_high``.

    Attributes:
        backlog: the messages received and waiting for a worker when measured.
        watermark: the ``slow_consumer_high`` setting.

    """

    kind: ClassVar[str] = "slow_consumer_high"
    backlog: int
    watermark: int


@dataclass(frozen=True, slots=True)
class SlowConsumerNormal(Event):
    """The unstarted backlog fell to ``slow_consumer_low`` after a :class:`SlowConsumerHigh`.

    Attributes:
        backlog: the messages received and waiting for a worker when measured.
        watermark: the ``slow_consumer_low`` setting.

    """

    kind: ClassVar[str] = "slow_consumer_normal"
    backlog: int
    watermark: int


@dataclass(frozen=True, slots=True)
class ErrorEvent(Event):
    """A consumer error: the callback raised ``ConsumerError`` or an unexpected exception.

    The message went where the error policy sends it (see the consuming
    docs); the event only tells.

    Attributes:
        error: the exception.
        queue: the queue the message came from, or None when unknown.
        message_id: the message's id, or None.

    """

    kind: ClassVar[str] = "error"
    error: BaseException
    queue: str | None = None
    message_id: str | None = None
