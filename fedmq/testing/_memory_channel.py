"""Connections and channels of the in-memory broker, in fedmq's AMQP interface.

They offer what :mod:`fedmq._amqp`'s connection and channel offer to the
consumer and the publisher, with the same Deferreds and the same fedmq
exceptions, so fedmq's own code runs on them unchanged.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq.config import ExchangeConfig, QueueConfig
from fedmq.exceptions import (
    BrokerError,
    ConnectionFailed,
    PublishConnectionLost,
    PublishReturned,
)
from fedmq.message import Properties
from fedmq.testing._memory_model import Stored

if TYPE_CHECKING:
    from fedmq.testing.memory import InMemoryBroker

DeliveryHandler = Callable[[int, bool, str, str, Any, bytes], None]


class Subscription(NamedTuple):
    """A consumer on a queue: the channel it is on and where deliveries go."""

    channel: MemoryChannel
    tag: str
    queue: str
    on_delivery: DeliveryHandler
    on_cancelled: Callable[[], None]
    #: Its prefetch count: the channel's ``basic.qos`` when it began (0: no limit).
    prefetch: int = 0
    #: Its ``x-priority``: consumers with room and a higher one get the messages first.
    priority: int = 0


class MemoryChannel:
    """One channel on the in-memory broker."""

    def __init__(self, broker: InMemoryBroker, connection: MemoryConnection) -> None:
        self._broker = broker
        self._connection = connection
        self.closed: defer.Deferred[BrokerError | None] = defer.Deferred()
        self.is_open = True
        self.prefetch_count = 0
        #: delivery tag -> (queue, message) for deliveries not yet settled.
        self.unacked: dict[int, tuple[str, Stored]] = {}
        # delivery tag -> the consumer it went to, and each consumer's unsettled count:
        # RabbitMQ's prefetch (basic.qos without global) limits each consumer alone.
        self._consumer_of: dict[int, str] = {}
        self._unsettled: Counter[str] = Counter()
        self._tags = itertools.count(1)
        self._consumer_tags = itertools.count(1)
        # Bound as the real channel binds it: the dispatcher calls channel.ack.
        self.ack: Callable[[int, bool], None] = self._ack

    # --- declaring -----------------------------------------------------------

    def _do(self, operation: Callable[[], Any]) -> defer.Deferred[Any]:
        """Run one broker operation; a refusal closes the channel, as RabbitMQ's does."""
        if not self.is_open:
            return defer.fail(BrokerError("The channel is closed", 504, "CHANNEL_ERROR"))
        try:
            return defer.succeed(operation())
        except BrokerError as refusal:
            self.lose(refusal)
            return defer.fail(refusal)

    def declare_exchange(
        self, exchange: ExchangeConfig, passive: bool = False
    ) -> defer.Deferred[Any]:
        model = self._broker.model
        return self._do(
            lambda: model.declare_exchange(
                exchange.name, exchange.type, exchange.arguments, passive
            )
        )

    def declare_queue(self, queue: QueueConfig, passive: bool = False) -> defer.Deferred[str]:
        return self._do(
            lambda: self._broker.model.declare_queue(queue.name, queue.arguments, passive)
        )

    def queue_counts(self, queue: str) -> defer.Deferred[tuple[int, int]]:
        def counts() -> tuple[int, int]:
            self._broker.model.declare_queue(queue, {}, passive=True)
            return len(self._broker.model.queues[queue].messages), self._broker.consumer_count(
                queue
            )

        return self._do(counts)

    def bind(
        self, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> defer.Deferred[Any]:
        return self._do(lambda: self._broker.model.bind(queue, exchange, routing_key, arguments))

    def qos(self, prefetch_count: int, prefetch_size: int = 0) -> defer.Deferred[Any]:
        del prefetch_size  # RabbitMQ implements no size limit, so neither does the double
        self.prefetch_count = prefetch_count
        return defer.succeed(None)

    # --- consuming -----------------------------------------------------------

    def consume(
        self,
        queue: str,
        on_delivery: DeliveryHandler,
        on_cancelled: Callable[[], None],
        arguments: Mapping[str, Any] | None = None,
    ) -> defer.Deferred[str]:
        priority = int((arguments or {}).get("x-priority", 0))

        def subscribe() -> str:
            self._broker.model.declare_queue(queue, {}, passive=True)
            tag = f"ctag-{id(self)}-{next(self._consumer_tags)}"
            self._broker.subscribe(
                Subscription(
                    self, tag, queue, on_delivery, on_cancelled, self.prefetch_count, priority
                )
            )
            return tag

        return self._do(subscribe)

    def cancel(self, consumer_tag: str) -> defer.Deferred[Any]:
        self._broker.unsubscribe(consumer_tag)
        return defer.succeed(None)

    def has_room(self, subscription: Subscription) -> bool:
        """Whether ``subscription`` may take one more message under its prefetch count."""
        return self.is_open and (
            subscription.prefetch == 0 or self._unsettled[subscription.tag] < subscription.prefetch
        )

    def deliver(self, subscription: Subscription, message: Stored) -> None:
        tag = next(self._tags)
        self.unacked[tag] = (subscription.queue, message)
        self._consumer_of[tag] = subscription.tag
        self._unsettled[subscription.tag] += 1
        subscription.on_delivery(
            tag,
            message.redelivered,
            message.exchange,
            message.routing_key,
            Properties.from_object(message.properties),
            message.body,
        )

    def get(self, queue: str) -> defer.Deferred[tuple[int, bool, str, str, Any, bytes, int] | None]:
        def take() -> tuple[int, bool, str, str, Any, bytes, int] | None:
            self._broker.model.declare_queue(queue, {}, passive=True)
            messages = self._broker.model.queues[queue].messages
            if not messages:
                return None
            message = messages.popleft()
            tag = next(self._tags)
            self.unacked[tag] = (queue, message)
            properties = Properties.from_object(message.properties)
            return (
                tag,
                message.redelivered,
                message.exchange,
                message.routing_key,
                properties,
                message.body,
                len(messages),
            )

        return self._do(take)

    # --- settling ------------------------------------------------------------

    def _take(self, delivery_tag: int, multiple: bool) -> list[tuple[str, Stored]]:
        if not self.is_open:
            # As the AMQP client refuses a settlement on a closed channel: its tags are dead.
            raise BrokerError(
                f"Cannot settle delivery tag {delivery_tag}: the channel is closed",
                504,
                "CHANNEL_ERROR",
            )
        tags = [t for t in self.unacked if t <= delivery_tag] if multiple else [delivery_tag]
        if any(tag not in self.unacked for tag in tags):
            self.lose(
                BrokerError(f"unknown delivery tag {delivery_tag}", 406, "PRECONDITION_FAILED")
            )
            return []
        for tag in tags:
            consumer = self._consumer_of.pop(tag, None)
            if consumer is not None:
                self._unsettled[consumer] -= 1
        return [self.unacked.pop(tag) for tag in tags]

    def _ack(self, delivery_tag: int, multiple: bool = False) -> None:
        for queue, message in self._take(delivery_tag, multiple):
            self._broker.record_settlement(queue, "acked", message)
        self._broker.pump()

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        for queue, message in self._take(delivery_tag, False):
            self._broker.record_settlement(queue, "requeued" if requeue else "rejected", message)
            if requeue:
                self._broker.model.give_back(queue, message)
            else:
                self._broker.dead_letter(queue, message)
        self._broker.pump()

    def reject(self, delivery_tag: int) -> None:
        self.nack(delivery_tag, requeue=False)

    # --- publishing ----------------------------------------------------------

    def confirm_select(self) -> defer.Deferred[Any]:
        return defer.succeed(None)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> defer.Deferred[None]:
        if not self.is_open:
            return defer.fail(BrokerError("The channel is closed", 504, "CHANNEL_ERROR"))
        if exchange not in self._broker.model.exchanges:
            refusal = _no_such_exchange(exchange)
            self.lose(refusal)
            return defer.fail(refusal)
        try:
            self._broker.publish_data(exchange, routing_key, body, properties, mandatory)
        except PublishReturned as returned:
            return defer.fail(returned)
        return defer.succeed(None)

    def track_confirms(
        self,
        on_confirm: Callable[[bool, int, bool], None],
        on_return: Callable[[str | None], None],
    ) -> defer.Deferred[Any]:
        """Confirms reported to a publisher's own bookkeeping, as the real channel does."""
        self._on_confirm, self._on_return = on_confirm, on_return
        self._publish_tags = itertools.count(1)
        return defer.succeed(None)

    def send(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> None:
        """Publish; the return (if any) and the confirm follow on the broker's clock.

        Raises:
            PublishConnectionLost: the channel is closed.

        """
        if not self.is_open:
            raise PublishConnectionLost(
                f"The channel to publish to exchange {exchange!r} is closed"
            )
        tag = next(self._publish_tags)
        clock = self._broker.clock
        # After send() returns, as a broker's frames come: at the clock's next
        # turn (a ThreadedClock runs such calls without its time moving on).
        call_from_thread = getattr(clock, "callFromThread", None)

        def later(f: Callable[..., None], *args: Any) -> None:
            if call_from_thread is not None:
                call_from_thread(f, *args)
            else:
                clock.callLater(0, f, *args)

        def confirm(result: Any) -> None:
            if isinstance(result, Failure):
                result.trap(PublishReturned)
                later(self._on_return, properties.message_id)
            later(self._on_confirm, True, tag, False)

        if exchange not in self._broker.model.exchanges:
            # The broker closes the channel in answer to the publish: after send() returns.
            later(self.lose, _no_such_exchange(exchange))
            return
        self.publish(exchange, routing_key, body, properties, mandatory).addBoth(confirm)

    # --- closing -------------------------------------------------------------

    def close(self) -> defer.Deferred[Any]:
        if self.is_open and self._broker.holds_channel_closes:
            self._broker.held_closes.append("channel")
            return defer.Deferred()  # never answered
        if self.is_open:
            self.lose(None)
        return defer.succeed(None)

    def lose(self, reason: BrokerError | None) -> None:
        """Close (``reason`` from the broker, or None), as the broker closes a channel.

        Its consumers are cancelled and its unsettled deliveries go back to their queues.
        """
        if not self.is_open:
            return
        self.is_open = False
        self._broker.channel_closed(self)
        unacked, self.unacked = self.unacked, {}
        self._consumer_of.clear()
        self._unsettled.clear()
        # Latest first: each goes back to the head, so they end up in delivery order.
        for _tag, (queue, message) in sorted(unacked.items(), reverse=True):
            self._broker.model.give_back(queue, message)
        if not self.closed.called:
            self.closed.callback(reason)
        self._broker.pump()


def _no_such_exchange(exchange: str) -> BrokerError:
    """What RabbitMQ closes a channel with when a publish names no exchange it has."""
    text = f"NOT_FOUND - no exchange '{exchange}' in vhost '/'"
    return BrokerError(f"Publishing to exchange {exchange!r} failed: 404 {text}", 404, text)


class MemoryConnection:
    """One connection to the in-memory broker.

    Attributes:
        closed: fires with None when fedmq closed it, or with
            :class:`~fedmq.ConnectionFailed` when the broker dropped it.
        address: where it is connected, for messages.
        aborted: whether fedmq dropped it with ``abort()`` rather than closing it.

    """

    def __init__(self, broker: InMemoryBroker) -> None:
        self._broker = broker
        self.address = "in-memory broker"
        self.closed: defer.Deferred[Exception | None] = defer.Deferred()
        self.is_open = True
        self.aborted = False
        self.channels: list[MemoryChannel] = []
        self._blocked: list[tuple[Callable[[str], None], Callable[[], None]]] = []

    def channel(self) -> defer.Deferred[MemoryChannel]:
        if not self.is_open:
            return defer.fail(ConnectionFailed("The connection to the in-memory broker is closed"))
        channel = MemoryChannel(self._broker, self)
        self.channels.append(channel)
        return defer.succeed(channel)

    def close(self) -> defer.Deferred[Exception | None]:
        if self.is_open and self._broker.holds_connection_closes:
            self._broker.held_closes.append("connection")
            return defer.Deferred()  # never answered
        self._end(None)
        return defer.succeed(None)

    def abort(self) -> None:
        if self.is_open:
            self.aborted = True
        self._end(None)

    def drop(self, reason: str) -> None:
        """The broker ends the connection (a restart, a forced close)."""
        self._end(ConnectionFailed(f"The in-memory broker closed the connection: {reason}"))

    def _end(self, reason: Exception | None) -> None:
        if not self.is_open:
            return
        self.is_open = False
        for channel in self.channels:
            # The connection ends its channels, as pika's does.
            channel.lose(None)
        self._broker.connection_closed(self)
        if not self.closed.called:
            self.closed.callback(reason)

    def add_blocked_callbacks(
        self, on_blocked: Callable[[str], None], on_unblocked: Callable[[], None]
    ) -> None:
        self._blocked.append((on_blocked, on_unblocked))

    def blocked(self, reason: str | None) -> None:
        """Tell the client the broker blocked (a reason) or unblocked (None) it."""
        for on_blocked, on_unblocked in self._blocked:
            if reason is None:
                on_unblocked()
            else:
                on_blocked(reason)
