"""One connection's worth of consuming: open, declare, consume, then drain, close or abandon.

A :class:`Session` is made for each connection attempt and dies with its
connection: its connection, channel, dispatcher, consumer tags and queue
names live here and nowhere else, so nothing has to be cleared together.
Once consuming, it reports the end of its connection once, through
:attr:`Session.lost`, whichever way it came: the connection was lost, the
broker closed the channel, the broker cancelled the consumer, or a retry or
dead queue turned out to be gone. The reconnect machine
(:mod:`fedmq._reconnect`) decides what happens next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from fedmq._added_queues import AddedQueues, Opened, RuntimeQueues
from fedmq._connection import Channel, Clock, Connect, Connection
from fedmq._deferreds import BoundedCloses
from fedmq._dispatch import Dispatcher
from fedmq._flow import Holds
from fedmq._policy import ErrorPolicy
from fedmq._queue_consumers import QueueConsumers
from fedmq._topology import declare, declare_error_paths, step
from fedmq.config import BindingConfig, Config, QueueConfig, redact_url
from fedmq.exceptions import BrokerError, ConnectionFailed

log = logging.getLogger("fedmq")

#: Builds a session's dispatcher: ``(channel, policy, on_queue_missing)``.
DispatcherFactory = Callable[[Channel, ErrorPolicy, Callable[[Exception], None]], Dispatcher]
#: Builds the error policy from the retry queues declared: ``retry_queues -> policy``.
PolicyFactory = Callable[[list[str]], ErrorPolicy]


class Session:
    """One connection to the broker, consuming every configured queue nothing holds.

    Args:
        url: the broker to connect to.
        on_blocked: called with the broker's reason when it blocks the connection.
        on_unblocked: called when the broker unblocks it.
        config: what to declare and consume, and the operations' timeout.
        reactor: handed to ``connect``.
        clock: what the timeouts run on.
        connect: opens the connection (see :class:`fedmq._connection.Connection`).
        policy_for: the error policy, given the retry queues declared.
        dispatcher_for: the dispatcher for the channel and policy.
        holds: which queues are held (the consumer's, kept across sessions);
            by default, the config's queues, those with ``paused`` held.
        topology: the consumer's queues added at runtime and not declared
            yet: declared after the others, a refusal failing only them.

    """

    def __init__(
        self,
        url: str,
        on_blocked: Callable[[str], None],
        on_unblocked: Callable[[], None],
        *,
        config: Config,
        reactor: Any,
        clock: Clock,
        connect: Connect,
        policy_for: PolicyFactory,
        dispatcher_for: DispatcherFactory,
        holds: Holds | None = None,
        topology: RuntimeQueues | None = None,
    ) -> None:
        self.url = url
        self._config = config
        self._reactor = reactor
        # Any: Deferred.addTimeout wants Twisted's IReactorTime, which a Clock provides.
        self._clock: Any = clock
        self._connect = connect
        self._policy_for = policy_for
        self._dispatcher_for = dispatcher_for
        self._on_blocked = on_blocked
        self._on_unblocked = on_unblocked
        self._holds = holds if holds is not None else Holds(_initial_holds(config))
        self.connection: Connection | None = None
        self.channel: Channel | None = None
        self.dispatcher: Dispatcher | None = None
        self.policy: ErrorPolicy | None = None
        #: The channel's consumers, one per queue nothing holds; once declared.
        self.consumers: QueueConsumers | None = None
        #: Fires once, with the reason, when the open session ends without fedmq ending it.
        self.lost: defer.Deferred[Exception] = defer.Deferred()
        #: The broker cancelled this session's consumer.
        self.cancelled_by_broker = False
        self._consuming = False
        self._added = AddedQueues(lambda: self._config, clock, lambda: self.is_lost, topology)

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues of this session (the broker's names for server-named queues)."""
        return tuple(self.names().values())

    def names(self) -> dict[str, str]:
        """Each queue's configured name, and the broker's name for it."""
        return self.consumers.names if self.consumers is not None else {}

    @property
    def consumer_tags(self) -> list[str]:
        """The tags of the consumers this session has now."""
        return self.consumers.tags if self.consumers is not None else []

    async def open(self) -> None:
        """Connect, declare and consume each queue nothing holds; on failure, close it all."""
        config = self._added.first(self._config)
        try:
            self.connection = connection = await self._connect(config, self._reactor, self.url)
        except BaseException as error:
            self._added.give_up(error)
            raise
        try:
            self.channel = channel = await self._step(connection.channel(), "opening a channel")
            names = await declare(channel, config, self._clock)
            retry_queues = await declare_error_paths(
                channel, connection.channel, config, self._clock
            )
            self.policy = policy = self._policy_for(retry_queues)
            self.dispatcher = self._dispatcher_for(channel, policy, self._lose)
            self.consumers = QueueConsumers(
                channel,
                self.dispatcher,
                self._holds,
                lambda: self._config,
                self._clock,
                self._cancelled_by_broker,
                dict(zip((queue.name for queue in config.queues), names, strict=True)),
                on_unanswered=self._lose,
            )
            await self.consumers.take_charge()
            await self._added.declare_waiting(self.consumers, self._opened)
        except BaseException as error:
            self._detach()
            if self.dispatcher is not None:
                self.dispatcher.abandon()
            self._added.give_up(error)
            await connection.close()
            raise
        self._consuming = True
        connection.closed.addCallback(self._connection_closed)
        channel.closed.addCallback(self._channel_closed)
        connection.add_blocked_callbacks(self._on_blocked, self._on_unblocked)
        log.info("Consuming from %s on %s", ", ".join(map(repr, names)), redact_url(self.url))

    # --- the consumer's topology, changed while running -------------------------------

    def update(self, config: Config) -> None:
        """Take the consumer's config of now: its queues' options, and the queues added."""
        self._config = config

    def reconsume(self, queue: str) -> defer.Deferred[None]:
        """Cancel ``queue``'s consumer and consume again, with the options of now."""
        if self.consumers is None:
            return defer.succeed(None)  # consumed with them once declared
        return self.consumers.reconsume(queue)

    @property
    def is_consuming(self) -> bool:
        """Whether this session opened (it may have been lost since)."""
        return self._consuming

    @property
    def is_lost(self) -> bool:
        """Whether this session's connection ended: the next session declares and consumes."""
        return self.lost.called or (self.connection is not None and not self.connection.is_open)

    async def add_queue(self, queue: QueueConfig, bindings: tuple[BindingConfig, ...]) -> None:
        """Declare and bind ``queue`` (and its retry and dead queues), then consume it.

        The declarations go on a channel of their own, so a refusal fails
        this call (with :class:`DeclarationError`) and not the session.
        While the session opens, it declares the queue once it has consumed
        the others, and this call waits for that.

        Raises:
            BrokerError: the broker refused a declaration, or consuming.
            ConnectionFailed: the connection was lost before the queue was
                declared (the next session declares it).

        """
        if self.is_lost:
            return  # the next session declares it, with the topology
        if not self._consuming:
            await self._added.wait(queue.name)
            return
        try:
            await self._added.declare(self._opened(), queue, bindings)
        except Exception as error:
            if not self.is_lost:
                raise
            raise ConnectionFailed(
                f"The connection was lost while declaring queue {queue.name!r}: {error}"
            ) from error

    def _opened(self) -> Opened:
        connection, policy, consumers = self.connection, self.policy, self.consumers
        assert connection is not None  # noqa: S101 - set before the consumers
        assert policy is not None  # noqa: S101 - set before the consumers
        assert consumers is not None  # noqa: S101 - the caller checked
        return Opened(connection, policy, consumers)

    def remove_queue(self, queue: str) -> defer.Deferred[None]:
        """Cancel ``queue``'s consumer and send its unstarted deliveries back.

        Its deliveries in flight finish and are settled as usual.
        """
        if self.consumers is None:
            return defer.succeed(None)
        return self.consumers.remove(queue)

    async def _step(self, d: defer.Deferred[Any], what: str) -> Any:
        """Await one channel operation with a timeout, naming it if it fails."""
        return await step(d, what, self._config.connect_timeout, self._clock)

    # --- the one way a session is lost ------------------------------------------

    def _lose(self, reason: Exception) -> None:
        if self._consuming and not self.lost.called:
            self._detach(stopping=False)
            self.lost.callback(reason)

    def _detach(self, *, stopping: bool = True) -> None:
        """Act on no more holds: the session is ending (fedmq ``stopping`` it, or lost)."""
        if self.consumers is not None:
            self.consumers.let_go(stopping=stopping)

    def _connection_closed(self, reason: Exception | None) -> None:
        if reason is not None:
            self._lose(reason)

    def _channel_closed(self, reason: BrokerError | None) -> None:
        if reason is None:
            return
        if self.connection is not None and not self.connection.is_open:
            return  # the connection went first: its loss says why
        self._lose(reason)

    def _cancelled_by_broker(self) -> None:
        # RabbitMQ cancels a consumer whose queue was deleted (or whose
        # quorum-queue leader moved away). Declaring and consuming again
        # restores it; a passive declare of a queue that is gone fails then.
        log.warning("The broker cancelled the consumer (was its queue deleted?)")
        self.cancelled_by_broker = True
        self._lose(ConnectionFailed("The broker cancelled the consumer"))

    # --- ending -------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Deliveries received on this session and not yet settled."""
        return self.dispatcher.in_flight if self.dispatcher is not None else 0

    def abandon(self) -> defer.Deferred[None]:
        """Give the session up after it was lost: drop the connection, settle nothing more.

        Callbacks still running finish first (the Deferred fires then); their
        delivery tags are dead, and the broker redelivers their messages.
        """
        self._detach(stopping=False)
        dispatcher, self.dispatcher = self.dispatcher, None
        connection = self.connection
        if connection is not None and connection.is_open:
            connection.abort()
        if dispatcher is None:
            return defer.succeed(None)
        return dispatcher.abandon()

    def abort(self) -> None:
        """Drop the connection now; the broker requeues every unsettled delivery."""
        self._detach()
        if self.dispatcher is not None:
            self.dispatcher.abandon()
        if self.connection is not None:
            self.connection.abort()

    async def drain(self, timeout: float) -> bool:
        """Cancel the consumers, then let callbacks in flight finish within ``timeout``.

        Returns:
            True when callbacks were still running after ``timeout`` and were
            abandoned (their messages left to the broker).

        """
        self._detach()
        if self.consumers is not None:
            await self.consumers.cancel_all()
        dispatcher = self.dispatcher
        if dispatcher is None:
            return False
        drained = dispatcher.stop()
        drained.addTimeout(timeout, self._clock)
        try:
            await drained
        except defer.TimeoutError:
            log.error(  # noqa: TRY400 - a timeout, not an error with a useful traceback
                "Still unsettled after drain_timeout (%g s): %s; stopping without them "
                "(the broker requeues their messages)",
                timeout,
                _describe_unsettled(*dispatcher.unsettled),
            )
            dispatcher.abandon()
            return True
        return False

    async def close(self, closes: BoundedCloses) -> None:
        """Close the channel, then the connection, each within ``closes``' timeout."""
        if self.channel is not None and self.channel.is_open:
            await closes.within(self.channel.close())
        if self.connection is not None:
            await closes.within(self.connection.close())

    def close_opened_late(self) -> None:
        """Close a session that finished opening after the consumer began to stop.

        The drain did not see it; the broker requeues what it delivered.
        """
        self._detach()
        if self.dispatcher is not None:
            self.dispatcher.abandon()
        if self.connection is not None:
            self.connection.close()


def _initial_holds(config: Config) -> list[tuple[str, bool]]:
    """Each queue of ``config``, and whether it starts paused."""
    return [(queue.name, queue.paused) for queue in config.queues]


def _describe_unsettled(running: int, copies: int) -> str:
    """What a drain gave up on: callbacks (or Settlements) and copies awaiting confirms."""
    parts = []
    if running:
        parts.append(f"{running} callback(s) still running or message(s) left to a Settlement")
    if copies:
        parts.append(
            f"{copies} retried, parked or dropped copy(ies) still awaiting the broker's "
            "confirm (a broker blocking publishers, on a memory or disk alarm, holds them)"
        )
    return "; ".join(parts) or "nothing left (it ended as time ran out)"
