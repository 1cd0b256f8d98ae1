"""Small fakes shared by unit tests: what watches a consumer; a connection and its channels; a
broker's end of a connection.
"""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from fedmq._stats import ConsumerStats


class FakeConsumer:
    """Stands in for fedmq.Consumer: a state, its listeners, its statistics."""

    def __init__(self, state: str = "consuming", queues: tuple[str, ...] = ("orders",)):
        self.state = state
        self.queues = queues
        self.in_flight = 0
        self.stats = ConsumerStats()
        self.listeners: list[Any] = []

    def add_state_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def become(self, state: str) -> None:
        self.state = state
        for listener in list(self.listeners):
            listener(state)


class FakeConsumerService:
    """Stands in for fedmq.service.ConsumerService: what holds the consumer."""

    def __init__(self, consumer: FakeConsumer | None):
        self.consumer = consumer


class FakeChannel:
    """A channel with the interface of fedmq._connection.Channel, recording what it is told.

    Settlements go to ``sent`` as ("ack", tag, multiple), ("nack", tag, requeue) and
    ("reject", tag); publishes to ``published``, each confirmed only when the test fires
    its Deferred in ``confirms``. Declarations succeed.
    """

    def __init__(self) -> None:
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.is_open = True
        self.consumed: list[str] = []
        self.sent: list[tuple[Any, ...]] = []
        self.published: list[tuple[str, str, bytes, Any, bool]] = []
        self.confirms: list[defer.Deferred[None]] = []
        self.confirm_selected = False

    def ack(self, delivery_tag: int, multiple: bool = False) -> None:
        self.sent.append(("ack", delivery_tag, multiple))

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        self.sent.append(("nack", delivery_tag, requeue))

    def reject(self, delivery_tag: int) -> None:
        self.sent.append(("reject", delivery_tag))

    def declare_exchange(self, exchange: Any, passive: bool = False) -> defer.Deferred[None]:
        return defer.succeed(None)

    def declare_queue(self, queue: Any, passive: bool = False) -> defer.Deferred[str]:
        return defer.succeed(queue.name)

    def bind(self, *args: Any) -> defer.Deferred[None]:
        return defer.succeed(None)

    def qos(self, *args: Any) -> defer.Deferred[None]:
        return defer.succeed(None)

    def consume(self, queue: str, on_delivery: Any, on_cancelled: Any) -> defer.Deferred[str]:
        self.consumed.append(queue)
        self.on_delivery, self.on_cancelled = on_delivery, on_cancelled
        return defer.succeed(f"ctag-{queue}")

    def cancel(self, tag: str) -> defer.Deferred[None]:
        return defer.succeed(None)

    def confirm_select(self) -> defer.Deferred[None]:
        self.confirm_selected = True
        return defer.succeed(None)

    def publish(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool = False
    ) -> defer.Deferred[None]:
        self.published.append((exchange, routing_key, body, properties, mandatory))
        d: defer.Deferred[None] = defer.Deferred()
        self.confirms.append(d)
        return d

    def close(self) -> defer.Deferred[None]:
        self.is_open = False
        return defer.succeed(None)


class FakeConnection:
    """A connection with the interface of fedmq._connection.Connection; ``lose`` drops it."""

    def __init__(self, url: str = "amqp://fake/") -> None:
        self.url = url
        self.address = url
        self.is_open = True
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.channels: list[FakeChannel] = []

    on_blocked: Any
    on_unblocked: Any

    def channel(self) -> defer.Deferred[FakeChannel]:
        channel = FakeChannel()
        self.channels.append(channel)
        return defer.succeed(channel)

    def add_blocked_callbacks(self, on_blocked: Any, on_unblocked: Any) -> None:
        self.on_blocked, self.on_unblocked = on_blocked, on_unblocked

    def lose(self, reason: Exception) -> None:
        """The broker or the network drops this connection."""
        self.is_open = False
        for channel in self.channels:
            channel.is_open = False
        self.closed.callback(reason)

    def close(self) -> defer.Deferred[None]:
        if self.is_open:
            self.is_open = False
            self.closed.callback(None)
        return defer.succeed(None)

    def abort(self) -> None:
        self.close()


class BrokerTransport(StringTransport):
    """A client's TCP connection in memory: it records what the client writes and, like
    a real one, reports an abort or a close to the protocol on the next reactor turn.
    """

    def __init__(self, clock: Any, protocol: Any) -> None:
        super().__init__()
        self._clock = clock
        self.protocol = protocol
        self.aborted = False

    def abortConnection(self) -> None:
        if not self.disconnecting:
            self.aborted = True
            self._lose(error.ConnectionAborted())

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self._lose(error.ConnectionDone())

    def _lose(self, reason: Exception) -> None:
        self.disconnecting = True
        self._clock.callLater(0, self.protocol.connectionLost, Failure(reason))


class FakeBroker:
    """The broker's end of the connection fedmq opened on a ``MemoryReactorClock``.

    It speaks AMQP frames (pika's encoding, the same bytes RabbitMQ sends) only when a
    test tells it to, so a test decides what the broker says, and when.
    """

    def __init__(self, reactor: MemoryReactorClock, attempt: int = -1) -> None:
        _host, _port, factory, _timeout, _bind = reactor.tcpClients[attempt]
        self.protocol = factory.buildProtocol(None)
        self.transport = BrokerTransport(reactor, self.protocol)
        self.protocol.makeConnection(self.transport)

    def send(self, *methods: Any, channel: int = 0) -> None:
        """Send AMQP methods (``pika.spec.Connection.Tune(...)`` and the like)."""
        data = b"".join(pika.frame.Method(channel, method).marshal() for method in methods)
        self.protocol.dataReceived(data)

    def send_heartbeat(self) -> None:
        self.protocol.dataReceived(pika.frame.Heartbeat().marshal())

    def open(self, heartbeat: int = 60, mechanisms: str = "PLAIN EXTERNAL") -> None:
        """Answer the client's handshake, proposing ``heartbeat`` in connection.tune."""
        self.send(pika.spec.Connection.Start(mechanisms=mechanisms, locales="en_US"))
        tune = pika.spec.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=heartbeat)
        self.send(tune)
        self.send(pika.spec.Connection.OpenOk())

    def received(self) -> list[Any]:
        """The AMQP methods and heartbeats the client sent so far, in order, decoded."""
        data, frames = self.transport.value(), []
        while data:
            consumed, frame = pika.frame.decode_frame(data)
            if not consumed:
                break
            data = data[consumed:]
            if isinstance(frame, pika.frame.Method):
                frames.append(frame.method)
            elif isinstance(frame, pika.frame.Heartbeat):
                frames.append(frame)
        return frames
