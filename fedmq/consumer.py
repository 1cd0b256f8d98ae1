"""A consumer: its connection, its topology, its dispatch, and how it ends."""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPChannel, AMQPConnection
from fedmq._backoff import Attempts
from fedmq._callback import load_callback
from fedmq._connection import Clock, Connect
from fedmq._connector import connect as connect_with_failover
from fedmq._deferreds import BoundedCloses, chain
from fedmq._delivery import Result
from fedmq._dispatch import Dispatcher
from fedmq._error_window import ErrorCount, ErrorWindow, log_consumer_error, too_many_errors
from fedmq._executors import AsyncioExecutor, ThreadExecutor
from fedmq._lifecycle import Hooks
from fedmq._policy import ErrorPolicy
from fedmq._stats import QUEUE_COUNTERS, ConsumerStats
from fedmq._topology import declare, declare_error_paths, step
from fedmq.config import Config, redact_url
from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    ConnectionFailed,
    ConsumerCancelled,
    DeclarationError,
    HaltConsumer,
    StopForced,
)
from fedmq.message import Message, Properties
from fedmq.publisher import Publisher

log = logging.getLogger("fedmq")

#: Errors that another connection attempt may mend; anything else ends the consumer.
_TRANSIENT = (ConnectionFailed, BrokerError)
#: ... except these, which no reconnect mends.
_FATAL = (AuthenticationFailed, DeclarationError)

