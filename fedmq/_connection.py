"""The interface a consumer needs of a broker connection (and of a clock), as Protocols.

:class:`fedmq.Consumer` opens its connections with a ``connect`` function,
:meth:`fedmq._amqp.AMQPConnection.connect` by default. Anything else handed
to ``Consumer(..., connect=...)`` (an in-memory broker for tests, say) gives
back, for ``(config, reactor, url)``, a Deferred firing with an object that
has the attributes of :class:`Connection`, whose channels have those of
:class:`Channel`. Every method runs on the reactor thread; each Deferred
fires there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet import defer

from fedmq.config import Config, ExchangeConfig, QueueConfig
from fedmq.exceptions import BrokerError
from fedmq.message import Properties

#: Called for each delivery: (delivery_tag, redelivered, exchange, routing_key, properties, body).
DeliveryHandler = Callable[[int, bool, str, str, Any, bytes], None]


class Channel(Protocol):
    """One AMQP channel: declarations, consuming, settling and publishing."""

    #: Fires with None when fedmq closed the channel, or with the broker's
    #: :class:`~fedmq.exceptions.BrokerError` when the broker closed it.
    closed: defer.Deferred[BrokerError | None]
    #: Acknowledge ``delivery_tag`` (and all before it when ``multiple``).
    ack: Callable[[int, bool], None]

    @property
    def is_open(self) -> bool: ...

    def declare_exchange(
        self, exchange: ExchangeConfig, passive: bool = False
    ) -> defer.Deferred[Any]: ...

    def declare_queue(self, queue: QueueConfig, passive: bool = False) -> defer.Deferred[str]: ...

    def bind(
        self, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> defer.Deferred[Any]: ...

    def qos(self, prefetch_count: int, prefetch_size: int = 0) -> defer.Deferred[Any]: ...

    def consume(
        self,
        queue: str,
        on_delivery: DeliveryHandler,
        on_cancelled: Callable[[], None],
        arguments: Mapping[str, Any] | None = None,
    ) -> defer.Deferred[str]:
        """Start consuming; fires with the consumer tag. ``on_cancelled``: the broker cancelled.

        ``arguments`` (``x-priority``) are passed only when there are some.
        """

    def cancel(self, consumer_tag: str) -> defer.Deferred[Any]: ...

    def nack(self, delivery_tag: int, requeue: bool = True) -> None: ...

    def reject(self, delivery_tag: int) -> None: ...

    def confirm_select(self) -> defer.Deferred[Any]: ...

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> defer.Deferred[None]: ...

    def close(self) -> defer.Deferred[Any]: ...


class Connection(Protocol):
    """One connection to the broker."""

    #: The broker's address, for messages (no credentials).
    address: str
    #: Fires with None when fedmq closed the connection, or with the reason
    #: (a :class:`~fedmq.exceptions.ConnectionFailed`) when it was lost.
    closed: defer.Deferred[Exception | None]

    @property
    def is_open(self) -> bool: ...

    def channel(self) -> defer.Deferred[Any]:
        """Open a channel; fires with a :class:`Channel`."""

    def close(self) -> defer.Deferred[Exception | None]: ...

    def abort(self) -> None:
        """Drop the connection at once, without the closing handshake."""

    def add_blocked_callbacks(
        self, on_blocked: Callable[[str], None], on_unblocked: Callable[[], None]
    ) -> None: ...


class Clock(Protocol):
    """What a consumer's timers run on: the reactor, or a ``task.Clock`` in tests."""

    def seconds(self) -> float: ...

    def callLater(
        self,
        delay: float,
        callable: Callable[..., Any],  # noqa: A002 - Twisted's own parameter name
        *args: Any,
        **kw: Any,
    ) -> Any: ...


#: How a consumer opens a connection: ``connect(config, reactor, url)``.
Connect = Callable[[Config, Any, str], "defer.Deferred[Any]"]


if TYPE_CHECKING:
    from fedmq._amqp import AMQPChannel, AMQPConnection

    def _amqp_connection_is_a_connection(connection: AMQPConnection) -> Connection:
        return connection  # mypy checks that the real thing has the interface

    def _amqp_channel_is_a_channel(channel: AMQPChannel) -> Channel:
        return channel
