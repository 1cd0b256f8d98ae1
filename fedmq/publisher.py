"""``fedmq.Publisher``: one connection of its own, confirms always on, from any thread.

A publisher opens its connection on first use (through ``amqp_urls`` in
turn), reopens it with the configured backoff when it is lost, and tells
each message's fate as an :class:`~fedmq.Ack` with an
:class:`~fedmq.AckStatus`. The state lives on the reactor thread; other
threads hand messages over in batches, one reactor wake-up per batch.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from fedmq import _intercept, _tracing
from fedmq._confirms import Outgoing, settle
from fedmq._connector import connect as connect_with_failover
from fedmq._publish_link import PublishLink
from fedmq._publisher import wire_form
from fedmq._reactor_thread import (
    AckWaiter,
    blocks_the_caller,
    caller_context,
    ensure_reactor_running,
    in_callers_form,
    resolve_future,
    twisted_or_asyncio,
)
from fedmq._reactor_types import ThreadHopClock, as_reactor_time
from fedmq.acks import Ack, AckStatus, OnAck
from fedmq.config import Config, load_config
from fedmq.exceptions import PublishError, PublishTimeout
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
        connect: how to open a connection, ``(config, reactor, first_url_index)``
            to ``(connection, index)``; for tests.
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
        connect: Any = connect_with_failover,
        reactor_thread: int | None = None,
    ) -> None:
        from twisted.internet import reactor as global_reactor

        self.config = config if isinstance(config, Config) else load_config(config)
        self._reactor: ThreadHopClock = global_reactor if reactor is None else reactor
        self._detects_thread = reactor is None
        self._reactor_thread = reactor_thread
        self._max = max_unconfirmed or self.config.publish_max_unconfirmed
        self._max_bytes = max_unconfirmed_bytes or self.config.publish_max_unconfirmed_bytes
        self._link = PublishLink(self.config, self._reactor, self._settled, connect)
        # Shared with other threads, under _lock: what is in flight
        # (handed over, sent, unconfirmed), and the batch not yet handed over.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # held by holding _lock, at C speed
        self._count = 0
        self._bytes = 0
        self._outbox: deque[Outgoing] = deque()
        self._wake_scheduled = False
        self._closing = False
        # Reactor thread only: posts over the bound, and flush() callers.
        self._waiting: deque[tuple[Outgoing, defer.Deferred[None] | None]] = deque()
        self._flushers: list[defer.Deferred[None]] = []
        self._closed: defer.Deferred[None] | None = None

    def __repr__(self) -> str:
        return f"<fedmq.Publisher for {self.config.source} ({self._count} unconfirmed)>"

    @property
    def unconfirmed(self) -> int:
        """Messages posted, within the bound, that have no status yet."""
        return self._count

    @property
    def waiting(self) -> int:
        """Messages posted on the reactor thread over the bound, not yet sent."""
        return len(self._waiting)

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
        if exchange is None:
            exchange = self.config.publish_exchange
        if _intercept.handlers and _intercept.intercept(message):
            return self._done(Ack(getattr(message, "id", None), AckStatus.SUCCESS), on_ack)
        prefixed, body, properties = wire_form(message, self.config)
        return self.post_data(
            exchange,
            prefixed if routing_key is None else routing_key,
            body,
            properties,
            on_ack=on_ack,
            mandatory=mandatory,
            timeout=timeout,
        )

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
        return self._post(
            exchange, routing_key, body, properties, on_ack, mandatory, timeout, self._in_reactor()
        )

    def _post(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        on_ack: OnAck | None,
        mandatory: bool,
        timeout: float,
        in_reactor: bool,
    ) -> Any:
        result: Any = None
        if on_ack is None:
            if in_reactor:
                result = defer.Deferred()
                on_ack = result.callback
            else:
                result = concurrent.futures.Future()
                on_ack = result.set_result
        # The send span starts in the caller's thread, under its current span
        # (a callback's process span), and ends with the message's status.
        sending, properties = _tracing.start_send(
            exchange, routing_key, properties, self._link.connection, self.config
        )
        on_ack = _tracing.ending_send(sending, on_ack)
        if not in_reactor:
            ensure_reactor_running(self._reactor, in_reactor)
        deadline = self._reactor.seconds() + timeout
        item = Outgoing(exchange, routing_key, body, properties, mandatory, deadline, on_ack)
        if in_reactor:
            sent = self._admit_here(item, result is None)
            return result if result is not None or sent is None else sent
        self._admit_from_thread(item, timeout)
        return result

    def _over_bound(self, size: int) -> bool:
        return self._count > 0 and (
            self._count >= self._max or self._bytes + size > self._max_bytes
        )

    def _admit_here(self, item: Outgoing, tell_sent: bool) -> defer.Deferred[None] | None:
        """On the reactor thread: send now, or line up behind the bound (never block).

        Over the bound, and with ``tell_sent``, returns a Deferred fired once it is sent.
        """
        size = len(item.body)
        with self._lock:
            closing = self._closing
            admitted = not closing and not self._waiting and not self._over_bound(size)
            if admitted:
                self._count += 1
                self._bytes += size
        if closing:
            settle(item, AckStatus.CANCELED, ": the publisher is closed")
            return None
        if admitted:
            self._link.submit(item)
            return None
        sent: defer.Deferred[None] | None = defer.Deferred() if tell_sent else None
        self._waiting.append((item, sent))
        return sent

    def _admit_from_thread(self, item: Outgoing, timeout: float) -> None:
        """From another thread: wait (up to ``timeout``) for room, then hand over."""
        size = len(item.body)
        end = time.monotonic() + timeout
        with self._lock:
            while not self._closing and self._over_bound(size):
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                self._room.wait(remaining)
            refusal = None
            if self._closing:
                refusal = (AckStatus.CANCELED, ": the publisher is closed")
            elif self._over_bound(size):
                refusal = (AckStatus.TIMEOUT, f": no room in {timeout:g} s (the bound is full)")
            else:
                self._count += 1
                self._bytes += size
                self._outbox.append(item)
                wake = not self._wake_scheduled
                self._wake_scheduled = True
        if refusal is not None:
            self._reactor.callFromThread(settle, item, *refusal)
        elif wake:
            self._reactor.callFromThread(self._hand_over)

    def _hand_over(self) -> None:
        """On the reactor thread: send the batch other threads posted since the last turn."""
        with self._lock:
            batch, self._outbox = self._outbox, deque()
            self._wake_scheduled = False
        submit = self._link.submit
        for item in batch:
            submit(item)

    def _settled(self, count: int, size: int) -> None:
        """``count`` messages got their status: free their room, let others in."""
        with self._lock:
            self._count -= count
            self._bytes -= size
            self._room.notify_all()
            idle = self._count == 0 and not self._outbox
        if self._waiting:
            idle = False
            self._let_waiting_in()
        if idle and self._flushers:
            flushers, self._flushers = self._flushers, []
            for d in flushers:
                d.callback(None)

    def _let_waiting_in(self) -> None:
        """Send the messages waiting on the reactor thread, as long as the bound allows."""
        admitted: list[tuple[Outgoing, defer.Deferred[None] | None]] = []
        waiting = self._waiting
        with self._lock:
            while waiting:
                size = len(waiting[0][0].body)
                if self._over_bound(size):
                    break
                self._count += 1
                self._bytes += size
                admitted.append(waiting.popleft())
        submit = self._link.submit
        for item, sent in admitted:
            submit(item)
            if sent is not None:
                sent.callback(None)

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
        if self._in_reactor():
            return twisted_or_asyncio(
                self.publish_deferred(
                    message, exchange, routing_key, mandatory=mandatory, timeout=timeout
                )
            )
        if blocks_the_caller():
            # A script's loop of publish(): the reactor thread wakes this one
            # directly from the confirm, through one bare lock.
            waiter = AckWaiter()
            self.post(
                message, exchange, routing_key, on_ack=waiter, mandatory=mandatory, timeout=timeout
            )
            waiter.wait(timeout + self.config.connect_timeout)
            return None
        acked = self.post(message, exchange, routing_key, mandatory=mandatory, timeout=timeout)
        return in_callers_form(acked, timeout + self.config.connect_timeout)

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
        acked = self._post(exchange, routing_key, body, properties, None, mandatory, timeout, True)
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
        if exchange is None:
            exchange = self.config.publish_exchange
        if _intercept.handlers and _intercept.intercept(message):
            return defer.succeed(None)
        try:
            prefixed, body, properties = wire_form(message, self.config)
        except (PublishError, TypeError) as error:
            return defer.fail(error)
        key = prefixed if routing_key is None else routing_key
        return self.publish_data(
            exchange, key, body, properties, mandatory=mandatory, timeout=timeout
        )

    def flush(self, timeout: float = 30.0) -> Any:
        """Wait until every message posted so far has its status.

        Returns:
            A Deferred, an awaitable, or None (see the class).

        Raises:
            PublishTimeout: some messages still have no status after ``timeout`` seconds.

        """
        return self._in_reactor_form(lambda: self._flushed(timeout), timeout)

    def _flushed(self, timeout: float) -> defer.Deferred[None]:
        with self._lock:
            idle = self._count == 0 and not self._outbox and not self._waiting
        if idle:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._flushers.append(d)

        def timed_out(_result: Any, _timeout: float) -> None:
            raise PublishTimeout(
                f"{self._count + len(self._waiting)} messages still had no status "
                f"after {timeout:g} s"
            )

        return d.addTimeout(timeout, as_reactor_time(self._reactor), timed_out)

    def close(self, timeout: float = 30.0) -> Any:
        """Wait up to ``timeout`` seconds for outstanding confirms, then close.

        Messages still without a status then get CANCELED (as do any posted
        afterwards), and the connection is closed.

        Returns:
            A Deferred, an awaitable, or None (see the class).

        """
        return self._in_reactor_form(
            lambda: self._close(timeout), timeout + self.config.connect_timeout
        )

    def close_deferred(self, timeout: float = 30.0) -> defer.Deferred[None]:
        """:meth:`close`'s Twisted form, whatever the caller; call it on the reactor thread."""
        return self._close(timeout)

    def _close(self, timeout: float) -> defer.Deferred[None]:
        if self._closed is None:
            self._closed = defer.ensureDeferred(self._drain_and_close(timeout))
        d: defer.Deferred[None] = defer.Deferred()

        def done(result: Any) -> Any:
            d.callback(None)
            return result

        self._closed.addBoth(done)
        return d

    async def _drain_and_close(self, timeout: float) -> None:
        with self._lock:
            self._closing = True
            self._room.notify_all()
        with contextlib.suppress(PublishTimeout):
            await self._flushed(timeout)
        self._hand_over()
        reason = f" within the {timeout:g} s close() waited"
        waiting, self._waiting = self._waiting, deque()
        for item, sent in waiting:
            settle(item, AckStatus.CANCELED, reason)
            if sent is not None:
                sent.callback(None)
        await self._link.close(reason)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- the caller's form -----------------------------------------------------

    def _in_reactor(self) -> bool:
        if self._reactor_thread is not None:
            return threading.get_ident() == self._reactor_thread
        return caller_context(self._reactor, self._detects_thread)

    def _done(self, ack: Ack, on_ack: OnAck | None) -> Any:
        if on_ack is not None:
            on_ack(ack)
            return None
        if self._in_reactor():
            return defer.succeed(ack)
        future: concurrent.futures.Future[Ack] = concurrent.futures.Future()
        future.set_result(ack)
        return future

    def _in_reactor_form(self, start: Any, timeout: float) -> Any:
        """Run ``start`` (returning a Deferred) on the reactor thread; the caller's form."""
        if self._in_reactor():
            return twisted_or_asyncio(start())
        ensure_reactor_running(self._reactor, False)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def go() -> None:
            start().addBoth(lambda result: resolve_future(future, result))

        self._reactor.callFromThread(go)
        return in_callers_form(future, timeout + 5.0)


def _raise_unless_success(ack: Ack) -> None:
    if ack.error is not None:
        raise ack.error


__all__ = ["Publisher"]
