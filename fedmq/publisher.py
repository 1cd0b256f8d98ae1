"""``fedmq.Publisher``: one connection of its own, confirms always on, from any thread.

A publisher opens its connection on first use (through ``amqp_urls`` in
turn), reopens it with the configured backoff when it is lost, and tells
each message's fate as an :class:`~fedmq.Ack` with an
:class:`~fedmq.AckStatus`. The state lives on the reactor thread; other
threads hand messages over in batches, one reactor wake-up per batch.

:class:`Publisher` is the API over small machines, each with one job: the
per-message path (``fedmq/_sending.py``), the bound and the hand-over from
other threads (``fedmq/_intake.py``), the connection and its confirm channel
(``fedmq/_publish_link.py``), the confirm bookkeeping (``fedmq/_confirms.py``),
and the form each answer takes for its caller (``fedmq/_caller.py``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from fedmq._amqp import AMQPConnection
from fedmq._caller import CallerForm
from fedmq._connection import Connect
from fedmq._deferreds import chain
from fedmq._intake import Intake
from fedmq._publish_link import PublishLink
from fedmq._reactor_thread import AckWaiter, blocks_the_caller, in_callers_form, twisted_or_asyncio
from fedmq._reactor_types import ThreadHopClock
from fedmq._sending import Sender
from fedmq.acks import Ack, OnAck
from fedmq.config import Config, load_config
from fedmq.exceptions import PublishError
from fedmq.message import Message, Properties

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self

ConfigArg = Config | str | os.PathLike[str] | None


class Publisher:
    """Publishes messages with publisher confirms on a connection of its own.

    Usable from a script, from threads, from Twisted code and from asyncio;
    as a context manager (``with`` / ``async with``), it closes on leaving.
    Methods that wait (:meth:`publish`, :meth:`flush`, :meth:`close`) take
    the form of the caller: on the reactor thread a Deferred; in an asyncio
    task an awaitable; in any other thread they block.

    Args:
        config: a config object or a path; ``$FEDMQ_CONFIG`` or the default
            file when None.
        reactor: the reactor to run on. By default the global one, which a
            script's first publish starts in a background thread, and each
            method takes the form of its caller. Given a reactor (even the
            global one), every method takes the Twisted form, even before the
            reactor runs (``task.react``): call them on the reactor thread.
        max_unconfirmed: the most messages posted and not yet confirmed;
            ``publish_max_unconfirmed`` from the config by default.
        max_unconfirmed_bytes: the most body bytes posted and not yet
            confirmed; ``publish_max_unconfirmed_bytes`` by default.
        connect: opens one connection, ``(config, reactor, url)`` to (a
            Deferred of) the connection, as a :class:`~fedmq.Consumer`'s
            ``connect=`` does (``InMemoryBroker.connect``, say); the
            publisher tries the config's ``broker_urls`` through it in turn.
        reactor_thread: the ident of the thread that runs ``reactor``, when
            that is not the global reactor and other threads call in (a
            consumer's worker threads and event loop): calls from any other
            thread then hop to it.

    """

    def __init__(
        self,
        config: ConfigArg = None,
        *,
        reactor: ThreadHopClock | None = None,
        max_unconfirmed: int | None = None,
        max_unconfirmed_bytes: int | None = None,
        connect: Connect = AMQPConnection.connect,
        reactor_thread: int | None = None,
    ) -> None:
        from twisted.internet import reactor as global_reactor

        self.config = config if isinstance(config, Config) else load_config(config)
        self._reactor: ThreadHopClock = global_reactor if reactor is None else reactor
        self._caller = CallerForm(self._reactor, reactor is None, reactor_thread)
        self._intake = Intake(
            self._reactor,
            max_unconfirmed or self.config.publish_max_unconfirmed,
            max_unconfirmed_bytes or self.config.publish_max_unconfirmed_bytes,
        )
        self._link = PublishLink(self.config, self._reactor, self._intake.settled, connect)
        self._intake.submit = self._link.submit
        self._send = Sender(self.config, self._reactor, self._intake, self._link, self._caller)
        self._closed: defer.Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<fedmq.Publisher for {self.config.source} ({self._intake.count} unconfirmed)>"

    @property
    def unconfirmed(self) -> int:
        """Messages posted, within the bound, that have no status yet."""
        return self._intake.count

    @property
    def waiting(self) -> int:
        """Messages posted on the reactor thread over the bound, not yet sent."""
        return self._intake.waiting

    # --- posting ---------------------------------------------------------------

    def post(
        self,
        message: Message | Any,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        on_ack: OnAck | None = None,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """Publish without waiting for the broker; learn the message's fate later.

        Callable from any thread. The message is put in its wire form at
        once (see :func:`fedmq.publish` for the exchange and routing key).

        Args:
            message: a :class:`~fedmq.Message` or a fedora-messaging message.
            exchange: the exchange; the config's ``publish_exchange`` by default.
            routing_key: overrides the topic (with its prefix).
            on_ack: called once, on the reactor thread, with the message's
                :class:`~fedmq.Ack`. It must not block.
            mandatory: a message no queue matches gets RETURNED instead of SUCCESS.
            timeout: seconds the broker has to confirm; then TIMEOUT.

        Returns:
            Without ``on_ack``: a Deferred (on the reactor thread) or a
            :class:`concurrent.futures.Future` (elsewhere) that gets the
            :class:`~fedmq.Ack`; it never fails. With ``on_ack``: None, except
            on the reactor thread over the bound, where it is a Deferred that
            fires once the message has been sent (wait for it before posting more).

        Raises:
            PublishFormatError: the message was refused before sending.
            PublishError: (outside the reactor thread) the reactor cannot run.

        """
        here = self._caller.on_reactor_thread()
        return self._send.message(message, exchange, routing_key, on_ack, mandatory, timeout, here)

    def post_data(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        on_ack: OnAck | None = None,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """:meth:`post` for a body already encoded, sent with ``properties`` as they are."""
        return self._send.data(
            exchange,
            routing_key,
            body,
            properties,
            on_ack,
            mandatory,
            timeout,
            self._caller.on_reactor_thread(),
        )

    # --- waiting ---------------------------------------------------------------

    def publish(
        self,
        message: Message | Any,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """Publish and wait for the broker's confirm.

        Args: as :meth:`post`.

        Returns:
            On the reactor thread a Deferred firing with None; in an asyncio
            task an awaitable; elsewhere None, once confirmed.

        Raises:
            PublishError: the :class:`~fedmq.Ack`'s error: nacked, returned,
                timed out, connection lost, or canceled.

        """
        if self._caller.on_reactor_thread():
            return twisted_or_asyncio(
                self.publish_deferred(
                    message, exchange, routing_key, mandatory=mandatory, timeout=timeout
                )
            )
        # A script's loop of publish(): the reactor thread wakes this one
        # directly from the confirm, through one bare lock.
        waiter = AckWaiter() if blocks_the_caller() else None
        acked = self._send.message(
            message, exchange, routing_key, waiter, mandatory, timeout, False
        )
        wait = timeout + self.config.connect_timeout
        if waiter is None:
            return in_callers_form(acked, wait)
        waiter.wait(wait)
        return None

    def publish_data(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> defer.Deferred[None]:
        """Twisted code, on the reactor thread: publish an encoded body; a Deferred.

        It fires with None on the broker's ack, or fails with the
        :class:`~fedmq.Ack`'s error, whatever the thread detection says
        (for Twisted code running before the reactor does).
        """
        acked = self._send.data(
            exchange, routing_key, body, properties, None, mandatory, timeout, True
        )
        return acked.addCallback(_raise_unless_success)  # type: ignore[no-any-return]

    def publish_deferred(
        self,
        message: Message | Any,
        exchange: str | None = None,
        routing_key: str | None = None,
        *,
        mandatory: bool = False,
        timeout: float = 30.0,
    ) -> defer.Deferred[None]:
        """:meth:`publish`'s Twisted form, whatever the caller; call it on the reactor thread."""
        try:
            acked = self._send.message(
                message, exchange, routing_key, None, mandatory, timeout, True
            )
        except (PublishError, TypeError) as error:
            return defer.fail(error)
        return acked.addCallback(_raise_unless_success)  # type: ignore[no-any-return]

    def flush(self, timeout: float = 30.0) -> Any:
        """Wait until every message posted so far has its status.

        Returns:
            A Deferred, an awaitable, or None (see the class).

        Raises:
            PublishTimeout: some messages still have no status after ``timeout`` seconds.

        """
        return self._caller.run(lambda: self._intake.flushed(timeout), timeout)

    def close(self, timeout: float = 30.0) -> Any:
        """Wait up to ``timeout`` seconds for outstanding confirms, then close.

        Messages still without a status then get CANCELED (as do any posted
        afterwards), and the connection is closed.

        Returns:
            A Deferred, an awaitable, or None (see the class).

        """
        return self._caller.run(lambda: self._close(timeout), timeout + self.config.connect_timeout)

    def close_deferred(self, timeout: float = 30.0) -> defer.Deferred[None]:
        """:meth:`close`'s Twisted form, whatever the caller; call it on the reactor thread."""
        return self._close(timeout)

    def _close(self, timeout: float) -> defer.Deferred[None]:
        if self._closed is None:
            self._closed = defer.ensureDeferred(self._drain_and_close(timeout))
        return chain(self._closed)

    async def _drain_and_close(self, timeout: float) -> None:
        reason = f" within the {timeout:g} s close() waited"
        await self._intake.drain(timeout, reason)
        await self._link.close(reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()


def _raise_unless_success(ack: Ack) -> None:
    if ack.error is not None:
        raise ack.error


__all__ = ["Publisher"]
