"""A class callback's ``setup()`` and ``teardown()``, and the loop async code runs on.

Both hooks are optional and may be sync or ``async def``. A sync hook runs
in a thread of its own, so that connecting to a database, say, never blocks
the reactor; an async one runs on the same event loop as the consumer's async
callbacks, so that what it opens (a client session bound to a loop) works in
them.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import defer


class LoopThread:
    """An asyncio event loop running in a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str = "fedmq-asyncio"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def stop(self) -> None:
        """Stop the loop; its thread closes it and ends."""
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.loop.stop)


def reactor_event_loop(reactor: Any) -> asyncio.AbstractEventLoop | None:
    """The event loop of Twisted's asyncio reactor, or None under any other reactor.

    The one place fedmq reads it: async callbacks and hooks run on this loop
    when there is one, on a :class:`LoopThread` otherwise.
    """
    loop: asyncio.AbstractEventLoop | None = getattr(reactor, "_asyncioEventloop", None)
    return loop


def hook(callback: Any, name: str) -> Callable[[], Any] | None:
    """The callback object's ``setup`` or ``teardown`` method, or None."""
    method = getattr(callback, name, None)
    return method if callable(method) else None


def run_hook(
    method: Callable[[], Any], reactor: Any, loop: Callable[[], asyncio.AbstractEventLoop]
) -> defer.Deferred[None]:
    """Run a hook off the reactor thread; fire (on the reactor thread) when it is done.

    Args:
        method: the hook.
        reactor: the reactor, to come back to its thread.
        loop: returns the event loop async hooks run on (made on first use).
    """
    done: defer.Deferred[None] = defer.Deferred()

    def succeed(_: object = None) -> None:
        reactor.callFromThread(done.callback, None)

    def fail(exc: BaseException) -> None:
        reactor.callFromThread(done.errback, exc)

    if inspect.iscoroutinefunction(method):
        event_loop = loop()
        if event_loop is reactor_event_loop(reactor):
            return defer.Deferred.fromFuture(asyncio.ensure_future(method(), loop=event_loop))

        def finished(future: Any) -> None:
            exc = future.exception()
            if exc is None:
                succeed()
            else:
                fail(exc)

        asyncio.run_coroutine_threadsafe(method(), event_loop).add_done_callback(finished)
        return done

    def run() -> None:
        try:
            method()
        except BaseException as exc:
            fail(exc)
        else:
            succeed()

    threading.Thread(target=run, name="fedmq-lifecycle", daemon=True).start()
    return done
