"""The publish seam test doubles stand on: handlers that take publishes instead of the broker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: The handlers of intercepting_publishes() blocks, innermost last; shared by all threads.
handlers: list[Callable[[Any], None]] = []
_lock = threading.Lock()


@contextlib.contextmanager
def intercepting_publishes(handler: Callable[[Any], None]) -> Iterator[None]:
    """Hand every message published inside the block to ``handler``, and send nothing.

    This is the seam test doubles stand on (:func:`fedmq.testing.mock_sends`
    is one). It holds in every thread while the block runs, and for every
    way of publishing: :func:`fedmq.publish`, and a :class:`fedmq.Publisher`'s
    ``publish()`` and ``post()``. Blocks nest; the innermost handler gets the
    message. Inside, a publish completes as it would once the broker
    confirmed: :func:`~fedmq.publish` returns None, a fired Deferred or a
    done awaitable, and ``post()``'s ``on_ack`` gets a SUCCESS status.

    Args:
        handler: called with each message published, in the thread that published it.

    """
    with _lock:
        handlers.append(handler)
    try:
        yield
    finally:
        with _lock:
            handlers.remove(handler)


def intercept(message: Any) -> bool:
    """Hand ``message`` to the innermost handler; False when no block is active."""
    with _lock:
        handler = handlers[-1] if handlers else None
    if handler is None:
        return False
    handler(message)
    return True


__all__ = ["handlers", "intercept", "intercepting_publishes"]
