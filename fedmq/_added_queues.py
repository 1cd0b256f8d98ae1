"""Queues added to a running consumer: each declared on a channel of its own.

A session declares a queue added at runtime (``Consumer.add_queue``) on a
channel of its own, so that a declaration the broker refuses closes that
channel and fails that queue alone, never the session. A queue added while
the session opens is declared by it once it consumes the queues it opened
with; the ``add_queue`` call waits for that, and learns of a refusal or of
a connection that failed meanwhile. A queue added while no connection was
open (:class:`RuntimeQueues` knows which) is declared the same way by the
next session, after the configured ones. Everything here runs on the
reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, NamedTuple, Protocol

from twisted.internet import defer

from fedmq._connection import Connection
from fedmq._policy import ErrorPolicy
from fedmq._queue_consumers import QueueConsumers
from fedmq._topology import declare, declare_error_paths, step
from fedmq.config import BindingConfig, Config, QueueConfig
from fedmq.exceptions import BrokerError, ConnectionFailed


class Opened(NamedTuple):
    """What an opened session declares and consumes an added queue with."""

    connection: Connection
    policy: ErrorPolicy
    consumers: QueueConsumers


class RuntimeQueues(Protocol):
    """The consumer's topology, as far as the queues added at runtime go."""

    def undeclared(self) -> Collection[str]:
        """The queues added at runtime that no session has declared yet."""

    def declared(self, queue: str) -> None:
        """A session declared ``queue``."""

    def refused(self, queue: str, error: BrokerError) -> None:
        """The broker refused ``queue``, which no ``add_queue`` call waits for."""


class AddedQueues:
    """The queues added to one session at runtime, and the ``add_queue`` calls waiting.

    Args:
        config: returns the session's config of now (with the queues added).
        clock: what the timeouts run on.
        is_lost: whether the session's connection ended.
        topology: the consumer's queues added at runtime, if it tracks them.

    """

    def __init__(
        self,
        config: Callable[[], Config],
        clock: Any,
        is_lost: Callable[[], bool],
        topology: RuntimeQueues | None = None,
    ) -> None:
        self._topology = topology
        self._config = config
        self._clock = clock
        self._is_lost = is_lost
        # Queues added while the session opens: each one's declaration, once made.
        self._waiting: dict[str, defer.Deferred[None]] = {}

    def first(self, config: Config) -> Config:
        """What a session opens with: ``config`` without the queues no session declared yet.

        Those are declared after, each on a channel of its own.
        """
        later = set(self._topology.undeclared()) if self._topology is not None else set()
        if not later:
            return config
        return config.replace(
            queues=tuple(queue for queue in config.queues if queue.name not in later),
            bindings=tuple(binding for binding in config.bindings if binding.queue not in later),
        )

    def wait(self, queue: str) -> defer.Deferred[None]:
        """Fires once the opening session has declared ``queue``; fails with why not."""
        declared: defer.Deferred[None] = defer.Deferred()
        self._waiting[queue] = declared
        return declared

    def give_up(self, error: BaseException) -> None:
        """The session failed to open: the queues waiting are left to the next one."""
        waiting = list(self._waiting.items())
        self._waiting.clear()
        for name, declared in waiting:
            declared.errback(
                ConnectionFailed(f"Queue {name!r} was not declared: the connection failed: {error}")
            )

    async def declare_waiting(
        self, consumers: QueueConsumers, opened: Callable[[], Opened]
    ) -> None:
        """Declare the queues added while the session opened, those added meanwhile too.

        A queue whose declaration the broker refuses fails alone (its
        ``add_queue`` call says so); the session opens with the others.
        """
        tried: set[str] = set()
        while True:
            config = self._config()
            added = [
                queue
                for queue in config.queues
                if queue.name not in consumers.names and queue.name not in tried
            ]
            if not added:
                return
            queue = added[0]
            tried.add(queue.name)
            declared = self._waiting.pop(queue.name, None)
            try:
                await self.declare(opened(), queue, config.bindings)
            except BrokerError as error:
                if error.reply_code is None or self._is_lost():
                    raise
                if declared is not None:
                    declared.errback(error)
                elif self._topology is not None and queue.name in self._topology.undeclared():
                    self._topology.refused(queue.name, error)
                else:
                    raise
            else:
                if declared is not None:
                    declared.callback(None)

    async def declare(
        self, session: Opened, queue: QueueConfig, bindings: tuple[BindingConfig, ...]
    ) -> None:
        """Declare and bind ``queue`` and its retry and dead queues, then consume it."""
        connection = session.connection
        bindings = tuple(binding for binding in bindings if binding.queue == queue.name)
        only = self._config().replace(exchanges=(), queues=(queue,), bindings=bindings)
        side = await self._step(connection.channel(), "opening a channel")
        try:
            [name] = await declare(side, only, self._clock)
        finally:
            if side.is_open:
                await self._step(side.close(), "closing a channel")
        retry = await declare_error_paths(
            side, connection.channel, only.replace(drop_exchange=""), self._clock
        )
        session.policy.retry_queues = session.policy.retry_queues | set(retry)
        if self._topology is not None:
            self._topology.declared(queue.name)
        await session.consumers.add(queue.name, name)

    async def _step(self, d: defer.Deferred[Any], what: str) -> Any:
        return await step(d, what, self._config().connect_timeout, self._clock)
