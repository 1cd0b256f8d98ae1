"""The parts a consumer builds: each session, what it hands deliveries to, its publisher.

:class:`SessionMaker` makes the session of each connection attempt with
the consumer's topology of that moment, and gives it the error policy, the
dispatcher and the executor its deliveries go through.
:func:`consumer_publisher` makes the consumer's own publisher.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from fedmq._connection import Channel, Clock, Connect
from fedmq._dispatch import Dispatcher
from fedmq._error_window import ErrorWindow
from fedmq._executors import executor_for
from fedmq._lifetime import Lifetime
from fedmq._policy import ErrorPolicy
from fedmq._queue_control import QueueControl
from fedmq._session import Session
from fedmq.config import Config
from fedmq.message import Properties
from fedmq.publisher import Publisher


class SessionMaker:
    """Makes a consumer's sessions, one per connection attempt.

    Args:
        consumer: the consumer: its ``callback``, ``is_async``, ``name``,
            ``message_types``, ``stats``, ``flow`` (its queues, options and
            holds of now) and ``publisher``; a callback publishes through it.
        reactor: the reactor.
        clock: what timeouts run on.
        connect: opens a connection.
        end: how it ends (a halt, a consumer error), and its hooks (the
            event loop of an async callback).

    """

    def __init__(
        self,
        consumer: Any,
        reactor: Any,
        clock: Clock,
        connect: Connect,
        end: Lifetime,
    ) -> None:
        self._consumer = consumer
        self._flow: QueueControl = consumer.flow
        self._reactor = reactor
        self._clock = clock
        self._connect = connect
        self._errors = ErrorWindow.of(self._flow.config, clock.seconds)
        self._end = end

    def __call__(
        self, url: str, on_blocked: Callable[[str], None], on_unblocked: Callable[[], None]
    ) -> Session:
        """The session for ``url``, opening the consumer's topology of now."""
        return Session(
            url,
            on_blocked,
            on_unblocked,
            config=self._flow.config,
            reactor=self._reactor,
            clock=self._clock,
            connect=self._connect,
            policy_for=self._error_policy,
            dispatcher_for=self._dispatcher,
            holds=self._flow.holds,
            topology=self._flow,
        )

    def _error_policy(self, retry_queues: list[str]) -> ErrorPolicy:
        """Where retried, parked and dropped messages go, given the retry queues declared."""
        config = self._flow.config
        return ErrorPolicy(
            name=self._consumer.name,
            retry=config.retry,
            retry_queues=retry_queues,
            drop_exchange=config.drop_exchange,
            message_types=self._consumer.message_types,
            drop_invalid_messages=config.drop_invalid_messages,
            publish=self._republish,
        )

    def _republish(
        self, exchange: str, routing_key: str, data: bytes, properties: Properties
    ) -> defer.Deferred[None]:
        """Publish a retried, parked or dropped copy, confirmed and mandatory."""
        publisher: Publisher = self._consumer.publisher
        return publisher.publish_data(exchange, routing_key, data, properties, mandatory=True)

    def _dispatcher(
        self, channel: Channel, policy: ErrorPolicy, on_queue_missing: Callable[[Exception], None]
    ) -> Dispatcher:
        return Dispatcher(
            channel,
            self._make_executor,
            self._end.halted,
            self._end.failed,
            self._consumer.stats,
            policy,
            on_queue_missing=on_queue_missing,
            errors=self._errors,
        )

    def _make_executor(self, on_results: Any) -> Any:
        consumer = self._consumer
        return executor_for(
            consumer.callback,
            consumer.is_async,
            self._flow.config,
            self._reactor,
            on_results,
            consumer,
            loop=self._end.event_loop,
            errors=self._errors,
        )


def consumer_publisher(
    config: Config, name: str, reactor: Any, reactor_thread: int | None, opener: Connect
) -> Publisher:
    """The publisher of the consumer ``name``, on a connection of its own.

    The broker lists its connection under the consuming one's
    ``connection_name`` (else the ``app`` client property, else ``name``)
    followed by " (publisher)".
    """
    from twisted.internet import reactor as global_reactor

    # On the global reactor, the publisher takes each caller's form:
    # a callback's worker thread blocks, the reactor gets a Deferred.
    given = None if reactor is global_reactor else reactor
    # Its connection is told apart from the consuming one on the broker.
    properties = dict(config.client_properties)
    shown = properties.get("connection_name") or properties.get("app") or name
    properties["connection_name"] = f"{shown} (publisher)"
    return Publisher(
        config.replace(client_properties=properties),
        reactor=given,
        connect=opener,
        reactor_thread=None if given is None else reactor_thread,
    )


def callback_name(callback: Any) -> str:
    """``module:object`` for a callback, as a config file would name it."""
    if isinstance(callback, str):
        return callback
    target = callback if hasattr(callback, "__qualname__") else type(callback)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else "fedmq"


def accepted_types(config: Config, callback: Any) -> tuple[str, ...]:
    """The message types a callback accepts: the config's, else its own ``message_types``."""
    declared = getattr(callback, "message_types", None) or ()
    return config.message_types or ((declared,) if isinstance(declared, str) else tuple(declared))


class PublisherSlot:
    """Where a consumer's publisher is made on first use, and found at the end."""

    def __init__(self, make: Callable[[], Publisher]) -> None:
        self._make = make
        self.publisher: Publisher | None = None

    def get(self) -> Publisher:
        """The publisher, made now if it was not yet."""
        if self.publisher is None:
            self.publisher = self._make()
        return self.publisher
