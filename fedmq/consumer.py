"""The public consumer: what it consumes with, what it reports, and how it ends.

A facade over the reconnect machine (:mod:`fedmq._reconnect`), which opens
one session (:mod:`fedmq._session`) after another; this module builds what
each session hands deliveries to, and drains and ends the consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPConnection
from fedmq._backoff import Attempts
from fedmq._callback import load_callback
from fedmq._connection import Clock, Connect
from fedmq._consumer_parts import (
    SessionMaker,
    accepted_types,
    callback_name,
    consumer_publisher,
)
from fedmq._deferreds import chain
from fedmq._delivery import Result
from fedmq._ending import Ending
from fedmq._error_window import ErrorWindow
from fedmq._events import EventBus, QueueEvents, SlowConsumerWatch, consumed_queues
from fedmq._executors import current_consumer
from fedmq._flow import QueueListener, QueueState
from fedmq._health import host_health_for, refuse_if_suspended
from fedmq._lifecycle import Hooks
from fedmq._queue_control import UNCHANGED, QueueControl
from fedmq._reconnect import STATES, Reconnector, State
from fedmq._session import Session
from fedmq._stats import QUEUE_COUNTERS, ConsumerStats
from fedmq.config import BindingConfig, Config, QueueConfig
from fedmq.events import EventHandler, StateChanged
from fedmq.health import ConsumerSuspended, HealthMonitor
from fedmq.message import Message
from fedmq.publisher import Publisher

log = logging.getLogger("fedmq")


class Consumer:
    """Consumes the configured queues with one callback, across reconnects.

    Build it, then :meth:`start` it; or let :func:`fedmq.consume` do both.
    A lost connection (the broker restarted, the network failed, heartbeats
    stopped, ``CONNECTION_FORCED``) is reopened with backoff, through the
    config's ``amqp_urls`` in turn, and everything is declared, bound and
    consumed again. Deliveries in flight on the lost connection are never
    acked on the new one: the broker redelivers them.

    Flow control (:meth:`pause`, :meth:`resume`, :meth:`reconfigure`,
    :meth:`add_queue`, :meth:`remove_queue`; each kept across reconnects)
    is safe from any thread. On the reactor thread each returns a Deferred
    firing once the broker has done it (failing with
    :class:`DeclarationError` when it refused to declare an added queue);
    from any other thread (a callback's) it hands the change to the reactor
    and returns None. A queue name the consumer does not have raises
    ``ValueError``, and a bad option :class:`ConfigurationError`, in the
    caller's thread. See the "Flow control" page.

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
        health: the host's health; a :class:`~fedmq.HealthMonitor` of the
            consumer's own by default (which ``health_check`` drives, if set).

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
        queues: the names of the queues consumed (the broker's names for
            server-named queues), once started.
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
        self.drain_timeout = config.drain_timeout
        target = callback if callback is not None else config.callback
        #: The callback as loaded (for a class callback, the instance its hooks ran on).
        self.callback, self.is_async = load_callback(target, config.consumer_config, config=config)
        #: The consumer's name, written in the X-Dropped-By header of what it drops or parks.
        self.name = config.name or callback_name(target)
        #: The message types the callback accepts (empty: any).
        self.message_types = accepted_types(config, self.callback)
        self._errors = ErrorWindow.of(config, self._clock.seconds)
        self._hooks = Hooks(self.callback, self.name, reactor, self._clock, self.drain_timeout)
        self._queues: tuple[str, ...] = ()
        self.stats = ConsumerStats()
        self._publisher: Publisher | None = None
        # The thread start() ran on: the reactor's, for a reactor handed in.
        self._reactor_thread: int | None = None
        self._open_connection = connect
        self._events = EventBus(on_event)
        self._machine = Reconnector(
            Attempts(config.broker_urls, config.reconnect),
            self._clock,
            lambda url, blocked, unblocked: self._sessions(url, blocked, unblocked),  # noqa: PLW0108
            self._session_opened,
            lambda failure: self._end.give_up(failure),  # noqa: PLW0108 - made below
            self._events.emit,
            lambda session: consumed_queues(self.flow.holds, session),
        )
        #: The queues' holds, options and topology, changed while running (any thread).
        self.flow = QueueControl(
            config, reactor, lambda: self._machine.session, self._on_reactor_thread
        )
        self._end = Ending(
            self._machine,
            self._hooks,
            self._clock,
            config,
            lambda: self._publisher,
            on_error=self._events.error,
        )
        self.result: defer.Deferred[None] = self._end.result
        self._sessions = SessionMaker(
            self, reactor, self._clock, connect, self._errors, self._hooks, self._end
        )
        self.health = health if health is not None else HealthMonitor()
        self._host = host_health_for(
            self.flow,
            self.health,
            self._clock,
            reactor,
            self._machine.suspend,
            self._events,
            self._on_reactor,
        )
        self._slow = SlowConsumerWatch.of(config, lambda: self.in_flight, self._clock, self._events)
        QueueEvents(
            self.flow.holds,
            self._events.emit,
            lambda: self._host.reason,
            lambda: self._machine.session,
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

    def _on_reactor(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the reactor thread: now if on it (or not started)."""
        if self._on_reactor_thread():
            function(*args)
        else:
            self._reactor.callFromThread(function, *args)

    # --- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The consumer's state: "connecting", "consuming", "reconnecting", "blocked", ...

        One of "connecting", "consuming", "suspended" (consuming, but the host
        is unhealthy: see :attr:`health`), "reconnecting", "blocked",
        "draining" and "stopped".
        """
        return self._machine.state

    def add_event_handler(self, handler: EventHandler) -> None:
        """Call ``handler(event)`` on the reactor thread with each session event from now on.

        Events come in the order things happened; one a handler causes (it
        paused a queue, say) comes after the current one reached every
        handler. A handler that raises is logged and changes nothing else.
        """
        self._events.add(handler)

    def remove_event_handler(self, handler: EventHandler) -> None:
        """Stop calling ``handler``; one never added is ignored."""
        self._events.remove(handler)

    def add_state_listener(self, listener: Callable[[State], Any]) -> None:
        """Call ``listener(state)`` on the reactor thread at every change of :attr:`state`."""

        def on_state(event: object) -> None:
            if isinstance(event, StateChanged):
                listener(event.state)  # type: ignore[arg-type]

        self._events.add(on_state)

    @property
    def broker_address(self) -> str | None:
        """The address (``host:port``, no credentials) of the broker consumed from, if any."""
        session = self._machine.session
        connection = session.connection if session is not None else None
        return getattr(connection, "address", None)

    # --- connecting ------------------------------------------------------------

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
        self._host.start()
        self._slow.start()
        started = chain(self._machine.started).addCallback(lambda _: self)
        self._hooks.set_up().addCallbacks(self._set_up, self._setup_failed)
        return started

    def _set_up(self, _: None) -> None:
        if not self._machine.stopping:
            self._machine.connect()
        elif self.state == "stopped" and self._hooks.has_setup:
            # Stopped while setup() ran: nothing else will call teardown().
            defer.ensureDeferred(self._hooks.tear_down())

    def _setup_failed(self, failure: Failure) -> None:
        if not self._machine.stopping:
            self._end.give_up(failure)

    def _session_opened(self, session: Session, reconnected: bool) -> None:
        self._queues = session.queues
        if reconnected:
            self.stats.reconnects += 1

    # --- publishing ------------------------------------------------------------

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
        if self._publisher is None:
            self._publisher = consumer_publisher(
                self.config, self.name, self._reactor, self._reactor_thread, self._open_connection
            )
        return self._publisher

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

        While the consumer is suspended and ``fail_publish_when_suspended`` is
        set, the Deferred fails at once with :class:`~fedmq.ConsumerSuspended`.
        """
        try:
            refuse_if_suspended(self)
        except ConsumerSuspended:
            return defer.fail()
        return self.publisher.publish_deferred(
            message, exchange, routing_key, mandatory=mandatory, timeout=timeout
        )

    # --- stopping ----------------------------------------------------------

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
            A Deferred that fires once all of that is done (on the reactor
            thread); called from one of this consumer's own callbacks, one
            that has failed with :class:`~fedmq.WouldDeadlock` (the drain
            waits for the callback, so the callback cannot wait for it).

        """
        return self._end.request(
            from_callback=current_consumer.get() is self,
            on_reactor_thread=self._on_reactor_thread(),
            reactor=self._reactor,
        )

    def abort(self) -> None:
        """Stop now, without waiting for callbacks in flight.

        The connection is dropped; the broker requeues every unsettled
        delivery. :attr:`result` fails with :class:`StopForced` unless the
        consumer had already ended for another reason.
        """
        self._end.abort()

    # --- flow control: safe from any thread; see the class docstring ---------

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
