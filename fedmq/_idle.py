"""A deadline on hearing from the broker: a connection silent for too long is given up."""

from __future__ import annotations

from collections.abc import Callable

from fedmq._reactor_types import Clock, DelayedCall


class IdleTimeout:
    """Calls ``on_timeout`` once nothing was received for ``timeout`` seconds.

    :meth:`received` is on the per-chunk receive path, so it only notes the
    time. One timer checks that time at the deadline it implies and, if
    something arrived meanwhile, waits again until the new deadline: a busy
    connection reschedules it about once per ``timeout``, not once per chunk.

    Args:
        clock: the reactor (or a ``Clock`` in tests) that tells the time and runs the timer.
        on_timeout: called once, with no argument, when the deadline passes in silence.

    """

    __slots__ = ("_call", "_clock", "_now", "_on_timeout", "last_received", "timeout")

    def __init__(self, clock: Clock, on_timeout: Callable[[], None]) -> None:
        self._clock = clock
        self._now = clock.seconds
        self._on_timeout = on_timeout
        self._call: DelayedCall | None = None
        #: Seconds of silence allowed; 0 until :meth:`start`.
        self.timeout = 0.0
        #: When something last arrived, on ``clock``'s time.
        self.last_received = self._now()

    def received(self) -> None:
        """Something arrived: the deadline moves to ``timeout`` seconds from now."""
        self.last_received = self._now()

    def start(self, timeout: float) -> None:
        """Start watching: ``timeout`` seconds of silence, counted from the last receive."""
        self.stop()
        self.timeout = timeout
        self._check()

    def stop(self) -> None:
        """Stop watching (the connection ended)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        left = self.last_received + self.timeout - self._now()
        if left > 0:
            self._call = self._clock.callLater(left, self._check)
        else:
            self._call = None
            self._on_timeout()
