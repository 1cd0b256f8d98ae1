"""A publisher's own connection and confirm channel, reopened when lost.

Runs on the reactor thread only. Messages handed to :meth:`PublishLink.submit`
are written at once when the channel is open, and held (in order) while it
is being opened. The connection is opened on first use, through the
config's ``broker_urls`` in turn; after a failure the next attempt waits the
config's reconnect backoff, and is only made when there is something to send.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._amqp import AMQPChannel, AMQPConnection
from fedmq._backoff import reconnect_delay
from fedmq._confirms import Confirms, Outgoing, settle
from fedmq._connection import Connect
from fedmq._connector import connect
from fedmq._reactor_types import Clock, as_reactor_time
from fedmq.acks import AckStatus
from fedmq.config import Config
from fedmq.exceptions import BrokerError, PublishConnectionLost

# Reply codes with which the broker closes a channel to refuse a publish.
_REFUSALS = (403, 404)

log = logging.getLogger("fedmq")


class PublishLink:
    """One connection, one confirm channel, and the messages on their way through it.

    Args:
        config: the brokers, connection settings and reconnect policy.
        reactor: the reactor (an ``IReactorTime`` and ``IReactorTCP``).
        on_settled: called with (messages, bytes) whenever messages get their
            status, to free room in the publisher's bound.
        open_connection: opens one connection, ``(config, reactor, url)`` to
            (a Deferred of) the connection; tried on each of the config's
            ``broker_urls`` in turn. Tests hand in fakes.

    """

    def __init__(
        self,
        config: Config,
        reactor: Clock,
        on_settled: Callable[[int, int], None],
        open_connection: Connect = AMQPConnection.connect,
    ) -> None:
        self._config = config
        self._reactor = reactor
        self._on_settled = on_settled
        self._open_connection = open_connection
        self._confirms = Confirms(reactor, on_settled)
        self._held: deque[Outgoing] = deque()
        self._connection: AMQPConnection | None = None
        self._channel: AMQPChannel | None = None
        self._opening = False
        self._closed = False
        self._failures = 0
        self._url_index = 0
        self._not_before = 0.0
        self._retry: Any = None
        self._lost_reason: Exception | None = None

    @property
    def connection(self) -> Any:
        """The open connection, or None (its ``address`` names the broker in spans)."""
        return self._connection

    @property
    def is_open(self) -> bool:
        """True while the confirm channel is open."""
        return self._channel is not None

    def submit(self, item: Outgoing) -> None:
        """Send ``item`` now if the channel is open, else once it is."""
        if self._closed:
            self._settle_now(item, AckStatus.CANCELED, ": the publisher is closed")
            return
        channel = self._channel
        if channel is None:
            self._held.append(item)
            self._open_soon()
            return
        try:
            channel.send(
                item.exchange, item.routing_key, item.body, item.properties, item.mandatory
            )
        except PublishConnectionLost as error:
            self._lose(channel, error)
            self._held.append(item)
            self._open_soon()
            return
        self._confirms.sent(item)
        if self._channel is not channel:
            # The channel closed while sending (a broker that refuses at
            # once, as the in-memory one does): this message goes as the others went.
            self._fail_sent(self._lost_reason, quietly=True)

    def _settle_now(self, item: Outgoing, status: AckStatus, reason: str) -> None:
        settle(item, status, reason)
        self._on_settled(1, len(item.body))

    # --- opening ---------------------------------------------------------------

    def _open_soon(self) -> None:
        if self._opening or self._retry is not None or self._closed:
            return
        delay = self._not_before - self._reactor.seconds()
        if delay > 0:
            self._retry = self._reactor.callLater(delay, self._open)
        else:
            self._open()

    def _open(self) -> None:
        self._retry = None
        if self._closed or not self._held:
            return
        self._opening = True
        defer.ensureDeferred(self._open_channel()).addCallbacks(self._opened, self._open_failed)

    async def _open_channel(self) -> AMQPChannel:
        connection, self._url_index = await connect(
            self._config, self._reactor, self._url_index, opener=self._open_connection
        )
        try:
            channel: AMQPChannel = await connection.channel()
            confirming = channel.track_confirms(self._confirms.confirmed, self._confirms.returned)
            confirming.addTimeout(self._config.connect_timeout, as_reactor_time(self._reactor))
            await confirming
        except BaseException:
            connection.abort()
            raise
        self._connection = connection
        connection.closed.addCallback(lambda reason: self._lose(channel, reason))
        channel.closed.addCallback(lambda reason: self._lose(channel, reason))
        return channel

    def _opened(self, channel: AMQPChannel) -> None:
        self._opening = False
        self._failures = 0
        if self._closed:
            self._fail_held(AckStatus.CANCELED, ": the publisher is closed")
            if self._connection is not None:
                self._connection.close()
            return
        self._channel = channel
        held, self._held = self._held, deque()
        for item in held:
            self.submit(item)

    def _open_failed(self, failure: Failure) -> None:
        self._opening = False
        self._failures += 1
        self._url_index += 1
        delay = reconnect_delay(self._failures, self._config.reconnect)
        self._not_before = self._reactor.seconds() + delay
        error = failure.value
        log.warning("Could not open a connection to publish: %s", error)
        self._fail_held(AckStatus.NOT_CONNECTED, str(error), error)

    def _fail_held(
        self, status: AckStatus, reason: str, cause: BaseException | None = None
    ) -> None:
        held, self._held = self._held, deque()
        for item in held:
            settle(item, status, reason, cause)
        if held:
            self._on_settled(len(held), sum(len(item.body) for item in held))

    def _lose(self, channel: AMQPChannel, reason: Exception | None) -> None:
        """The channel or its connection closed: fail what waits for a confirm."""
        if channel is not self._channel:
            return
        self._channel = None
        connection, self._connection = self._connection, None
        if connection is not None and connection.is_open:
            connection.abort()
        if self._closed:
            return
        self._lost_reason = reason
        self._fail_sent(reason)
        if self._held:
            self._open_soon()

    def _fail_sent(self, reason: Exception | None, *, quietly: bool = False) -> None:
        """Settle what waits for a confirm on a channel that is gone, as ``reason`` says."""
        text = str(reason) if reason is not None else "the connection closed"
        if isinstance(reason, BrokerError) and reason.reply_code in _REFUSALS:
            # The broker refused a publish (no such exchange, no permission):
            # what waits for a confirm on this channel is refused, not lost.
            if not quietly:
                log.warning("The broker refused a publish: %s", text)
            self._confirms.fail_all(AckStatus.NACKED, text, refusal=reason)
            return
        if not quietly:
            # Worth a warning only when a message was waiting on it; an idle
            # publisher's connection going (a broker restart) is reopened when needed.
            level = logging.WARNING if len(self._confirms) or self._held else logging.INFO
            log.log(level, "The connection to publish on was lost: %s", text)
        self._confirms.fail_all(AckStatus.NOT_CONNECTED, text)

    # --- closing ---------------------------------------------------------------

    def close(self, reason: str) -> defer.Deferred[Any]:
        """Fail everything still waiting with CANCELED, and close the connection."""
        self._closed = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        unconfirmed = len(self._confirms) + len(self._held)
        self._fail_held(AckStatus.CANCELED, reason)
        self._confirms.fail_all(AckStatus.CANCELED, reason)
        self._channel = None
        connection, self._connection = self._connection, None
        if connection is None:
            return defer.succeed(None)
        if unconfirmed:
            # A broker that confirmed nothing in time is not reading this connection
            # (one it blocks on a memory or disk alarm never reads a close either).
            log.info(
                "Dropping the connection to publish on: %d message(s) had no confirm%s",
                unconfirmed,
                reason,
            )
            connection.abort()
            return defer.succeed(None)
        closing = connection.close()
        closing.addTimeout(
            self._config.connect_timeout,
            as_reactor_time(self._reactor),
            lambda *_: connection.abort(),
        )
        return closing.addErrback(lambda _: None)


__all__ = ["PublishLink"]
