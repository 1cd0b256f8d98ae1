"""A reactor for tests: Twisted's Clock, plus calls from worker threads run when the test says.

fedmq runs sync callbacks in worker threads and async ones on a loop thread;
they report back with ``reactor.callFromThread``. :class:`ThreadedClock`
queues those calls instead of running them, so a test decides when they run
(:meth:`ThreadedClock.run_until`) and moves time on with ``advance()``:
a consumer on an :class:`~fedmq.testing.InMemoryBroker` then runs with no
real reactor, no sockets and no sleeps.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import task

__all__ = ["ThreadedClock"]


class ThreadedClock(task.Clock):
    """A :class:`twisted.internet.task.Clock` that also takes ``callFromThread``."""

    def __init__(self) -> None:
        super().__init__()
        self._from_threads: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        """Queue ``f(*args)`` to run in the test's thread, at its next :meth:`run_until`."""
        self._from_threads.put((f, args))

    def run_until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run the calls worker threads queue, as they come, until ``done()`` holds.

        ``done()`` is checked before each call and whenever no call has come
        for a moment, so a condition a worker thread makes true on its own
        (a callback appending to a list) is seen too.

        Args:
            done: the condition to wait for.
            timeout: seconds of wall time after which to give up.

        Raises:
            TimeoutError: ``done()`` still does not hold after ``timeout`` seconds.

        """
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the condition still does not hold after {timeout:g} s")
            try:
                f, args = self._from_threads.get(timeout=0.01)
            except queue.Empty:
                continue
            f(*args)

    def run_pending(self) -> None:
        """Run every call worker threads have queued so far, without waiting."""
        while not self._from_threads.empty():
            f, args = self._from_threads.get_nowait()
            f(*args)
