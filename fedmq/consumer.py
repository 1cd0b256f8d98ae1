"""A consumer: its connection, its topology, its dispatch, and how it ends."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPChannel, AMQPConnection
from fedmq._callback import load_callback
from fedmq._deferreds import chain
from fedmq._dispatch import AsyncioExecutor, Dispatcher, Result, ThreadExecutor
from fedmq._publisher import Publisher
from fedmq.config import Config
from fedmq.exceptions import (
    BrokerError,
    CallbackError,
    ConsumerCancelled,
    DeclarationError,
    HaltConsumer,
)
from fedmq.message import Message

log = logging.getLogger("fedmq")


class Consumer:
    """Consumes the configured queues with one callback.

    Build it, then :meth:`start` it; or let :func:`fedmq.consume` do both.

    Args:
        config: what to connect to, declare and consume.
        callback: the callback (see :func:`fedmq.consume`); defaults to the
            config's ``callback``. It is resolved here, before connecting,
            so a bad path fails at once with :class:`CallbackError`.
        reactor: the reactor to run on; the global one by default.
        drain_timeout: seconds a graceful stop waits for callbacks in flight.

    Attributes:
        result: a Deferred that fires with None when the consumer stops
            normally (:meth:`cancel`, or ``HaltConsumer`` with exit code 0),
            and fails with the reason otherwise: :class:`HaltConsumer` with a
            non-zero exit code, :class:`CallbackError` (its ``__cause__`` is
            the callback's exception), :class:`ConsumerCancelled`, or a
            connection error.
        queues: the names of the queues consumed (the broker's names for
            server-named queues), once started.
    """

    def __init__(
        self,
        config: Config,
        callback: Any = None,
        *,
        reactor: Any = None,
        drain_timeout: float = 30.0,
    ):
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.config = config
        self._reactor = reactor
        self.drain_timeout = drain_timeout
        target = callback if callback is not None else config.callback
        self._callback, self.is_async = load_callback(target, config.consumer_config)
        self.result: defer.Deferred[None] = defer.Deferred()
        self.queues: tuple[str, ...] = ()
        self._connection: AMQPConnection | None = None
        self._channel: AMQPChannel | None = None
        self._dispatcher: Dispatcher | None = None
        self._publisher: Publisher | None = None
        self._consumer_tags: list[str] = []
        self._stopping: defer.Deferred[None] | None = None
        self._outcome: Failure | None = None

    # --- starting ----------------------------------------------------------

    def start(self) -> defer.Deferred[Consumer]:
        """Connect, declare, and start consuming.

        Returns:
            A Deferred firing with this consumer once it consumes from every
            queue, or failing with :class:`AuthenticationFailed`,
            :class:`ConnectionFailed` or :class:`DeclarationError`.
        """
        return defer.ensureDeferred(self._start())

    async def _start(self) -> Consumer:
        config = self.config
        self._connection = connection = await AMQPConnection.connect(config, self._reactor)
        try:
            self._channel = channel = await self._step(connection.channel(), "opening a channel")
            names = await self._declare(channel)
            await self._step(
                channel.qos(config.qos.prefetch_count, config.qos.prefetch_size),
                "setting the prefetch count",
            )
            self._dispatcher = dispatcher = Dispatcher(
                channel, self._make_executor, self._halted, self._failed
            )
            for name in names:
                tag = await self._step(
                    channel.consume(name, dispatcher.deliver_for(name), self._cancelled_by_broker),
                    f"consuming from queue {name!r}",
                )
                self._consumer_tags.append(tag)
        except BaseException:
            await connection.close()
            raise
        self.queues = tuple(names)
        connection.closed.addCallback(self._connection_closed)
        channel.closed.addCallback(self._channel_closed)
        log.info("Consuming from %s on %s", ", ".join(map(repr, names)), connection.address)
        return self

    async def _step(self, d: defer.Deferred[Any], what: str) -> Any:
        """Await one channel operation with a timeout, naming it if it fails."""
        d.addTimeout(self.config.connect_timeout, self._reactor)
        try:
            return await d
        except defer.TimeoutError:
            raise BrokerError(
                f"The broker did not answer within {self.config.connect_timeout:g} s while {what}"
            ) from None
        except BrokerError as exc:
            raise type(exc)(
                f"The broker refused {what}: {exc.reply_code} {exc.reply_text}",
                exc.reply_code,
                exc.reply_text,
            ) from None
        except Exception as exc:
            if getattr(exc, "reply_code", None) is not None:
                code, text = exc.reply_code, exc.reply_text  # type: ignore[attr-defined]
                raise DeclarationError(
                    f"The broker refused {what}: {code} {text}", code, text
                ) from None
            raise

    async def _declare(self, channel: AMQPChannel) -> list[str]:
        config = self.config
        passive = config.passive_declares
        verb = "checking" if passive else "declaring"
        for exchange in config.exchanges:
            await self._step(
                channel.declare_exchange(exchange, passive),
                f"{verb} exchange {exchange.name!r} (type {exchange.type!r})",
            )
        names: dict[str, str] = {}
        for queue in config.queues:
            label = repr(queue.name) if queue.name else "a server-named queue"
            names[queue.name] = await self._step(
                channel.declare_queue(queue, passive), f"{verb} queue {label}"
            )
        for binding in config.bindings:
            queue_name = names.get(binding.queue, binding.queue)
            for key in binding.routing_keys:
                await self._step(
                    channel.bind(queue_name, binding.exchange, key, binding.arguments),
                    f"binding queue {queue_name!r} to exchange {binding.exchange!r} "
                    f"with routing key {key!r}",
                )
        return list(names.values())

    def _make_executor(self, on_results: Any) -> Any:
        kind = AsyncioExecutor if self.is_async else ThreadExecutor
        return kind(self._callback, self.config.concurrency, self._reactor, on_results, self)

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
        """Publish on this consumer's connection, with confirms (reactor thread)."""
        if self._publisher is None:
            self._publisher = Publisher(self.config, self._reactor, self._connection)
        return self._publisher.publish(
            message, exchange, routing_key, mandatory=mandatory, timeout=timeout
        )

    # --- stopping ----------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled."""
        return self._dispatcher.in_flight if self._dispatcher is not None else 0

    @property
    def counts(self) -> dict[str, int]:
        """Messages received, acked, requeued, dropped and failed so far."""
        return dict(self._dispatcher.counts) if self._dispatcher is not None else {}

    def cancel(self) -> defer.Deferred[None]:
        """Stop gracefully: stop taking deliveries, let callbacks in flight finish.

        Deliveries prefetched but not started go back to the queue; finished
        ones are acked; then the channel and connection close.

        Returns:
            A Deferred that fires once all of that is done.
        """
        return self._stop(None)

    def _halted(self, halt: HaltConsumer) -> None:
        log.info("The callback halted the consumer: %s", halt)
        self._stop(None if halt.exit_code == 0 else Failure(halt))

    def _failed(self, exc: BaseException, message: Message | None) -> None:
        error = CallbackError(
            f"The callback raised {type(exc).__name__}: {exc}",
            message_id=message.id if message is not None else None,
            topic=message.topic if message is not None else None,
            queue=message.queue if message is not None else None,
        )
        error.__cause__ = exc
        self._stop(Failure(error))

    def _cancelled_by_broker(self) -> None:
        log.error("The broker cancelled the consumer (was its queue deleted?)")
        self._stop(Failure(ConsumerCancelled("The broker cancelled the consumer")))

    def _stop(self, outcome: Failure | None) -> defer.Deferred[None]:
        if self._stopping is None:
            self._outcome = outcome
            self._stopping = defer.ensureDeferred(self._drain_and_close())
        return chain(self._stopping).addBoth(lambda _: None)

    async def _drain_and_close(self) -> None:
        channel, dispatcher = self._channel, self._dispatcher
        try:
            if channel is not None and channel.is_open:
                for tag in self._consumer_tags:
                    cancelled = channel.cancel(tag)
                    cancelled.addTimeout(self.config.connect_timeout, self._reactor)
                    try:
                        await cancelled
                    except defer.TimeoutError:
                        log.warning("The broker did not confirm basic.cancel in time")
            if dispatcher is not None:
                drained = dispatcher.stop()
                drained.addTimeout(self.drain_timeout, self._reactor)
                try:
                    await drained
                except defer.TimeoutError:
                    log.error(
                        "Callbacks still running after %g s; stopping without them (the "
                        "broker requeues their messages)",
                        self.drain_timeout,
                    )
                    dispatcher.abandon()
            if self._publisher is not None:
                await self._publisher.close()
            if channel is not None and channel.is_open:
                await channel.close()
            if self._connection is not None:
                await self._connection.close()
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.result.called:
            return
        if self._outcome is None:
            self.result.callback(None)
        else:
            self.result.errback(self._outcome)

    def _connection_closed(self, reason: Exception | None) -> None:
        if self._stopping is not None or reason is None:
            return
        log.error("%s", reason)
        if self._dispatcher is not None:
            self._dispatcher.abandon()
        self._outcome = Failure(reason)
        self._stopping = defer.succeed(None)
        self._finish()

    def _channel_closed(self, reason: BrokerError | None) -> None:
        if self._stopping is not None or reason is None:
            return
        if self._connection is not None and not self._connection.is_open:
            return  # the connection went first: _connection_closed says why
        log.error("%s", reason)
        if self._dispatcher is not None:
            self._dispatcher.abandon()
        self._stop(Failure(reason))


#: The object ``consume()`` hands to Twisted code: :meth:`Consumer.cancel` and
#: :attr:`Consumer.result`.
ConsumerHandle = Consumer

__all__ = ["Consumer", "ConsumerHandle", "Result"]
