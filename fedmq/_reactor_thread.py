"""Where the caller stands relative to the reactor, and starting it for scripts.

A script's first publish runs the global reactor in a daemon thread
(``fedmq-reactor``) for the rest of the process. A reactor that has run and
stopped (a blocking ``consume()`` returned) cannot run again: publishing then
fails at once instead of waiting for a reactor that never comes.
"""

from __future__ import annotations

import threading
from typing import Any

from fedmq.exceptions import PublishError

#: How long a script waits for the reactor thread to start.
START_TIMEOUT = 30.0

_lock = threading.Lock()
_thread: list[threading.Thread] = []


def caller_context(reactor: Any, detects_thread: bool) -> bool:
    """True when the caller should get the Twisted form (it runs on the reactor thread).

    Args:
        reactor: the reactor in use.
        detects_thread: False for a reactor handed in by the caller (Twisted
            code, or a ``Clock`` in tests): always the Twisted form then.
    """
    if not detects_thread:
        return True
    from twisted.python.threadable import isInIOThread

    return bool(reactor.running) and isInIOThread()


def ensure_reactor_running(reactor: Any, in_reactor: bool) -> None:
    """Start the global reactor in a daemon thread unless it runs; fail if it cannot.

    Raises:
        PublishError: the reactor has stopped for good, or did not start in time.
    """
    if in_reactor or reactor.running:
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


__all__ = ["START_TIMEOUT", "caller_context", "ensure_reactor_running"]
