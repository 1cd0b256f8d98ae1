"""Small Deferred helpers shared by fedmq's modules."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer


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