STATES = ("connecting", "consuming", "reconnecting", "blocked", "draining", "stopped")


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
            :class:`StopForced`.
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
    ):
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.config = config
        self._reactor = reactor
        # Any: Deferred.addTimeout wants Twisted's IReactorTime, which a Clock provides.
        self._clock: Any = clock if clock is not None else reactor
        self.drain_timeout = config.drain_timeout
        target = callback if callback is not None else config.callback
        self._callback, self.is_async = load_callback(target, config.consumer_config, config=config)
        #: The consumer's name, written in the X-Dropped-By header of what it drops or parks.
        self.name = config.name or _callback_name(target)
        declared = getattr(self._callback, "message_types", None) or ()
        self._message_types: tuple[str, ...] = config.message_types or (
            (declared,) if isinstance(declared, str) else tuple(declared)
        )
        self._errors = ErrorWindow.of(config, self._clock.seconds)
        self._hooks = Hooks(self._callback, self.name, reactor, self._clock, self.drain_timeout)
        self.result: defer.Deferred[None] = defer.Deferred()
        self.queues: tuple[str, ...] = ()
        self.stats = ConsumerStats()
        self._state = "connecting"
        self._state_listeners: list[Any] = []
        self._started: defer.Deferred[Consumer] = defer.Deferred()
        self._connection: AMQPConnection | None = None
        self._channel: AMQPChannel | None = None
        self._dispatcher: Dispatcher | None = None
        self._publisher: Publisher | None = None
        # The thread start() ran on: the reactor's, for a reactor handed in.
        self._reactor_thread: int | None = None
        self._consumer_tags: list[str] = []
        self._stopping: defer.Deferred[None] | None = None
        self._outcome: Failure | None = None
        self._attempts = Attempts(config.broker_urls, config.reconnect)
        self._retry: Any = None
        # The last session ended because the broker cancelled the consumer.
        self._broker_cancelled = False
        self._open_connection = connect

    # --- state ---------------------------------------------------------------

    @property
    def state(self) -> str:
        """One of "connecting", "consuming", "reconnecting", "blocked",
        "draining" and "stopped"."""
        return self._state

    def add_state_listener(self, listener: Any) -> None:
        """Call ``listener(state)`` on the reactor thread at every change of :attr:`state`."""
        self._state_listeners.append(listener)

    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        for listener in list(self._state_listeners):
            try:
                listener(state)
            except Exception:
                log.exception("A consumer state listener failed")

    # --- connecting ------------------------------------------------------------

    def start(self) -> defer.Deferred[Consumer]:
        """Connect, declare, and start consuming.

        Transient failures (refused or lost connections, timeouts) are
        retried with the config's backoff, through ``amqp_urls`` in turn.

        Returns:
            A Deferred firing with this consumer once it consumes from every
            queue, or failing with :class:`AuthenticationFailed`,
            :class:`DeclarationError`, :class:`CallbackError`, or
            :class:`ConnectionFailed` once ``reconnect.max_attempts`` is spent.
        """
        self._reactor_thread = threading.get_ident()
        started = chain(self._started)
        self._hooks.set_up().addCallbacks(self._set_up, self._setup_failed)

        def reported(failure: Failure) -> Failure:
            # The caller of start() gets the reason; :attr:`result`, which
            # fails with it too, need not be reported again as unhandled.
            self.result.addErrback(lambda _: None)
            return failure

        return started.addErrback(reported)

    def _set_up(self, _: None) -> None:
        if self._stopping is None:
            self._connect()
        elif self._state == "stopped" and self._hooks.has_setup:
            # Stopped while setup() ran: nothing else will call teardown().
            defer.ensureDeferred(self._hooks.tear_down())

    def _setup_failed(self, failure: Failure) -> None:
        if self._stopping is None:
            self._give_up(failure)

    def _connect(self) -> None:
        self._retry = None
        if self._stopping is not None:
            return
        self._set_state("reconnecting" if self._attempts.sessions else "connecting")
        d = defer.ensureDeferred(self._open_session(self._attempts.url))
        d.addCallbacks(self._session_opened, self._session_failed)

    async def _open_session(self, url: str) -> None:
        config = self.config
        self._connection = connection = await self._open_connection(config, self._reactor, url)
        try:
            self._channel = channel = await self._step(connection.channel(), "opening a channel")
            names = await declare(channel, self.config, self._clock)
            policy = await self._declare_error_paths(channel, connection)
            await self._step(
                channel.qos(config.qos.prefetch_count, config.qos.prefetch_size),
                "setting the prefetch count",
            )
            self._dispatcher = dispatcher = Dispatcher(
                channel,
                self._make_executor,
                self._halted,
                self._failed,
                self.stats,
                policy,
                on_queue_missing=self._lose_session,
                errors=self._errors,
            )
            self._consumer_tags = []
            for name in names:
                tag = await self._step(
                    channel.consume(name, dispatcher.deliver_for(name), self._cancelled_by_broker),
                    f"consuming from queue {name!r}",
                )
                self._consumer_tags.append(tag)
        except BaseException:
            if self._dispatcher is not None:
                self._dispatcher.abandon()
            await connection.close()
            raise
        self.queues = tuple(names)
        connection.closed.addCallback(self._connection_lost, connection)
        channel.closed.addCallback(self._channel_closed, channel)
        connection.add_blocked_callbacks(self._blocked, self._unblocked)
        log.info("Consuming from %s on %s", ", ".join(map(repr, names)), redact_url(url))

    def _session_opened(self, _: None) -> None:
        self._broker_cancelled = False
        if self._attempts.sessions:
            self.stats.reconnects += 1
        self._attempts.opened()
        if self._stopping is not None:
            # Stopped while this session was being set up: the drain did not
            # see it, so close it here; the broker requeues what it delivered.
            if self._dispatcher is not None:
                self._dispatcher.abandon()
            if self._connection is not None:
                self._connection.close()
            return
        self._set_state("consuming")
        if not self._started.called:
            self._started.callback(self)

    def _session_failed(self, failure: Failure) -> None:
        self._connection = self._channel = self._dispatcher = None
        if self._stopping is not None:
            return
        error = failure.value
        gone = isinstance(error, DeclarationError) and error.reply_code == 404
        if self._broker_cancelled and gone:
            # Cancelled, and the queue is gone for good: fedmq may not declare it.
            cancelled = ConsumerCancelled(
                f"The broker cancelled the consumer and it cannot consume again: {error}"
            )
            cancelled.__cause__ = error
            failure = Failure(cancelled)
        if isinstance(error, _FATAL) or not isinstance(error, _TRANSIENT):
            self._give_up(failure)
            return
        delay = self._attempts.failed()
        if delay is None:
            self._give_up(
                Failure(
                    ConnectionFailed(
                        f"Gave up after {self._attempts.failures} failed connection attempts; "
                        f"the last: {error}"
                    )
                )
            )
            return
        log.warning("%s; trying again in %.1f s", error, delay)
        self._retry = self._clock.callLater(delay, self._connect)

    def _give_up(self, failure: Failure) -> None:
        if self._started.called:
            # Before that, start()'s caller is told; logging it too says it twice.
            log.error("%s", failure.value)
        self._outcome = failure
        self._stopping = defer.succeed(None)
        self._set_state("stopped")
        self._fail_start(failure)
        defer.ensureDeferred(self._hooks.tear_down()).addBoth(lambda _: self._finish())

    def _fail_start(self, failure: Failure) -> None:
        """Fail start()'s Deferreds, which have already passed the failure on."""
        if not self._started.called:
            self._started.errback(failure)
            self._started.addErrback(lambda _: None)

    def _lose_session(self, reason: Exception) -> None:
        """The connection or channel went away while consuming: reconnect.

        Callbacks still running finish first (so ``concurrency`` holds across
        the reconnect); their results are not settled: those delivery tags
        are dead and the broker redelivers the messages.
        """
        if self._stopping is not None or self._state not in ("consuming", "blocked"):
            return
        log.warning("%s; reconnecting", reason)
        self._set_state("reconnecting")
        dispatcher, self._dispatcher = self._dispatcher, None
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.abort()
        if dispatcher is None:
            self._connect()
        else:
            dispatcher.abandon().addBoth(lambda _: self._connect())

    def _connection_lost(self, reason: Exception | None, connection: AMQPConnection) -> None:
        if reason is not None and connection is self._connection:
            self._lose_session(reason)

    def _channel_closed(self, reason: BrokerError | None, channel: AMQPChannel) -> None:
        if reason is None or channel is not self._channel:
            return
        if self._connection is not None and not self._connection.is_open:
            return  # the connection went first: _connection_lost says why
        self._lose_session(reason)

    def _cancelled_by_broker(self) -> None:
        # RabbitMQ cancels a consumer whose queue was deleted (or whose
        # quorum-queue leader moved away). Declaring and consuming again
        # restores it; a passive declare of a queue that is gone fails then.
        log.warning("The broker cancelled the consumer (was its queue deleted?)")
        if self._stopping is None:
            self._broker_cancelled = True
        self._lose_session(ConnectionFailed("The broker cancelled the consumer"))

    def _blocked(self, reason: str) -> None:
        log.warning("The broker blocked the connection: %s", reason or "no reason given")
        if self._state == "consuming":
            self._set_state("blocked")

    def _unblocked(self) -> None:
        log.info("The broker unblocked the connection")
        if self._state == "blocked":
            self._set_state("consuming")

    async def _step(self, d: defer.Deferred[Any], what: str) -> Any:
        """Await one channel operation with a timeout, naming it if it fails."""
        return await step(d, what, self.config.connect_timeout, self._clock)

    async def _declare_error_paths(
        self, channel: AMQPChannel, connection: AMQPConnection
    ) -> ErrorPolicy:
        """Declare each queue's retry queues and dead queue; check the drop exchange."""
        config = self.config
        return ErrorPolicy(
            name=self.name,
            retry=config.retry,
            retry_queues=await declare_error_paths(
                channel, connection.channel, config, self._clock
            ),
            drop_exchange=config.drop_exchange,
            message_types=self._message_types,
            drop_invalid_messages=config.drop_invalid_messages,
            publish=self._republish,
        )

    def _republish(
        self, exchange: str, routing_key: str, data: bytes, properties: Properties
    ) -> defer.Deferred[None]:
        """Publish a retried, parked or dropped copy, confirmed and mandatory."""
        return self.publisher.publish_data(exchange, routing_key, data, properties, mandatory=True)

    @property
    def publisher(self) -> Publisher:
        """The consumer's :class:`~fedmq.Publisher`, on a connection of its own.

        Its republishes (retry, park, drop) and the callback's publishes go
        through it, so a broker that blocks publishers (a memory alarm) never
        stalls the acks on the consuming connection. Opened on first use,
        closed at the end of the drain.
        """
        if self._publisher is None:
            from twisted.internet import reactor as global_reactor

            # On the global reactor, the publisher takes each caller's form:
            # a callback's worker thread blocks, the reactor gets a Deferred.
            given = None if self._reactor is global_reactor else self._reactor
            connect = functools.partial(connect_with_failover, opener=self._open_connection)
            self._publisher = Publisher(
                self.config,
                reactor=given,
                connect=connect,
                reactor_thread=None if given is None else self._reactor_thread,
            )
        return self._publisher

    def _make_executor(self, on_results: Any) -> Any:
        config = self.config
        if self.is_async:
            return AsyncioExecutor(
                self._callback,
                config.concurrency,
                self._reactor,
                on_results,
                self,
                loop=self._hooks.event_loop(),
                errors=self._errors,
                max_body_size=config.max_body_size,
                decode=config.decode,
            )
        return ThreadExecutor(
            self._callback,
            config.concurrency,
            self._reactor,
            on_results,
            self,
            errors=self._errors,
            max_body_size=config.max_body_size,
            decode=config.decode,
        )

    # --- publishing from a callback ------------------------------------------

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
        return self._dispatcher.in_flight if self._dispatcher is not None else 0

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
        if self._stopping is None:
            self._stopping = defer.succeed(None)
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._dispatcher is not None:
            self._dispatcher.abandon()
        if self._connection is not None:
            self._connection.abort()
        self._finish()

    def _halted(self, halt: HaltConsumer) -> None:
        log.info("The callback halted the consumer: %s", halt)
        self._stop(None if halt.exit_code == 0 else Failure(halt))

    def _failed(
        self, exc: BaseException, message: Message | None, duration: float, errors: ErrorCount
    ) -> None:
        """A consumer error: log it; stop when the error window decided it was one too many."""
        log_consumer_error(exc, message, duration, errors)
        if errors.stops and self._stopping is None:
            self._stop(Failure(too_many_errors(exc, message, errors)))

    def _stop(self, outcome: Failure | None) -> defer.Deferred[None]:
        if self._stopping is None:
            self._outcome = outcome
            self._stopping = defer.ensureDeferred(self._drain_and_close())
        return chain(self._stopping).addBoth(lambda _: None)

    async def _drain_and_close(self) -> None:
        self._set_state("draining")
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._fail_start(self._outcome or Failure(ConnectionFailed("Cancelled before consuming")))
        channel, dispatcher = self._channel, self._dispatcher
        try:
            if channel is not None and channel.is_open:
                for tag in self._consumer_tags:
                    cancelled = channel.cancel(tag)
                    cancelled.addTimeout(self.config.connect_timeout, self._clock)
                    try:
                        await cancelled
                    except defer.TimeoutError:
                        log.warning("The broker did not confirm basic.cancel in time")
            if dispatcher is not None:
                drained = dispatcher.stop()
                drained.addTimeout(self.drain_timeout, self._clock)
                try:
                    await drained
                except defer.TimeoutError:
                    log.error(
                        "Callbacks still running after %g s; stopping without them (the "
                        "broker requeues their messages)",
                        self.drain_timeout,
                    )
                    dispatcher.abandon()
                    if self._outcome is None:
                        self._outcome = Failure(
                            StopForced(f"Callbacks still running after {self.drain_timeout:g} s")
                        )
            closes = BoundedCloses(self._connection, self.config.connect_timeout, self._clock)
            if self._publisher is not None:
                # Confirms still due after connect_timeout end CANCELED.
                await closes.publisher(self._publisher)
            if channel is not None and channel.is_open:
                await closes.within(channel.close())
            if self._connection is not None:
                await closes.within(self._connection.close())
            if self._outcome is not None and isinstance(self._outcome.value, StopForced):
                if self._hooks.tears_down:
                    log.error("teardown() not called: callbacks are still running")
            else:
                await self._hooks.tear_down()
        finally:
            self._finish()

    def _finish(self) -> None:
        self._set_state("stopped")
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
