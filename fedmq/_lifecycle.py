"""A class callback's ``setup()`` and ``teardown()``, and the event loop async code runs on.

Both hooks are optional and may be sync or ``async def``. A sync hook runs
in a thread of its own, so that connecting to a database, say, never blocks
the reactor; an async one runs on the same event loop as the consumer's async
callbacks, so that what it opens (a client session bound to a loop) works in
them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq.exceptions import CallbackError

log = logging.getLogger("fedmq")


class LoopThread:
    """An asyncio event loop running in a daemon thread, until :meth:`stop`."""

    def __init__(self, name: str = "fedmq-asyncio") -> None:
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


class Hooks:
    """One consumer's ``setup()`` and ``teardown()``, each run at most once, and its event loop.

    ``teardown()`` runs only if ``setup()`` ran (or there is none), and only once.

    Args:
        callback: the loaded callback (a class callback may have the hooks).
        name: the consumer's name, for messages.
        reactor: the reactor, to come back to its thread.
        clock: what the teardown's timeout runs on.
        timeout: seconds ``teardown()`` may take (the ``drain_timeout``).

    """

    def __init__(self, callback: Any, name: str, reactor: Any, clock: Any, timeout: float) -> None:
        self._setup = hook(callback, "setup")
        self._teardown = hook(callback, "teardown")
        self._name = name
        self._reactor = reactor
        self._clock = clock
        self._timeout = timeout
        #: "running" once setup() ran (or there is none); "done" once teardown() ran or failed.
        self.state: Literal["not started", "running", "done"] = "not started"
        self._loop_thread: LoopThread | None = None

    @property
    def has_setup(self) -> bool:
        """The callback has a setup()."""
        return self._setup is not None

    @property
    def tears_down(self) -> bool:
        """A teardown() is still to run."""
        return self._teardown is not None and self.state == "running"

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The event loop async callbacks and hooks run on: the reactor's, or one of ours."""
        reactor_loop = reactor_event_loop(self._reactor)
        if reactor_loop is not None:
            return reactor_loop
        if self._loop_thread is None:
            self._loop_thread = LoopThread()
        return self._loop_thread.loop

    def set_up(self) -> defer.Deferred[None]:
        """Run setup(); fails with a :class:`CallbackError` when it raises."""
        if self._setup is None:
            self.state = "running"
            return defer.succeed(None)

        def ran(_: None) -> None:
            self.state = "running"

        def failed(failure: Failure) -> Failure:
            exc = failure.value
            error = CallbackError(
                f"setup() of the callback {self._name!r} raised {type(exc).__name__}: {exc}",
                raised_by_callback=True,
            )
            error.__cause__ = exc
            self.state = "done"
            return Failure(error)

        return run_hook(self._setup, self._reactor, self.event_loop).addCallbacks(ran, failed)

    async def tear_down(self) -> None:
        """Call teardown(), once, if setup() ran (or there is none); log what goes wrong."""
        if self.state != "running":
            return
        self.state = "done"
        if self._teardown is None:
            return
        done = run_hook(self._teardown, self._reactor, self.event_loop)
        done.addTimeout(self._timeout, self._clock)
        try:
            await done
        except defer.TimeoutError:
            log.exception(
                "teardown() of the callback %r did not return within %g s",
                self._name,
                self._timeout,
            )
        except Exception as exc:
            log.error(  # noqa: TRY400 - exc_info is given explicitly below
                "teardown() of the callback %r raised %s: %s",
                self._name,
                type(exc).__name__,
                exc,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def stop_loop(self) -> None:
        """Stop the loop thread, if one was made."""
        if self._loop_thread is not None:
            self._loop_thread.stop()
