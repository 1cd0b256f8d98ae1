"""The public consumer: what it consumes with, what it reports, and how it ends.

A facade over the reconnect machine (:mod:`fedmq._reconnect`), which opens
one session (:mod:`fedmq._session`) after another; this module builds what
each session hands deliveries to, and drains and ends the consumer.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPConnection
from fedmq._backoff import Attempts
from fedmq._callback import load_callback
from fedmq._connection import Channel, Clock, Connect
from fedmq._deferreds import BoundedCloses, chain
from fedmq._delivery import Result
from fedmq._dispatch import Dispatcher
from fedmq._error_window import ErrorCount, ErrorWindow, log_consumer_error, too_many_errors
from fedmq._executors import executor_for
from fedmq._lifecycle import Hooks
from fedmq._policy import ErrorPolicy
from fedmq._reconnect import STATES, Reconnector, State
from fedmq._session import Session
from fedmq._stats import QUEUE_COUNTERS, ConsumerStats
from fedmq.config import Config
from fedmq.exceptions import ConnectionFailed, HaltConsumer, StopForced
from fedmq.message import Message, Properties
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

    """

    def __init__(
        self,
        config: Config,
        callback: Any = None,
        *,
        reactor: Any = None,
        clock: Clock | None = None,
        connect: Connect = AMQPConnection.connect,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.config = config
        self._reactor = reactor
        # Any: Deferred.addTimeout wants Twisted's IReactorTime, which a Clock provides.
        self._clock: Any = clock if clock is not None else reactor
        self.drain_timeout = config.drain_timeout
        target = callback if callback is not None else config.callback
        #: The callback as loaded (for a class callback, the instance its hooks ran on).
        self.callback, self.is_async = load_callback(target, config.consumer_config, config=config)
        #: The consumer's name, written in the X-Dropped-By header of what it drops or parks.
        self.name = config.name or _callback_name(target)
        declared = getattr(self.callback, "message_types", None) or ()
        self._message_types: tuple[str, ...] = config.message_types or (
            (declared,) if isinstance(declared, str) else tuple(declared)
        )
        self._errors = ErrorWindow.of(config, self._clock.seconds)
        self._hooks = Hooks(self.callback, self.name, reactor, self._clock, self.drain_timeout)
        self.result: defer.Deferred[None] = defer.Deferred()
        self.queues: tuple[str, ...] = ()
        self.stats = ConsumerStats()
        self._publisher: Publisher | None = None
        # The thread start() ran on: the reactor's, for a reactor handed in.
        self._reactor_thread: int | None = None
        self._open_connection = connect
        self._machine = Reconnector(
            Attempts(config.broker_urls, config.reconnect),
            self._clock,
            functools.partial(
                Session,
                config=config,
                reactor=reactor,
                clock=self._clock,
                connect=connect,
                policy_for=self._error_policy,
                dispatcher_for=self._dispatcher,
            ),
            self._session_opened,
            self._give_up,
        )
        # Why the consumer ends (None: normally), and the drain in progress.
        self._outcome: Failure | None = None
        self._ending: defer.Deferred[None] | None = None

    # --- state ---------------------------------------------------------------

    @property
    def state(self) -> State:
        """The consumer's state: "connecting", "consuming", "reconnecting", "blocked", ...

        One of "connecting", "consuming", "reconnecting", "blocked", "draining"
        and "stopped".
        """
        return self._machine.state

    def add_state_listener(self, listener: Callable[[State], Any]) -> None:
        """Call ``listener(state)`` on the reactor thread at every change of :attr:`state`."""
        self._machine.add_listener(listener)

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
            self._give_up(failure)

    def _session_opened(self, session: Session, reconnected: bool) -> None:
        self.queues = session.queues
        if reconnected:
            self.stats.reconnects += 1

    def _give_up(self, failure: Failure) -> None:
        if self._machine.started.called:
            # Before that, start()'s caller is told; logging it too says it twice.
            log.error("%s", failure.value)
        self._outcome = failure
        self._machine.stop("stopped")
        self._machine.fail_start(failure)
        defer.ensureDeferred(self._hooks.tear_down()).addBoth(lambda _: self._finish())

    # --- what a session hands deliveries to --------------------------------------

    def _error_policy(self, retry_queues: list[str]) -> ErrorPolicy:
        """Where retried, parked and dropped messages go, given the retry queues declared."""
        config = self.config
        return ErrorPolicy(
            name=self.name,
            retry=config.retry,
            retry_queues=retry_queues,
            drop_exchange=config.drop_exchange,
            message_types=self._message_types,
            drop_invalid_messages=config.drop_invalid_messages,
            publish=self._republish,
        )

    def _dispatcher(
        self, channel: Channel, policy: ErrorPolicy, on_queue_missing: Callable[[Exception], None]
    ) -> Dispatcher:
        return Dispatcher(
            channel,
            self._make_executor,
            self._halted,
            self._failed,
            self.stats,
            policy,
            on_queue_missing=on_queue_missing,
            errors=self._errors,
        )

    def _make_executor(self, on_results: Any) -> Any:
        return executor_for(
            self.callback,
            self.is_async,
            self.config,
            self._reactor,
            on_results,
            self,
            loop=self._hooks.event_loop,
            errors=self._errors,
        )

    def _republish(
        self, exchange: str, routing_key: str, data: bytes, properties: Properties
    ) -> defer.Deferred[None]:
        """Publish a retried, parked or dropped copy, confirmed and mandatory."""
        return self.publisher.publish_data(exchange, routing_key, data, properties, mandatory=True)

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
            from twisted.internet import reactor as global_reactor

            # On the global reactor, the publisher takes each caller's form:
            # a callback's worker thread blocks, the reactor gets a Deferred.
            given = None if self._reactor is global_reactor else self._reactor
            # Its connection is told apart from the consuming one on the broker.
            properties = dict(self.config.client_properties)
            name = properties.get("connection_name") or properties.get("app") or self.name
            properties["connection_name"] = f"{name} (publisher)"
            self._publisher = Publisher(
                self.config.replace(client_properties=properties),
                reactor=given,
                connect=self._open_connection,
                reactor_thread=None if given is None else self._reactor_thread,
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
        """Publish through :attr:`publisher`, with confirms; a Deferred (reactor thread)."""
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

        Returns:
            A Deferred that fires once all of that is done.

        """
        return self._stop(None)

    def abort(self) -> None:
        """Stop now, without waiting for callbacks in flight.

        The connection is dropped; the broker requeues every unsettled
        delivery. :attr:`result` fails with :class:`StopForced` unless the
        consumer had already ended for another reason.
        """
        if self._outcome is None:
            self._outcome = Failure(StopForced("Stopped without waiting for callbacks in flight"))
        session = self._machine.stop("stopped")
        if session is not None:
            session.abort()
        self._finish()

    def _halted(self, halt: HaltConsumer) -> None:
        log.info("The callback halted the consumer: %s", halt)
        self._stop(None if halt.exit_code == 0 else Failure(halt))

    def _failed(
        self, exc: BaseException, message: Message | None, duration: float, errors: ErrorCount
    ) -> None:
        """A consumer error: log it; stop when the error window decided it was one too many."""
        log_consumer_error(exc, message, duration, errors)
        if errors.stops and not self._machine.stopping:
            self._stop(Failure(too_many_errors(exc, message, errors)))

    def _stop(self, outcome: Failure | None) -> defer.Deferred[None]:
        if not self._machine.stopping:
            self._outcome = outcome
            self._ending = defer.ensureDeferred(self._drain_and_close())
        ending = self._ending if self._ending is not None else defer.succeed(None)
        return chain(ending).addBoth(lambda _: None)

    async def _drain_and_close(self) -> None:
        session = self._machine.stop("draining")
        self._machine.fail_start(
            self._outcome or Failure(ConnectionFailed("Cancelled before consuming"))
        )
        try:
            forced = session is not None and await session.drain(self.drain_timeout)
            if forced and self._outcome is None:
                self._outcome = Failure(
                    StopForced(f"Callbacks still running after {self.drain_timeout:g} s")
                )
            # Each close is bounded: one the broker never answers must not hang the stop.
            connection = session.connection if session is not None else None
            closes = BoundedCloses(connection, self.config.connect_timeout, self._clock)
            if self._publisher is not None:
                # Confirms still due after connect_timeout end CANCELED.
                await closes.publisher(self._publisher)
            if session is not None:
                await session.close(closes)
            if self._outcome is not None and isinstance(self._outcome.value, StopForced):
                if self._hooks.tears_down:
                    log.error("teardown() not called: callbacks are still running")
            else:
                await self._hooks.tear_down()
        finally:
            self._finish()

    def _finish(self) -> None:
        self._machine.stop("stopped")
        self._hooks.stop_loop()
        if self.result.called:
            return
        if self._outcome is None:
            self.result.callback(None)
        else:
            self.result.errback(self._outcome)


def _callback_name(callback: Any) -> str:
    """``module:object`` for a callback, as a config file would name it."""
    if isinstance(callback, str):
        return callback
    target = callback if hasattr(callback, "__qualname__") else type(callback)
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    return f"{module}:{qualname}" if module and qualname else "fedmq"


#: The object ``consume()`` hands to Twisted code: :meth:`Consumer.cancel` and
#: :attr:`Consumer.result`.
ConsumerHandle = Consumer

__all__ = ["STATES", "Consumer", "ConsumerHandle", "Result"]
