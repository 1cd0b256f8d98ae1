"""Small Deferred helpers shared by fedmq's modules."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from fedmq._connection import Clock, Connection
    from fedmq.publisher import Publisher

log = logging.getLogger("fedmq")


def chain(d: defer.Deferred[Any]) -> defer.Deferred[Any]:
    """A new Deferred that fires with ``d``'s result, leaving ``d``'s own chain as it was.

    Lets several callers wait on one shared Deferred (a stop in progress, a
    closed channel) without one caller's callbacks changing what the next sees.
    """
    out: defer.Deferred[Any] = defer.Deferred()

    def relay(result: Any) -> Any:
        out.callback(result)
        return result

    d.addBoth(relay)
    return out


def within(d: defer.Deferred[Any], seconds: float, clock: Clock) -> defer.Deferred[bool]:
    """Wait at most ``seconds`` for ``d``: fires True when ``d`` does, or False once time is up.

    A failure of ``d`` in time is passed on. ``d`` is taken over: a result it
    gets after the time is up is dropped (a late failure is not an unhandled
    error), so hand it a Deferred of its own, such as one a ``close()`` returned.
    """
    out: defer.Deferred[bool] = defer.Deferred()
    timer = clock.callLater(seconds, out.callback, False)

    def fired(result: object) -> None:
        if not timer.active():
            return
        timer.cancel()
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(True)

    d.addBoth(fired)
    return out


class BoundedCloses:
    """The closes of one graceful stop, each given at most ``seconds`` to complete.

    A close the broker does not answer in time is given up on: the connection
    is aborted (the broker requeues whatever it still holds unsettled), a
    warning is logged (once, however many closes time out), and the stop goes on.

    Args:
        connection: the connection to abort; None if there is none.
        seconds: how long each close may take.
        clock: what the timeouts run on.

    """

    def __init__(self, connection: Connection | None, seconds: float, clock: Clock) -> None:
        self._connection = connection
        self._seconds = seconds
        self._clock = clock
        self._aborted = False

    def within(self, closing: defer.Deferred[Any], waits: float = 0.0) -> defer.Deferred[None]:
        """Fires once ``closing`` does, or after the timeout with the connection aborted.

        Args:
            closing: what a ``close()`` returned.
            waits: seconds ``closing`` may spend on purpose before it closes,
                added to the timeout.

        """
        bounded = within(closing, waits + self._seconds, self._clock)
        return bounded.addCallback(self._check)

    def publisher(self, publisher: Publisher) -> defer.Deferred[None]:
        """Close ``publisher``: its confirms get the timeout, then its channel close does."""
        return self.within(publisher.close_deferred(self._seconds), waits=self._seconds)

    def _check(self, in_time: bool) -> None:
        if in_time or self._aborted:
            return
        self._aborted = True
        log.warning(
            "The broker did not answer a close within %g s (connect_timeout); "
            "dropping the connection (the broker requeues unsettled messages)",
            self._seconds,
        )
        if self._connection is not None:
            self._connection.abort()
