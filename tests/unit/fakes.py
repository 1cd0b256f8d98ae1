"""Small fakes shared by unit tests: what watches a consumer; a broker's end of a connection."""

from __future__ import annotations

from typing import Any

import pika.frame
import pika.spec
from twisted.internet import error
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
