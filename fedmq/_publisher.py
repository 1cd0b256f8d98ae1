"""Publishing with confirms, on a channel of its own.

Before anything is sent, a message is put in its wire form here: the topic
prefix joined with a dot, ``publish_priority`` for a message that sets no
priority, what fedora-messaging's consumers need on a JSON object body, and
the ``publish_format`` check. A fedora-messaging message is validated and
sent with the properties its class built.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq import _fedora, _tracing
from fedmq._amqp import AMQPChannel, AMQPConnection
from fedmq._connector import connect_any
from fedmq.config import Config
from fedmq.exceptions import PublishConnectionLost, PublishFormatError, PublishTimeout
from fedmq.message import Message, Properties

log = logging.getLogger("fedmq")

#: Topics already warned about for a non-object JSON body: one warning each per process.
_warned_topics: set[str] = set()
_warned_lock = threading.Lock()


def wire_form(message: Any, config: Config) -> tuple[str, bytes, Properties]:
    """``(routing key, body, properties)`` for ``message`` as ``config`` publishes it.

    Args:
        message: a :class:`~fedmq.Message`, or a fedora-messaging message.
        config: the ``topic_prefix``, ``publish_priority`` and
            ``publish_format`` to apply.

    Raises:
        PublishFormatError: with ``publish_format = "fedora-messaging"``, the
            body is not a JSON object; or a fedora-messaging message fails its schemas.
        TypeError: ``message`` is neither kind of message.

    """
    if isinstance(message, Message):
        topic, data = message.topic, message.data
        problem = _fedora.format_problem(message)
        if problem is not None and config.publish_format == "fedora-messaging":
            raise PublishFormatError(
                f"Message {message.id} (topic {topic!r}) was not published: {problem}, and "
                f'publish_format is "fedora-messaging", whose consumers drop such messages'
            )
        if problem is not None and _fedora.is_json_type(message.properties.content_type):
            _warn_once(topic, problem)
        properties = _fedora.add_compatibility_headers(message) or message.properties
    elif _fedora.is_schema_message(message):
        topic, data, properties = _fedora.wire_form(message, config.publish_priority)
    else:
        raise TypeError(
            f"publish() takes a fedmq.Message or a fedora-messaging Message, "
            f"not {type(message).__name__}"
        )
    if properties.priority is None and config.publish_priority is not None:
        if properties is message.properties:
            properties = Properties.from_object(properties)  # the message stays as it was
        properties.priority = config.publish_priority
    return _fedora.join_topic(config.topic_prefix, topic), data, properties


def _warn_once(topic: str, problem: str) -> None:
    with _warned_lock:
        if topic in _warned_topics:
            return
        _warned_topics.add(topic)
    log.warning(
        "Publishing to topic %r a message fedora-messaging consumers will drop (%s); "
        'set publish_format = "fedora-messaging" to refuse such messages instead',
        topic,
        problem,
    )


class Publisher:
    """Publishes messages with publisher confirms on one dedicated channel.

    Args:
        config: connection settings, and the default exchange and topic prefix.
        reactor: the reactor to run on.
        connection: an open connection to publish on (a consumer's own); when
            None the publisher opens, and owns, one of its own.

    """

    def __init__(
        self, config: Config, reactor: Any, connection: AMQPConnection | None = None
    ) -> None:
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
            self._connection = await connect_any(self._config, self._reactor)
        channel = await self._connection.channel()
        await channel.confirm_select()
        self._channel = channel
        return channel

    def publish(
        self,
        message: Message | Any,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> defer.Deferred[None]:
        """Publish and fire once the broker confirms.

        ``message`` is a :class:`~fedmq.Message` or a fedora-messaging message;
        see :func:`wire_form` for what is sent.

        Fails with :class:`~fedmq.PublishFormatError` (nothing sent),
        :class:`~fedmq.PublishNacked`, :class:`~fedmq.PublishReturned`
        (``mandatory=True`` and no queue matched) or :class:`~fedmq.PublishTimeout`.
        """
        if exchange is None:
            exchange = self._config.publish_exchange
        try:
            prefixed, data, properties = wire_form(message, self._config)
        except (PublishFormatError, TypeError) as error:
            return defer.fail(error)
        if routing_key is None:
            routing_key = prefixed
        return self.publish_data(
            exchange,
            routing_key,
            data,
            properties,
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
        sending, properties = _tracing.start_send(
            exchange, routing_key, properties, self._connection, self._config
        )
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
        return _tracing.end_send(sending, d)

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
