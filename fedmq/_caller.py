"""The form a publisher's answer takes for its caller: a Deferred, an awaitable, or a wait.

On the reactor thread a caller gets a Deferred (an asyncio future in a task
under Twisted's asyncio reactor); in an asyncio task on another thread an
awaitable; in any other thread, the call blocks until the answer comes.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python import threadable

from fedmq._reactor_thread import (
    ensure_reactor_running,
    in_callers_form,
    resolve_future,
    twisted_or_asyncio,
)
from fedmq._reactor_types import ThreadHopClock
from fedmq.acks import Ack, OnAck

#: Seconds a caller waits, beyond an operation's own timeout, for the reactor thread's answer.
HOP_MARGIN = 5.0


class CallerForm:
    """Tells whether a caller is on the reactor thread, and answers it in its form.

    Args:
        reactor: the reactor that runs the publisher.
        detects_thread: False for a reactor the caller handed in: the
            Twisted form always, even before the reactor runs.
        reactor_thread: the ident of the thread that runs ``reactor`` when
            it is not the global reactor's (a consumer's own thread).

    """

    __slots__ = ("_detects_thread", "_reactor", "_reactor_thread")

    def __init__(
        self, reactor: ThreadHopClock, detects_thread: bool, reactor_thread: int | None
    ) -> None:
        self._reactor = reactor
        self._detects_thread = detects_thread
        self._reactor_thread = reactor_thread

    def on_reactor_thread(self) -> bool:
        """True when the caller gets the Twisted form (it runs on the reactor thread)."""
        if self._reactor_thread is not None:
            return threading.get_ident() == self._reactor_thread
        if not self._detects_thread:
            return True
        # twisted.python.threadable.isInIOThread, without its call: once per post.
        return (
            bool(getattr(self._reactor, "running", False))
            and threadable.ioThread == threading.get_ident()
        )

    def start_reactor(self) -> None:
        """From another thread: make sure the reactor runs (a script's first call starts it).

        Raises:
            PublishError: the reactor has stopped for good, or did not start in time.

        """
        ensure_reactor_running(self._reactor, False)

    def done(self, ack: Ack, on_ack: OnAck | None, on_reactor_thread: bool) -> Any:
        """An answer already known: to ``on_ack``, or as the caller's Deferred or future."""
        if on_ack is not None:
            on_ack(ack)
            return None
        if on_reactor_thread:
            return defer.succeed(ack)
        future: concurrent.futures.Future[Ack] = concurrent.futures.Future()
        future.set_result(ack)
        return future

    def run(self, start: Callable[[], defer.Deferred[Any]], timeout: float) -> Any:
        """Run ``start`` (it returns a Deferred) on the reactor thread; answer in the caller's form.

        A caller on another thread waits ``timeout`` seconds, and :data:`HOP_MARGIN` more.
        """
        if self.on_reactor_thread():
            return twisted_or_asyncio(start())
        self.start_reactor()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def go() -> None:
            start().addBoth(lambda result: resolve_future(future, result))

        self._reactor.callFromThread(go)
        return in_callers_form(future, timeout + HOP_MARGIN)


__all__ = ["HOP_MARGIN", "CallerForm"]
