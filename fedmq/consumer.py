"""The public consumer: what it consumes with, what it reports, and how it is controlled.

A facade over the reconnect machine (:mod:`fedmq._reconnect`), the sessions
it opens (made by :mod:`fedmq._consumer_parts`), the queues' flow control
(:mod:`fedmq._queue_control`) and the consumer's start and end (:mod:`fedmq._lifetime`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer

from fedmq._amqp import AMQPConnection
from fedmq._backoff import Attempts
from fedmq._callback import load_callback
from fedmq._connection import Clock, Connect
from fedmq._consumer_parts import (
    PublisherSlot,
    SessionMaker,
    accepted_types,
    callback_name,
    consumer_publisher,
)
from fedmq._deferreds import chain
from fedmq._delivery import Result
from fedmq._executors import callback_consumer
from fedmq._flow import QueueListener, QueueState
from fedmq._health import suspended_refusal
from fedmq._lifecycle import Hooks
from fedmq._lifetime import Lifetime
from fedmq._observers import Observers
from fedmq._queue_control import UNCHANGED, QueueControl
from fedmq._reconnect import STATES, Reconnector, State
from fedmq._session import Session
from fedmq._stats import QUEUE_COUNTERS, ConsumerStats
from fedmq.config import BindingConfig, Config, QueueConfig
from fedmq.events import EventHandler
from fedmq.health import HealthMonitor
from fedmq.message import Message
from fedmq.publisher import Publisher


class Consumer:
    """Consumes the configured queues with one callback, across reconnects.

    Build it, then :meth:`start` it; or let :func:`fedmq.consume` do both.
    A lost connection (the broker restarted, the network failed, heartbeats
    stopped, ``CONNECTION_FORCED``) is reopened with backoff, through the
    config's ``amqp_urls`` in turn, and everything is declared, bound and
    consumed again. Deliveries in flight on the lost connection are never
    acked on the new one: the broker redelivers them.

    Flow control (:meth:`pause`, :meth:`resume`, :meth:`reconfigure`,
    :meth:`add_queue`, :meth:`remove_queue`) is safe from any thread: on the
    reactor thread it returns a Deferred firing once the broker has done it;
    from any other thread, None (see the "Flow control" page).

    Args:
        config: what to connect to, declare and consume.
        callback: the callback (see :func:`fedmq.consume`); defaults to the
            config's ``callback``. It is resolved here, before connecting,
            so a bad path fails at once with :class:`CallbackError`.
        reactor: the reactor to run on; the global one by default.
        clock: what the consumer's timers run on (backoff between connection
            attempts, the timeouts of broker operations, of the drain and of
            ``teardown()``, the error window); the reactor by default.
        connect: how a connection is opened: called with ``(config, reactor,
            url)``, it returns a Deferred firing with a connection that has
            the interface of :class:`fedmq._connection.Connection`. fedmq's own
            AMQP connection by default; tests hand in an in-memory broker.
        on_event: called with each session event (a :class:`fedmq.Event`)
            on the reactor thread; see :meth:`add_event_handler`.
        health: the host's health: a :class:`~fedmq.HealthMonitor` of the
            consumer's own by default (``health_check`` tells it, if set).

    Attributes:
        result: a Deferred that fires with None when the consumer stops
            normally (:meth:`cancel`, or ``HaltConsumer`` with exit code 0),
            and fails with the reason otherwise: :class:`HaltConsumer` with a
            non-zero exit code, :class:`CallbackError` (its ``__cause__`` is
            the callback's exception), :class:`DeclarationError`,
            :class:`AuthenticationFailed`, :class:`ConnectionFailed` (gave up
            reconnecting), :class:`ConsumerCancelled` (the broker cancelled
            the consumer and its queue is gone, with ``passive_declares``) or
            :class:`StopForced`. When :meth:`start` fails, it fails with the
            same reason (a :meth:`cancel` before consuming is a normal stop).
        stats: counters across all connections, for monitoring.
        health: the :class:`~fedmq.HealthMonitor` the consumer follows.

    """

    def __init__(
        self,
        config: Config,
        callback: Any = None,
        *,
        reactor: Any = None,
        clock: Clock | None = None,
        connect: Connect = AMQPConnection.connect,
        on_event: EventHandler | None = None,
        health: HealthMonitor | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        # Any: Deferred.addTimeout wants Twisted's IReactorTime, which a Clock provides.
        self._clock: Any = clock if clock is not None else reactor
        target = callback if callback is not None else config.callback
        #: The callback as loaded (for a class callback, the instance its hooks ran on).
        self.callback, self.is_async = load_callback(target, config.consumer_config, config=config)
        #: The consumer's name, written in the X-Dropped-By header of what it drops or parks.
        self.name = config.name or callback_name(target)
        #: The message types the callback accepts (empty: any).
        self.message_types = accepted_types(config, self.callback)
        self._hooks = Hooks(self.callback, self.name, reactor, self._clock, config.drain_timeout)
        self._queues: tuple[str, ...] = ()
        self.stats = ConsumerStats()
        self._publisher = PublisherSlot(
            lambda: consumer_publisher(
                self.config, self.name, reactor, self._reactor_thread, connect
            )
        )
        # The thread start() ran on: the reactor's, for a reactor handed in.
        self._reactor_thread: int | None = None
        self._observers = Observers(on_event, health)
        self.health = self._observers.health
        self._machine = Reconnector(
            Attempts(config.broker_urls, config.reconnect),
            self._clock,
            lambda url, blocked, unblocked: self._sessions(url, blocked, unblocked),  # noqa: PLW0108
            self._session_opened,
            lambda failure: self._life.give_up(failure),  # noqa: PLW0108 - made below
            self._observers.events.emit,
            self._observers.reopened,
        )
        #: The queues' holds, options and topology, changed while running (any thread).
        self.flow = QueueControl(
            config, reactor, lambda: self._machine.session, self._on_reactor_thread
        )
        self._life = Lifetime(
            self._machine,
            self._hooks,
            self._clock,
            config,
            self._publisher,
            on_error=self._observers.events.error,
        )
        self.result: defer.Deferred[None] = self._life.result
        self._sessions = SessionMaker(self, reactor, self._clock, connect, self._life)
        self._observers.attach(
            self.flow,
            self._machine,
            lambda: self.in_flight,
            self._clock,
            reactor,
            self._on_reactor_thread,
        )

    @property
    def config(self) -> Config:
        """The consumer's config, with the queues added, removed and reconfigured since."""
        return self.flow.config

    @property
    def queues(self) -> tuple[str, ...]:
        """The names of the queues consumed (the broker's for server-named ones), once started."""
        session = self._machine.session
        return session.queues if session is not None and session.queues else self._queues

    def _on_reactor_thread(self) -> bool:
        return self._reactor_thread is None or threading.get_ident() == self._reactor_thread

    @property
    def state(self) -> State:
        """The consumer's state: one of :data:`STATES` ("connecting", "consuming", ...)."""
        return self._machine.state

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` with each session event from now on (see "Flow control").

        On the reactor thread, in order; an event a handler causes comes
        once the current one reached every handler. One that raises is logged.
        """
        self._observers.events.add(handler)

    def remove_event_handler(self, handler: EventHandler) -> None:
        """Stop calling ``handler``; one never added is ignored."""
        self._observers.events.remove(handler)

    def add_state_listener(self, listener: Callable[[State], Any]) -> None:
        """Call ``listener(state)`` on the reactor thread at every change of :attr:`state`."""
        self._observers.events.add_state_listener(listener)  # type: ignore[arg-type]

    @property
    def broker_address(self) -> str | None:
        """The address (``host:port``, no credentials) of the broker consumed from, if any."""
        session = self._machine.session
        connection = session.connection if session is not None else None
        return getattr(connection, "address", None)

    def start(self) -> defer.Deferred[Consumer]:
        """Connect, declare, and start consuming.

        Transient failures (refused or lost connections, timeouts) are
        retried with the config's backoff, through ``amqp_urls`` in turn.

        Returns:
            A Deferred firing with this consumer once it consumes from every
            queue, or failing with :class:`AuthenticationFailed`,
            :class:`DeclarationError`, :class:`CallbackError`, or
            :class:`ConnectionFailed` once ``reconnect.max_attempts`` is spent
            (or when :meth:`cancel` came first). :attr:`result` then fails
            with the same reason, unless a :meth:`cancel` ended it normally.

        """
        self._reactor_thread = threading.get_ident()
        self._observers.start()
        started = chain(self._machine.started).addCallback(lambda _: self)
        self._life.start()
        return started

    def _session_opened(self, session: Session, reconnected: bool) -> None:
        self._queues = session.queues
        if reconnected:
            self.stats.reconnects += 1

    @property
    def publisher(self) -> Publisher:
        """The consumer's :class:`~fedmq.Publisher`, on a connection of its own.

        Its republishes (retry, park, drop) and the callback's publishes go
        through it, so a broker that blocks publishers (a memory alarm) never
        stalls the acks on the consuming connection. Opened on first use,
        closed at the end of the drain. The broker lists its connection under
        the consuming one's ``connection_name`` (else the ``app`` client
        property) followed by " (publisher)".
        """
        return self._publisher.get()

    def publish(
        self,
        message: Message,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> defer.Deferred[None]:
        """Publish through :attr:`publisher`, with confirms; a Deferred (reactor thread).

        Fails at once with :class:`~fedmq.ConsumerSuspended` while suspended
        with ``fail_publish_when_suspended``.
        """
        refused = suspended_refusal(self)
        if refused is not None:
            return defer.fail(refused)
        return self.publisher.publish_deferred(
            message, exchange, routing_key, mandatory=mandatory, timeout=timeout
        )

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled."""
        session = self._machine.session
        return session.in_flight if session is not None else 0

    @property
    def counts(self) -> dict[str, int]:
        """Messages received, acked, requeued, dropped and failed so far, all queues."""
        return {
            name: sum(counters[name] for counters in self.stats.queues.values())
            for name in QUEUE_COUNTERS
        }

    def cancel(self) -> defer.Deferred[None]:
        """Stop gracefully: stop taking deliveries, let callbacks in flight finish.

        Deliveries prefetched but not started go back to the queue; finished
        ones are acked; then the channel and connection close. Callbacks
        still running after ``drain_timeout`` are abandoned (their messages
        left to the broker) and :attr:`result` fails with :class:`StopForced`.
        Safe from any thread.

        Returns:
            A Deferred firing once all of that is done; from one of this
            consumer's own callbacks, one failed with :class:`~fedmq.WouldDeadlock`.

        """
        return self._life.request(
            from_callback=callback_consumer() is self,
            on_reactor_thread=self._on_reactor_thread(),
            reactor=self._reactor,
        )

    def abort(self) -> None:
        """Stop now, without waiting for callbacks in flight.

        The connection is dropped; the broker requeues every unsettled
        delivery. :attr:`result` fails with :class:`StopForced` unless the
        consumer had already ended for another reason.
        """
        self._life.abort()

    def pause(self, queue: str | None = None) -> defer.Deferred[None] | None:
        """Stop consuming ``queue`` (every queue, for None) until :meth:`resume`."""
        return self.flow.pause(queue)

    def resume(self, queue: str | None = None) -> defer.Deferred[None] | None:
        """Consume ``queue`` (every queue, for None) again after :meth:`pause`."""
        return self.flow.resume(queue)

    def queue_states(self) -> dict[str, QueueState]:
        """Each queue's :class:`~fedmq.QueueState`: whether it consumes, and why not."""
        return self.flow.states()

    def add_queue_listener(self, listener: QueueListener) -> None:
        """Call ``listener(queue, consuming, reasons)`` on the reactor thread at every change."""
        self.flow.add_listener(listener)

    def reconfigure(
        self, queue: str, *, prefetch_count: Any = UNCHANGED, consumer_priority: Any = UNCHANGED
    ) -> defer.Deferred[None] | None:
        """Consume ``queue`` again with a new ``prefetch_count`` or ``consumer_priority``."""
        return self.flow.reconfigure(
            queue, prefetch_count=prefetch_count, consumer_priority=consumer_priority
        )

    def add_queue(
        self, queue: str | QueueConfig, bindings: Iterable[BindingConfig | Mapping[str, Any]] = ()
    ) -> defer.Deferred[None] | None:
        """Declare and bind a queue (its retry and dead queues too), and consume it."""
        return self.flow.add_queue(queue, bindings)

    def remove_queue(self, queue: str) -> defer.Deferred[None] | None:
        """Stop consuming ``queue``: unstarted deliveries go back, those in flight settle."""
        return self.flow.remove_queue(queue)


#: The object ``consume()`` hands to Twisted code: :meth:`Consumer.cancel` and
#: :attr:`Consumer.result`.
ConsumerHandle = Consumer

__all__ = ["STATES", "Consumer", "ConsumerHandle", "Result"]
