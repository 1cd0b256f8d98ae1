"""A publisher's bound: posts let in while the unconfirmed messages fit, from any thread.

:class:`Intake` counts the messages (and body bytes) posted and not yet
settled. Under the bound a post goes on at once; over it, a post from
another thread blocks (up to its timeout) and a post on the reactor thread
waits in line without blocking. Other threads hand their messages over in
batches: one reactor wake-up per batch, not per message. ``flush()`` callers
wait here until every message let in has its status.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from fedmq._confirms import Outgoing, settle
from fedmq._reactor_types import ThreadHopClock, as_reactor_time
from fedmq.acks import AckStatus
from fedmq.exceptions import PublishTimeout

#: The reason a post made once the publisher is closing gets CANCELED.
CLOSED = ": the publisher is closed"


class Intake:
    """Messages in, under the bound; handed to ``submit`` on the reactor thread.

    Args:
        reactor: the reactor whose thread sends (``callFromThread``, the time).
        max_count: the most messages let in and not yet settled.
        max_bytes: the most body bytes let in and not yet settled.

    ``submit`` (set once the link that sends exists) is called on the
    reactor thread with each message let in, in order.

    """

    def __init__(self, reactor: ThreadHopClock, max_count: int, max_bytes: int) -> None:
        self._reactor = reactor
        self._max = max_count
        self._max_bytes = max_bytes
        self.submit: Callable[[Outgoing], None] = _unset
        # Shared with other threads, under _lock: what is in flight (handed
        # over, sent, unconfirmed), and the batch not yet handed over.
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # held by holding _lock, at C speed
        self.count = 0
        self._bytes = 0
        self._outbox: deque[Outgoing] = deque()
        self._wake_scheduled = False
        self.closing = False
        # Reactor thread only: posts over the bound, and flush() callers.
        self._waiting: deque[tuple[Outgoing, defer.Deferred[None] | None]] = deque()
        self._flushers: list[defer.Deferred[None]] = []

    @property
    def waiting(self) -> int:
        """Messages posted on the reactor thread over the bound, not yet sent."""
        return len(self._waiting)

    def _over_bound(self, size: int) -> bool:
        return self.count > 0 and (self.count >= self._max or self._bytes + size > self._max_bytes)

    # --- letting in --------------------------------------------------------------

    def enter(
        self, item: Outgoing, on_reactor_thread: bool, tell_sent: bool, timeout: float
    ) -> defer.Deferred[None] | None:
        """Let ``item`` in (see :meth:`admit_here` and :meth:`admit_from_thread`)."""
        if on_reactor_thread:
            return self.admit_here(item, tell_sent)
        self.admit_from_thread(item, timeout)
        return None

    def admit_here(self, item: Outgoing, tell_sent: bool) -> defer.Deferred[None] | None:
        """On the reactor thread: send now, or line up behind the bound (never block).

        Over the bound, and with ``tell_sent``, returns a Deferred fired once it is sent.
        """
        size = len(item.body)
        with self._lock:
            closing = self.closing
            admitted = not closing and not self._waiting and not self._over_bound(size)
            if admitted:
                self.count += 1
                self._bytes += size
        if closing:
            settle(item, AckStatus.CANCELED, CLOSED)
            return None
        if admitted:
            self.submit(item)
            return None
        sent: defer.Deferred[None] | None = defer.Deferred() if tell_sent else None
        self._waiting.append((item, sent))
        return sent

    def admit_from_thread(self, item: Outgoing, timeout: float) -> None:
        """From another thread: wait (up to ``timeout``) for room, then hand over."""
        size = len(item.body)
        with self._lock:
            if self._over_bound(size) and not self.closing:
                end = time.monotonic() + timeout
                while not self.closing and self._over_bound(size):
                    remaining = end - time.monotonic()
                    if remaining <= 0:
                        break
                    self._room.wait(remaining)
            refusal = None
            if self.closing:
                refusal = (AckStatus.CANCELED, CLOSED)
            elif self._over_bound(size):
                refusal = (AckStatus.TIMEOUT, f": no room in {timeout:g} s (the bound is full)")
            else:
                self.count += 1
                self._bytes += size
                self._outbox.append(item)
                wake = not self._wake_scheduled
                self._wake_scheduled = True
        if refusal is not None:
            self._reactor.callFromThread(settle, item, *refusal)
        elif wake:
            self._reactor.callFromThread(self.hand_over)

    def hand_over(self) -> None:
        """On the reactor thread: send the batch other threads posted since the last turn."""
        with self._lock:
            batch, self._outbox = self._outbox, deque()
            self._wake_scheduled = False
        submit = self.submit
        for item in batch:
            submit(item)

    # --- settling ----------------------------------------------------------------

    def settled(self, count: int, size: int) -> None:
        """``count`` messages got their status: free their room, let others in."""
        with self._lock:
            self.count -= count
            self._bytes -= size
            self._room.notify_all()
            idle = self.count == 0 and not self._outbox
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
                self.count += 1
                self._bytes += size
                admitted.append(waiting.popleft())
        submit = self.submit
        for item, sent in admitted:
            submit(item)
            if sent is not None:
                sent.callback(None)

    # --- flushing and closing ------------------------------------------------------

    def flushed(self, timeout: float) -> defer.Deferred[None]:
        """On the reactor thread: fires once every message let in has its status.

        Fails with :class:`~fedmq.PublishTimeout` after ``timeout`` seconds.
        """
        with self._lock:
            idle = self.count == 0 and not self._outbox and not self._waiting
        if idle:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._flushers.append(d)

        def timed_out(_result: Any, _timeout: float) -> None:
            # Forgotten at once: flushes timing out under steady traffic must not pile up.
            with contextlib.suppress(ValueError):
                self._flushers.remove(d)
            raise PublishTimeout(
                f"{self.count + len(self._waiting)} messages still had no status "
                f"after {timeout:g} s"
            )

        return d.addTimeout(timeout, as_reactor_time(self._reactor), timed_out)

    async def drain(self, timeout: float, reason: str) -> None:
        """On the reactor thread: let nothing more in, and wait (up to ``timeout``) for statuses.

        Then what other threads handed over is sent, and the posts still
        waiting for room get CANCELED, ``reason`` ending their error's text.
        """
        self.shut()
        with contextlib.suppress(PublishTimeout):
            await self.flushed(timeout)
        self.cancel_waiting(reason)

    def shut(self) -> None:
        """Let nothing more in: later posts, and threads blocked on the bound, get CANCELED."""
        with self._lock:
            self.closing = True
            self._room.notify_all()

    def cancel_waiting(self, reason: str) -> None:
        """On the reactor thread: send what other threads handed over; cancel what waits."""
        self.hand_over()
        waiting, self._waiting = self._waiting, deque()
        for item, sent in waiting:
            settle(item, AckStatus.CANCELED, reason)
            if sent is not None:
                sent.callback(None)


def _unset(_item: Outgoing) -> None:
    raise RuntimeError("Intake.submit was not set")  # pragma: no cover - a wiring mistake


__all__ = ["CLOSED", "Intake"]
