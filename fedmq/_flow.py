"""Which queues consume, and why the others do not: holds, their reasons, the byte budget.

A queue consumes whenever the consumer is connected and nothing holds it.
Each hold has a reason (the user paused it, its unsettled bytes are over
``max_unacked_bytes``, its host is unhealthy); a queue consumes again once
the last reason is released. :class:`Holds` keeps the reasons for the
consumer's whole life, across reconnects, and tells the session in charge
(:mod:`fedmq._queue_consumers`) to cancel or consume again; a session opened later
consumes only the queues nothing holds.

Everything here runs on the reactor thread.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from twisted.internet import defer

log = logging.getLogger("fedmq")

#: The user paused the queue (``Consumer.pause``, or ``paused = true``).
PAUSED = "paused"
#: The queue's unsettled deliveries hold more than its ``max_unacked_bytes``.
OVER_BYTES = "over max_unacked_bytes"
#: The host is unhealthy and the queue suspends on bad host health.
HOST_UNHEALTHY = "host unhealthy"
#: The holds whose queue's prefetched, unstarted deliveries go back to the queue.
#: The byte budget keeps them: they are what it counts, and they bring it down.
RETURNS_UNSTARTED = frozenset({PAUSED, HOST_UNHEALTHY})

#: Called with (queue, consuming, reasons) at every change of a queue's holds.
QueueListener = Callable[[str, bool, frozenset[str]], object]
#: Called with (queue, error) when consuming a queue again failed.
ReconsumeFailedListener = Callable[[str, Exception], object]


class QueueState(NamedTuple):
    """Whether a queue consumes, and why not.

    ``consuming`` is true when nothing holds the queue: it consumes whenever
    the consumer is connected. ``reasons`` names each hold ("paused", "over
    max_unacked_bytes", "host unhealthy").
    """

    consuming: bool
    reasons: frozenset[str]


class Converger(Protocol):
    """What holds act through: a session's consumers, which consume or cancel a queue."""

    def converge(self, queue: str) -> defer.Deferred[None]:
        """Consume ``queue`` if nothing holds it, cancel its consumer otherwise."""


class Holds:
    """The hold reasons of each queue of one consumer, kept across its sessions."""

    def __init__(self, queues: Iterable[tuple[str, bool]] = ()) -> None:
        self._reasons: dict[str, set[str]] = {}
        self._listeners: list[QueueListener] = []
        self._failure_listeners: list[ReconsumeFailedListener] = []
        # Changes made while the listeners are being told of one, told after it.
        self._untold: deque[tuple[str, bool, frozenset[str]]] = deque()
        self._telling = False
        #: The consumers that act on changes (a session's); None between sessions.
        self.consumers: Converger | None = None
        for queue, paused in queues:
            self.add(queue, paused=paused)

    # --- queues ------------------------------------------------------------------

    def add(self, queue: str, *, paused: bool = False) -> None:
        """Know ``queue``, held by "paused" when ``paused``."""
        self._reasons.setdefault(queue, set())
        if paused:
            self._reasons[queue].add(PAUSED)

    def remove(self, queue: str) -> None:
        """Forget ``queue`` (it was removed from the consumer)."""
        self._reasons.pop(queue, None)

    def __contains__(self, queue: object) -> bool:
        return queue in self._reasons

    def consumes(self, queue: str) -> bool:
        """Whether ``queue`` is known and nothing holds it."""
        reasons = self._reasons.get(queue)
        return reasons is not None and not reasons

    def reasons(self, queue: str) -> frozenset[str]:
        """Why ``queue`` does not consume (empty: it does)."""
        return frozenset(self._reasons.get(queue, ()))

    def states(self) -> dict[str, QueueState]:
        """Each queue's :class:`QueueState`, in the order the queues were added."""
        return {
            queue: QueueState(not reasons, frozenset(reasons))
            for queue, reasons in self._reasons.items()
        }

    # --- holding and releasing ------------------------------------------------------

    def hold(self, queue: str | None, reason: str) -> defer.Deferred[None]:
        """Hold ``queue`` (every queue known now, for None) for ``reason``.

        A queue no longer known (removed while a byte budget or a change
        handed over from another thread still named it) is left alone.

        Returns:
            A Deferred firing once the session in charge has acted on it (the
            broker confirmed ``basic.cancel``, and unstarted deliveries went
            back when the reason returns them); at once between sessions.

        """
        return self._change(queue, reason, add=True)

    def release(self, queue: str | None, reason: str) -> defer.Deferred[None]:
        """Release ``queue``'s (every queue's, for None) hold for ``reason``.

        A queue no longer known is left alone, as by :meth:`hold`.

        Returns:
            A Deferred firing once the session in charge consumes the queues
            nothing holds any more; at once between sessions.

        """
        return self._change(queue, reason, add=False)

    def _change(self, queue: str | None, reason: str, *, add: bool) -> defer.Deferred[None]:
        targets = list(self._reasons) if queue is None else [queue]
        acting: list[defer.Deferred[None]] = []
        for name in targets:
            reasons = self._reasons.get(name)
            if reasons is None:
                # Removed meanwhile: nothing is left to hold or release, and
                # raising here would stop the reactor's per-message path.
                log.debug("Queue %r was removed: its %r hold changes nothing", name, reason)
                continue
            if (reason in reasons) == add:
                continue
            if add:
                reasons.add(reason)
            else:
                reasons.discard(reason)
            self._tell(name)
            if self.consumers is not None:
                acting.append(self.consumers.converge(name))
        return defer.gatherResults(acting, consumeErrors=True).addCallback(lambda _: None)

    def changed(self, queue: str) -> None:
        """Tell the listeners of a change to ``queue`` that did not go through a hold."""
        self._tell(queue)

    # --- listeners --------------------------------------------------------------------

    def add_listener(self, listener: QueueListener) -> None:
        """Call ``listener(queue, consuming, reasons)`` at every change of a queue's holds.

        Every listener hears the changes in the order they were made, a
        change made by a listener after the one it heard.
        """
        self._listeners.append(listener)

    def add_failure_listener(self, listener: ReconsumeFailedListener) -> None:
        """Call ``listener(queue, error)`` when consuming a queue again failed."""
        self._failure_listeners.append(listener)

    def _tell(self, queue: str) -> None:
        """Tell every listener of ``queue``'s state of now, after any change still being told.

        A listener that changes a queue's holds (the host's health holding a
        queue just added) starts a change of its own: it is told once the
        current one has reached every listener, so that each listener hears
        the changes in the order they were made and ends on the true state.
        """
        reasons = self.reasons(queue)
        self._untold.append((queue, not reasons and queue in self._reasons, reasons))
        if self._telling:
            return
        self._telling = True
        try:
            while self._untold:
                change = self._untold.popleft()
                for listener in list(self._listeners):
                    try:
                        listener(*change)
                    except Exception:
                        log.exception("A queue listener failed")
        finally:
            self._telling = False

    def reconsume_failed(self, queue: str, error: Exception) -> None:
        """Consuming ``queue`` again failed: tell the failure listeners."""
        log.error("Could not change the consumer of queue %r on the broker: %s", queue, error)
        for listener in list(self._failure_listeners):
            try:
                listener(queue, error)
            except Exception:
                log.exception("A queue listener failed")


class ByteBudget:
    """One queue's client-side ``max_unacked_bytes``: hold it over, release it under half.

    Counts the body sizes of the queue's deliveries from their arrival until
    they are settled (or go back unstarted). Past ``limit`` the queue is
    held ("over max_unacked_bytes"); once the count is down to
    ``limit // 2`` (the low-water mark) it is released. One budget per
    session: the unsettled deliveries of a lost connection are the broker's
    again.
    """

    __slots__ = ("_hold", "_release", "held", "limit", "live", "low", "queue", "unsettled")

    def __init__(
        self,
        queue: str,
        limit: int,
        hold: Callable[[str, str], object],
        release: Callable[[str, str], object],
    ) -> None:
        self.queue = queue
        self.limit = limit
        self.low = limit // 2
        self.unsettled = 0
        self.held = False
        #: False once its session ended or its queue was removed: it holds nothing more.
        self.live = True
        self._hold = hold
        self._release = release

    def received(self, size: int) -> None:
        """A delivery of ``size`` bytes arrived."""
        self.unsettled += size
        if self.unsettled > self.limit and not self.held and self.live:
            self.held = True
            self._hold(self.queue, OVER_BYTES)

    def settled(self, size: int) -> None:
        """A delivery of ``size`` bytes was settled, or went back unstarted."""
        self.unsettled -= size
        if self.held and self.unsettled <= self.low and self.live:
            self.held = False
            self._release(self.queue, OVER_BYTES)

    def retire(self) -> None:
        """Hold and release nothing more: the session ended, or the queue was removed.

        The deliveries it counted are the broker's again, or their queue is
        gone; a budget of the next session counts afresh.
        """
        self.live = False
