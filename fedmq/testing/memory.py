"""An AMQP 0-9-1 broker in memory, routing as RabbitMQ routes, for fedmq's Consumer to run on.

Hand :meth:`InMemoryBroker.connect` to a :class:`~fedmq.Consumer` as its
``connect=`` and the consumer declares, binds, consumes, settles and
republishes against it exactly as against RabbitMQ, with no socket. Time in
the broker (message TTL, so fedmq's retry delays) runs on a
:class:`twisted.internet.task.Clock` the test advances.

What it models: the default, direct, fanout, topic and headers exchanges
(``x-match`` ``all``, ``any``, ``all-with-x``, ``any-with-x``), bindings
between exchanges, alternate exchanges, mandatory returns, dead-letter
exchanges (on reject without requeue, on expiry, and past a quorum queue's
``x-delivery-limit``), per-queue and per-message TTL, prefetch, redelivery
of what is nacked or left unsettled on a closed channel, and inspection of
all of it. What it does not: durability across restarts, priorities,
queue length limits, streams, exclusive-queue ownership, or permissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from twisted.internet import defer, task

from fedmq.exceptions import PublishReturned
from fedmq.message import Message, Properties
from fedmq.testing._memory_channel import MemoryChannel, MemoryConnection, Subscription
from fedmq.testing._memory_delivery import Deliveries
from fedmq.testing._memory_model import DeadLettered, Model, Stored

__all__ = ["DeadLettered", "InMemoryBroker", "MemoryChannel", "MemoryConnection", "Settled"]


class Settled(NamedTuple):
    """A delivery a client settled: ``how`` is "acked", "requeued" or "rejected"."""

    queue: str
    how: str
    message: Stored


class InMemoryBroker:
    """One virtual host of a broker, in memory.

    Args:
        clock: the broker's time, for TTLs; a new
            :class:`~twisted.internet.task.Clock` by default (see :meth:`advance`).

    Attributes:
        clock: the broker's clock.
        settlements: every ack, requeue and reject, in order.
        returned: ``(exchange, routing_key)`` of each mandatory message no queue took.
        connections: the connections open now.
        attempts: the URL fedmq passed to each connection attempt, refused or
            not, in order (None when it passed none).
        held_closes: "channel" or "connection" for each close request left
            unanswered after :meth:`hold_closes`, in order.

    """

    def __init__(self, clock: task.Clock | None = None) -> None:
        self.clock = clock if clock is not None else task.Clock()
        self.model = Model(self.clock.seconds, self.clock.callLater, self._enqueued)
        self._deliveries = Deliveries(self.model)
        self.settlements: list[Settled] = []
        self.returned: list[tuple[str, str]] = []
        self.connections: list[MemoryConnection] = []
        self._refusals: list[BaseException] = []
        self.attempts: list[str | None] = []
        self.held_closes: list[str] = []
        self.holds_channel_closes = False
        self.holds_connection_closes = False

    # --- the connect seam ---------------------------------------------------

    def connect(self, config: Any = None, reactor: Any = None, url: str | None = None) -> Any:
        """Open a connection: the ``connect=`` callable of a Consumer or a publisher.

        Args:
            config: the config fedmq passes to a connect function; not needed here.
            reactor: the reactor fedmq passes; not needed here.
            url: the broker URL fedmq passes; recorded in :attr:`attempts`.

        Returns:
            A Deferred that has fired with a :class:`MemoryConnection`.

        """
        del config, reactor  # the in-memory broker needs neither
        self.attempts.append(url)
        if self._refusals:
            return defer.fail(self._refusals.pop(0))
        connection = MemoryConnection(self)
        self.connections.append(connection)
        return defer.succeed(connection)

    def refuse_connections(self, error: BaseException, times: int = 1) -> None:
        """Fail the next ``times`` connection attempts with ``error``.

        For instance ``ConnectionFailed(...)``, which a consumer retries with
        backoff on its clock, or ``AuthenticationFailed(...)``, which ends it.
        """
        self._refusals.extend([error] * times)

    def drop_connections(self, reason: str = "CONNECTION_FORCED") -> None:
        """End every connection from the broker's side, as a broker restart does.

        Their unsettled deliveries go back to their queues, redelivered.
        """
        for connection in list(self.connections):
            connection.drop(reason)

    def hold_closes(self, channels: bool = True, connections: bool = True) -> None:
        """Stop answering close requests, as a broker that hangs does.

        From now on a client's ``close()`` of a channel (if ``channels``) or
        of a connection (if ``connections``) returns a Deferred that never
        fires, and what it closes stays open; each such request is recorded
        in :attr:`held_closes`. Only ``abort()``, fedmq dropping the TCP
        connection, still ends a connection. ``hold_closes(False, False)``
        answers closes again.

        Args:
            channels: leave channel closes unanswered.
            connections: leave connection closes unanswered.

        """
        self.holds_channel_closes = channels
        self.holds_connection_closes = connections

    def block(self, reason: str | None) -> None:
        """Block every connection (with ``reason``) or, with None, unblock them."""
        for connection in self.connections:
            connection.blocked(reason)

    # --- setting up, as a test or another application would ---------------

    def declare_exchange(
        self,
        name: str,
        type: str = "topic",  # noqa: A002 - AMQP's name for an exchange's kind
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Declare an exchange (``alternate-exchange`` among its arguments, say)."""
        self.model.declare_exchange(name, type, dict(arguments or {}))

    def declare_queue(self, name: str, arguments: Mapping[str, Any] | None = None) -> str:
        """Declare a queue; returns its name (the broker's own for ``""``)."""
        return self.model.declare_queue(name, dict(arguments or {}))

    def bind(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a queue to an exchange."""
        self.model.bind(queue, exchange, routing_key, dict(arguments or {}))

    def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind exchange ``destination`` to exchange ``source``."""
        self.model.bind(destination, source, routing_key, dict(arguments or {}), to_exchange=True)

    def delete_queue(self, name: str) -> None:
        """Delete a queue with its messages; its consumers are cancelled, as RabbitMQ does."""
        self.model.delete_queue(name)
        self._deliveries.queue_deleted(name)

    # --- publishing ---------------------------------------------------------

    def publish(
        self,
        message: Message,
        exchange: str = "amq.topic",
        routing_key: str | None = None,
        mandatory: bool = False,
    ) -> set[str]:
        """Publish a :class:`~fedmq.Message` as it is; returns the queues it went to.

        Raises:
            PublishReturned: ``mandatory`` and no queue took it.
            KeyError: no such exchange.

        """
        key = message.topic if routing_key is None else routing_key
        return self.publish_data(exchange, key, message.data, message.properties, mandatory)

    def publish_data(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> set[str]:
        """Publish an encoded body with its properties; returns the queues it went to."""
        properties = Properties.from_object(properties)
        properties.headers = dict(properties.headers) if properties.headers else None
        queues = self.model.route(exchange, routing_key, properties.headers)
        if not queues and mandatory:
            self.returned.append((exchange, routing_key))
            raise PublishReturned(
                f"The broker could not route the mandatory message published to exchange "
                f"{exchange!r} with routing key {routing_key!r} to any queue"
            )
        self.model.enqueue(queues, Stored(exchange, routing_key, body, properties))
        return queues

    def routes(
        self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None = None
    ) -> set[str]:
        """The queues a message would go to, without publishing it."""
        return self.model.route(exchange, routing_key, headers)

    # --- time ---------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Move the broker's clock on: messages whose TTL ran out are dead-lettered.

        What the broker has already answered (confirms, returns) reaches its
        clients first, as it would on a real network long before seconds pass.
        """
        run_pending = getattr(self.clock, "run_pending", None)
        if run_pending is not None:
            run_pending()
        self.clock.advance(seconds)

    # --- inspection ---------------------------------------------------------

    @property
    def queues(self) -> list[str]:
        """The names of the queues, in the order declared."""
        return list(self.model.queues)

    @property
    def exchanges(self) -> list[str]:
        """The names of the exchanges, the predeclared ones too."""
        return list(self.model.exchanges)

    @property
    def dead_lettered(self) -> list[DeadLettered]:
        """Every message dead-lettered or discarded: its queue, the reason, and where it went."""
        return list(self.model.dead_lettered)

    def ready(self, queue: str) -> list[Message]:
        """The messages waiting in ``queue``, as a consumer would receive them."""
        return [
            # Built as the consumer builds a delivered message.
            Message._from_delivery(  # noqa: SLF001
                stored.body,
                stored.properties,
                topic=stored.routing_key,
                exchange=stored.exchange,
                delivery_tag=0,
                redelivered=stored.redelivered,
                queue=queue,
            )
            for stored in self.model.queues[queue].messages
        ]

    def unacked(self, queue: str) -> int:
        """Deliveries from ``queue`` not yet settled, on every open channel."""
        return sum(
            1
            for connection in self.connections
            for channel in connection.channels
            for name, _message in channel.unacked.values()
            if name == queue
        )

    def queue_depth(self, queue: str) -> int:
        """Messages in ``queue``: waiting, and delivered but not yet settled."""
        return len(self.model.queues[queue].messages) + self.unacked(queue)

    def settled(self, queue: str, how: str) -> list[Settled]:
        """The deliveries from ``queue`` settled so: "acked", "requeued" or "rejected"."""
        return [s for s in self.settlements if s.queue == queue and s.how == how]

    def consumer_count(self, queue: str) -> int:
        """Consumers on ``queue`` now."""
        return self._deliveries.consumer_count(queue)

    # --- for channels ---------------------------------------------------------

    def record_settlement(self, queue: str, how: str, message: Stored) -> None:
        """A channel settled ``message`` from ``queue``: "acked", "requeued" or "rejected"."""
        self.settlements.append(Settled(queue, how, message))

    def subscribe(self, subscription: Subscription) -> None:
        """A channel consumes from a queue; what waits there is delivered."""
        self._deliveries.subscribe(subscription)

    def unsubscribe(self, tag: str) -> None:
        """A channel cancels the consumer ``tag``."""
        self._deliveries.unsubscribe(tag)

    def channel_closed(self, channel: MemoryChannel) -> None:
        """``channel`` closed: its consumers are gone."""
        self._deliveries.channel_closed(channel)

    def connection_closed(self, connection: MemoryConnection) -> None:
        """``connection`` closed: it no longer counts among the connections."""
        if connection in self.connections:
            self.connections.remove(connection)

    def dead_letter(self, queue: str, message: Stored) -> None:
        """A channel rejected ``message`` from ``queue``: dead-letter it as the queue says."""
        if queue in self.model.queues:
            self.model.dead_letter(self.model.queues[queue], message, "rejected")

    def _enqueued(self, queue: str) -> None:
        self._deliveries.enqueued(queue)

    def pump(self) -> None:
        """Deliver what waits to consumers with room, until nothing more can move.

        Deliveries happen at once, in the caller's turn; a call made while a
        delivery is under way only adds to the work of the one running.
        """
        self._deliveries.pump()
