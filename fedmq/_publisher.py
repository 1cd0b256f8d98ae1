"""Publishing with confirms, on a channel of its own."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPChannel, AMQPConnection
from fedmq.config import Config
from fedmq.exceptions import PublishConnectionLost, PublishTimeout
from fedmq.message import Message, Properties


class Publisher:
    """Publishes messages with publisher confirms on one dedicated channel.

    Args:
        config: connection settings, and the default exchange and topic prefix.
        reactor: the reactor to run on.
        connection: an open connection to publish on (a consumer's own); when
            None the publisher opens, and owns, one of its own.
    """

    def __init__(self, config: Config, reactor: Any, connection: AMQPConnection | None = None):
        self._config = config
        self._reactor = reactor
        self._connection = connection
        self._owns_connection = connection is None
        self._channel: AMQPChannel | None = None
        # Publishes waiting, in call order, for the channel to open.
        self._waiters: list[defer.Deferred[Any]] = []

    async def _open_channel(self) -> AMQPChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        if self._connection is None or not self._connection.is_open:
            if not self._owns_connection:
                raise PublishConnectionLost(
                    "The consumer's connection to the broker is closed; nothing was published"
                )
            self._connection = await AMQPConnection.connect(self._config, self._reactor)
        channel = await self._connection.channel()
        await channel.confirm_select()
        self._channel = channel
        return channel

    def publish(
        self,
        message: Message,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> defer.Deferred[None]:
        """Publish and fire once the broker confirms.

        Fails with :class:`~fedmq.PublishNacked`, :class:`~fedmq.PublishReturned`
        (``mandatory=True`` and no queue matched) or :class:`~fedmq.PublishTimeout`.
        """
        if exchange is None:
            exchange = self._config.publish_exchange
        if routing_key is None:
            routing_key = self._config.topic_prefix + message.topic
        return self.publish_data(
            exchange,
            routing_key,
            message.data,
            message.properties,
            mandatory=mandatory,
            timeout=timeout,
            label=f"message {message.id}",
        )

    def publish_data(
        self,
        exchange: str,
        routing_key: str,
        data: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
        label: str | None = None,
    ) -> defer.Deferred[None]:
        """Publish a body already encoded, with its properties, as :meth:`publish` does."""
        ready = self._channel if self._channel is not None and self._channel.is_open else None
        d: defer.Deferred[Any]
        if ready is not None:
            d = ready.publish(exchange, routing_key, data, properties, mandatory)
        else:
            # Each publish waits its turn: when the channel is open, the
            # waiters are fired in the order they came, keeping message order.
            d = defer.Deferred()
            self._waiters.append(d)
            if len(self._waiters) == 1:
                defer.ensureDeferred(self._open_channel()).addBoth(self._opened)
            d.addCallback(
                lambda channel: channel.publish(exchange, routing_key, data, properties, mandatory)
            )

        def timed_out(failure: Failure) -> Failure:
            failure.trap(defer.TimeoutError)
            what = label or f"message {properties.message_id}"
            return Failure(
                PublishTimeout(
                    f"The broker did not confirm {what} to exchange "
                    f"{exchange!r} within {timeout:g} s"
                )
            )

        d.addTimeout(timeout, self._reactor)
        d.addErrback(timed_out)
        return d

    def _opened(self, result: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)

    def close(self) -> defer.Deferred[Any]:
        """Close the channel, and the connection when this publisher owns it."""
        channel, self._channel = self._channel, None
        if self._owns_connection and self._connection is not None:
            connection, self._connection = self._connection, None
            return connection.close()
        if channel is not None:
            return channel.close()
        return defer.succeed(None)
