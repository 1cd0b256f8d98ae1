"""Retried, parked and dropped messages: a copy published first, the original settled after.

A copy goes to a retry queue, the consumed queue's dead queue, or the drop
exchange, confirmed and mandatory; its original is settled only once the
broker has confirmed the copy. A copy that fails to publish (nacked, timed
out, channel closed) leaves the original to go back to its queue: nothing is
lost, and a duplicate is the worst outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq import _tracing
from fedmq._acks import Acks
from fedmq._deferreds import chain
from fedmq._delivery import DROP, NACK, PARKED, RETRY, UNDECODABLE, Delivery, Outcome, Route
from fedmq._headers import DROPPED_REASON
from fedmq._policy import ErrorPolicy
from fedmq._stats import ConsumerStats
from fedmq.exceptions import BrokerError, PublishReturned

log = logging.getLogger("fedmq")


class Republisher:
    """Sends one channel's retried, parked and dropped messages where they go.

    Everything here runs on the reactor thread.

    Args:
        acks: the channel's tags, to settle the originals.
        stats: the consumer's counters.
        counts: the dispatcher's counters ("dropped", "requeued").
        policy: the routes, and how a copy is published.
        on_queue_missing: called when a retry or dead queue turned out to be
            gone; None: the original is requeued.

    """

    def __init__(
        self,
        acks: Acks,
        stats: ConsumerStats,
        counts: dict[str, int],
        policy: ErrorPolicy,
        on_queue_missing: Callable[[Exception], None] | None,
    ) -> None:
        self._acks = acks
        self._stats = stats
        self._counts = counts
        self.policy = policy
        self._on_queue_missing = on_queue_missing
        #: Copies published and not yet confirmed (their originals are in flight).
        self.in_flight = 0
        self._done: defer.Deferred[None] | None = None

    def drop(
        self, tag: int, item: Delivery, duration: float, reason: str, level: int = logging.INFO
    ) -> None:
        """Copy to the drop exchange (when there is one), then reject."""
        log.log(level, "%s dropped: %s", describe_delivery(item), reason)
        route = self.policy.drop_route(item, reason) if self._acks.live else None
        if route is None:
            self._reject(tag, item, DROP, duration)
        else:
            self._republish(tag, item, route, duration, then_ack=False)

    def retry(self, tag: int, item: Delivery, exc: BaseException, duration: float) -> None:
        """Copy to the next retry queue (or park it), then ack; without retry queues, drop."""
        route = self.policy.retry_route(item, exc) if self._acks.live else None
        if route is not None:
            self._republish(tag, item, route, duration, then_ack=True)
            return
        if not self._acks.live:
            self._acks.left(tag)
            return
        log.warning(
            "%s cannot be retried (queue %r has no retry queues: retry is disabled, or the "
            "queue is server-named, exclusive or auto-delete); dropping it instead",
            describe_delivery(item),
            item.queue,
        )
        self.drop(tag, item, duration, f"the callback raised Retry: {exc}")

    def park(self, tag: int, item: Delivery, reason: str) -> None:
        """Copy to the queue's dead queue, then ack; without one, reject."""
        route = self.policy.park_route(item, reason) if self._acks.live else None
        if route is None:
            log.error(
                "Rejected (to the queue's dead-letter exchange, if it has one) an %s",
                reason,
            )
            self._reject(tag, item, UNDECODABLE, 0.0)
            return
        log.error("Parking in %r an %s", route.routing_key, reason)
        self._republish(tag, item, route, 0.0, then_ack=True)

    def done(self) -> defer.Deferred[None]:
        """Fires once no copy waits for its confirm."""
        if self.in_flight == 0:
            return defer.succeed(None)
        if self._done is None:
            self._done = defer.Deferred()
        return chain(self._done)

    def _reject(self, tag: int, item: Delivery, outcome: Outcome, duration: float) -> None:
        self._stats.record(item.queue, outcome, duration)
        self._counts["dropped"] += 1
        self._acks.alone(tag, requeue=False)

    def _republish(
        self, tag: int, item: Delivery, route: Route, duration: float, then_ack: bool
    ) -> None:
        """Publish a copy along ``route``; settle the original once the broker confirms it."""
        self.in_flight += 1

        def published(result: object) -> None:
            self.in_flight -= 1
            if isinstance(result, Failure) and result.check(PublishReturned):
                self._unroutable(tag, item, route, duration)
            elif isinstance(result, Failure):
                log.error(
                    "Could not republish %s to %s (%s); it goes back to its queue",
                    describe_delivery(item),
                    describe_route(route),
                    result.getErrorMessage(),
                )
                self._stats.record(item.queue, NACK, duration)
                self._counts["requeued"] += 1
                self._acks.alone(tag, requeue=True)
            else:
                self._confirmed(tag, item, route, duration, then_ack)
            self._acks.flush((tag,))
            if self.in_flight == 0 and self._done is not None:
                done, self._done = self._done, None
                done.callback(None)

        _tracing.republishing(item, route, self.policy.publish(route, item.body)).addBoth(published)

    def _confirmed(
        self, tag: int, item: Delivery, route: Route, duration: float, then_ack: bool
    ) -> None:
        what = route.what
        outcome = RETRY if what == "retried" else PARKED if what == "parked" else DROP
        self._stats.record(item.queue, outcome, duration)
        if what == "dropped":
            self._counts["dropped"] += 1
        if then_ack:
            self._acks.to_ack(tag)
        else:
            self._acks.alone(tag, requeue=False)

    def _unroutable(self, tag: int, item: Delivery, route: Route, duration: float) -> None:
        """The broker routed a copy to no queue: a missing queue, or a drop exchange unbound."""
        if route.exchange:
            # The drop exchange has no queue bound for this routing key. Requeueing
            # would loop; the message goes where a Drop goes without the exchange.
            log.error(
                "The drop_exchange %r routed %s to no queue (bind a queue to it); "
                "dropping the message without the copy",
                route.exchange,
                describe_delivery(item),
            )
            headers = route.properties.headers
            reason = headers.get(DROPPED_REASON, "dropped") if headers else ""
            park = self.policy.park_route(item, str(reason)) if self._acks.live else None
            if park is not None:
                self._republish(tag, item, park, duration, then_ack=False)
            else:
                self._reject(tag, item, DROP, duration)
            return
        # One of fedmq's own queues is gone. Its message stays unsettled; a
        # reconnect declares the queue again, and the broker redelivers the message.
        missing = BrokerError(f"{describe_route(route)} does not exist (was it deleted?)")
        log.error("%s; reconnecting to declare it again", missing)
        if self._on_queue_missing is not None:
            self._acks.left(tag)
            self._on_queue_missing(missing)
        else:
            self._acks.alone(tag, requeue=True)


def describe_delivery(item: Delivery) -> str:
    """How a log line names a delivery: its message id, topic and queue."""
    message_id = getattr(item.properties, "message_id", None)
    return f"message {message_id} (topic {item.routing_key!r}, queue {item.queue!r})"


def describe_route(route: Route) -> str:
    """How a log line names where a copy goes."""
    if route.exchange:
        return f"exchange {route.exchange!r} (routing key {route.routing_key!r})"
    return f"queue {route.routing_key!r}"
