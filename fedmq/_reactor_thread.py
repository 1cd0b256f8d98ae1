"""Where the caller stands relative to the reactor; answers in its form; a reactor for scripts.

A script's first publish runs the global reactor in a daemon thread
(``fedmq-reactor``) for the rest of the process. A reactor that has run and
stopped (a blocking ``consume()`` returned) cannot run again: publishing then
fails at once instead of waiting for a reactor that never comes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq.acks import Ack
from fedmq.exceptions import PublishError, PublishTimeout

#: How long a script waits for the reactor thread to start.
START_TIMEOUT = 30.0

_lock = threading.Lock()
_thread: list[threading.Thread] = []


def ensure_reactor_running(reactor: Any, in_reactor: bool) -> None:
    """Start the global reactor in a daemon thread unless it runs; fail if it cannot.

    Raises:
        PublishError: the reactor has stopped for good, or did not start in time.

    """
    if in_reactor or getattr(reactor, "running", True):
        return
    with _lock:
        if reactor.running:
            return
        if getattr(reactor, "_startedBefore", False) and not _thread:
            raise _stopped_error()
        if _thread and not _thread[0].is_alive():
            raise _stopped_error()
        if not _thread:
            started = threading.Event()
            reactor.callWhenRunning(started.set)
            thread = threading.Thread(
                target=reactor.run,
                kwargs={"installSignalHandlers": False},
                name="fedmq-reactor",
                daemon=True,
            )
            _thread.append(thread)
            thread.start()
            if not started.wait(START_TIMEOUT):
                raise PublishError(f"The Twisted reactor did not start within {START_TIMEOUT:g} s")


def _stopped_error() -> PublishError:
    return PublishError(
        "Nothing can be published: the Twisted reactor has stopped (a blocking consume() "
        "returned, or reactor.stop() ran) and cannot run again in this process; publish "
        "before consume() returns, or from its callback"
    )


def resolve_future(future: concurrent.futures.Future[Any], result: Any) -> None:
    if isinstance(result, Failure):
        future.set_exception(result.value)
    else:
        future.set_result(result)


def twisted_or_asyncio(d: defer.Deferred[Any]) -> Any:
    """A reactor-thread Deferred as an asyncio future when the caller is an asyncio task."""
    loop = _running_task_loop()
    return d.asFuture(loop) if loop is not None else d


class AckWaiter:
    """A blocking caller's wait for one message's :class:`~fedmq.Ack`.

    The ``on_ack`` given to ``post()``: the reactor thread hands the Ack over
    and releases a bare lock the caller waits on; no Future, no Condition.
    """

    __slots__ = ("_ack", "_lock")

    def __init__(self) -> None:
        self._ack: Ack | None = None
        self._lock = threading.Lock()
        self._lock.acquire()

    def __call__(self, ack: Ack) -> None:
        if self._ack is None:  # a message gets one status; never release twice
            self._ack = ack
            self._lock.release()

    def wait(self, timeout: float) -> None:
        """Block until the Ack comes; return on SUCCESS, else raise its error.

        Raises:
            PublishError: the Ack's error, or PublishTimeout if none came in time.

        """
        if not self._lock.acquire(timeout=timeout):
            raise PublishTimeout(f"No answer from the reactor thread within {timeout:g} s")
        assert self._ack is not None  # noqa: S101 - set before the lock is released
        if self._ack.error is not None:
            raise self._ack.error


def blocks_the_caller() -> bool:
    """True for a plain thread: not an asyncio task, which gets an awaitable instead."""
    return _running_task_loop() is None


def in_callers_form(future: concurrent.futures.Future[Any], timeout: float) -> Any:
    """From another thread: an awaitable in an asyncio task, else block for the result."""
    if _running_task_loop() is not None:
        return _awaitable(future)
    try:
        result = future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise PublishTimeout(f"No answer from the reactor thread within {timeout:g} s") from None
    if isinstance(result, Ack):
        if result.error is not None:
            raise result.error
        return None
    return result


async def _awaitable(future: concurrent.futures.Future[Any]) -> Any:
    result = await asyncio.wrap_future(future)
    if isinstance(result, Ack):
        if result.error is not None:
            raise result.error
        return None
    return result


def _running_task_loop() -> asyncio.AbstractEventLoop | None:
    # Not get_running_loop(): raising RuntimeError at every publish outside
    # asyncio costs more than the rest of the check.
    # asyncio's None-returning form: get_running_loop() raising at every publish costs more.
    loop = asyncio._get_running_loop()  # noqa: SLF001
    if loop is None:
        return None
    return loop if asyncio.current_task(loop) is not None else None


__all__ = [
    "START_TIMEOUT",
    "AckWaiter",
    "blocks_the_caller",
    "ensure_reactor_running",
    "in_callers_form",
    "resolve_future",
    "twisted_or_asyncio",
]
