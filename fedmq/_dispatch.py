"""Dispatch: deliveries in, settlements back, on the reactor thread.

The reactor thread receives each delivery and hands it to an executor (see
:mod:`fedmq._executors`). Executors report outcomes back in batches, and
:class:`Dispatcher` settles them at once: after each batch, the finished
deliveries from the oldest unsettled one on are acked with one
``multiple=True`` ack, and every other finished delivery with an ack of its
own, so that no callback, however slow, holds back another's ack; nacks and
rejects are always sent one delivery at a time; a message retried, parked or
dropped to the drop exchange is settled once the broker has confirmed its copy.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq import _tracing
from fedmq._deferreds import chain
from fedmq._delivery import (
    ACK,
    DROP,
    ERROR,
    HALT,
    INVALID,
    NACK,
    PARKED,
    RETRY,
    RETURNED,
    UNDECODABLE,
    Delivery,
    Result,
    Route,
)
from fedmq._error_window import ErrorCount, ErrorWindow
from fedmq._fedora import SchemaInvalid
from fedmq._flow import ByteBudget
from fedmq._headers import DROPPED_REASON
from fedmq._policy import ErrorPolicy
from fedmq._stats import ConsumerStats
from fedmq.config import Config
from fedmq.exceptions import BrokerError, ConsumerError, HaltConsumer, PublishReturned
from fedmq.message import Message

log = logging.getLogger("fedmq")


class Dispatcher:
    """Hands one channel's deliveries to an executor and settles their outcomes.

    Everything here runs on the reactor thread. Delivery tags are settled in
    one of three ways: an ack covering the run of finished deliveries that
    starts at the oldest unsettled one (``multiple=True`` when the run holds
    more than one delivery to ack), an ack of one finished delivery that an
    unfinished one precedes, or a nack or reject of exactly one delivery.
    Each batch of outcomes is settled at once, and no tag is settled twice.
    No delivery is acked before its callback has finished; one that is
    republished (to a retry queue, its dead queue or the drop exchange) is
    settled only once the broker confirmed the copy.

    Args:
        channel: the channel the deliveries came on; settlements go there.
        executor_factory: builds the executor, given the results sink.
        on_halt: called once with the callback's :class:`HaltConsumer`.
        on_error: called with each consumer error (a :class:`ConsumerError`,
            an unexpected exception, or a message of a type not accepted), the
            message (or None), the seconds the callback ran, and how the error
            window counted it.
        stats: the consumer's counters.
        policy: where retried, parked and dropped messages go.
        on_queue_missing: called when a retry queue or dead queue turned out
            to be gone (deleted while fedmq ran): the consumer reconnects,
            which declares them again.
        errors: the consumer's error window, shared with its executors; it
            counts the consumer errors the dispatcher finds itself (a message
            of a type not accepted).

    """

    def __init__(
        self,
        channel: Any,
        executor_factory: Callable[[Callable[[list[Result]], None]], Any],
        on_halt: Callable[[HaltConsumer], None],
        on_error: Callable[[BaseException, Message | None, float, ErrorCount], None],
        stats: ConsumerStats | None = None,
        policy: ErrorPolicy | None = None,
        on_queue_missing: Callable[[Exception], None] | None = None,
        errors: ErrorWindow | None = None,
    ) -> None:
        self.stats = stats if stats is not None else ConsumerStats()
        self.policy = policy if policy is not None else ErrorPolicy()
        self.errors = errors if errors is not None else ErrorWindow.of(Config(), monotonic)
        self._channel = channel
        self._ack = channel.ack
        self._pending: deque[int] = deque()
        # tag -> True when it still needs an ack, False once settled alone
        # (nacked, rejected, or acked on its own past an unfinished tag).
        self._finished: dict[int, bool] = {}
        self._on_halt = on_halt
        self._on_error = on_error
        self._on_queue_missing = on_queue_missing
        self._live = True
        self._stopped: defer.Deferred[None] | None = None
        self._republishing = 0
        self._republished: defer.Deferred[None] | None = None
        self.in_flight = 0
        self.counts = {"received": 0, "acked": 0, "requeued": 0, "dropped": 0, "failed": 0}
        # queue -> its byte budget; empty (no cost per message) unless one is set.
        self._budgets: dict[str, ByteBudget] = {}
        self._executor = executor_factory(self._on_results)
        self._submit = self._executor.submit

    def deliver_for(
        self, queue: str, budget: ByteBudget | None = None
    ) -> Callable[[int, bool, str, str, Any, bytes], None]:
        """The delivery handler for ``queue``'s consumer on this channel.

        With a ``budget``, each delivery's body size counts in it until settled.
        """
        pending, counts = self._pending, self.counts
        queue_counts = self.stats.queue(queue)
        checks_type = self.policy.message_types is not None

        def on_delivery(
            tag: int,
            redelivered: bool,
            exchange: str,
            routing_key: str,
            properties: Any,
            body: bytes,
        ) -> None:
            pending.append(tag)
            counts["received"] += 1
            queue_counts["received"] += 1
            self.in_flight += 1
            item = Delivery(tag, redelivered, exchange, routing_key, properties, body, queue)
            if checks_type:
                invalid = self.policy.invalid_type(properties)
                if invalid is not None:
                    error = ConsumerError(f"{_describe_delivery(item)}: {invalid}")
                    self._on_results([Result(tag, INVALID, error, None, 0.0, item)])
                    return
            self._submit(item)

        if budget is None:
            return on_delivery
        self._budgets[queue] = budget
        received = budget.received

        def on_counted_delivery(
            tag: int,
            redelivered: bool,
            exchange: str,
            routing_key: str,
            properties: Any,
            body: bytes,
        ) -> None:
            received(len(body))
            on_delivery(tag, redelivered, exchange, routing_key, properties, body)

        return on_counted_delivery

    def _count_settled(self, items: Iterable[Delivery]) -> None:
        budgets = self._budgets
        for item in items:
            budget = budgets.get(item.queue)
            if budget is not None:
                budget.settled(len(item.body))

    def _on_results(self, batch: list[Result]) -> None:
        finished = self._finished
        record = self.stats.record
        self.stats.batch_done()
        self.in_flight -= len(batch)
        if self._budgets:
            self._count_settled(result.delivery for result in batch)
        for result in batch:
            _tracing.settling(result.delivery, result.outcome, result.error)
            if result.outcome == ACK:  # the common case, kept inline
                record(result.delivery.queue, ACK, result.duration)
                finished[result.delivery_tag] = True
            else:
                self._settle_other(result)
        self._ack_finished_run()
        if finished and self._live:
            self._ack_past_unfinished(result.delivery_tag for result in batch)
        _tracing.batch_settled()

    def _settle_other(self, result: Result) -> None:
        """Settle a delivery whose outcome is not a plain ack."""
        tag, outcome, exc, message, duration, item, errors = result
        if outcome in (NACK, RETURNED):
            self.stats.record(item.queue, outcome, duration)
            self._finished[tag] = False
            self.counts["requeued"] += 1
            self._settle_alone(tag, requeue=True)
        elif outcome == DROP:
            if isinstance(exc, SchemaInvalid):
                # Refused by its schema class before any callback saw it.
                self._drop(tag, item, duration, str(exc), level=logging.WARNING)
            else:
                self._drop(tag, item, duration, f"the callback raised Drop: {exc}")
        elif outcome == UNDECODABLE:
            self._park(tag, item, f"undecodable {exc}")
        elif outcome == HALT and isinstance(exc, HaltConsumer):
            self._halt(tag, item, exc, duration)
        elif exc is None:
            raise TypeError(f"the outcome {outcome!r} of delivery {tag} came without its error")
        elif outcome == RETRY:
            self._retry(tag, item, exc, duration)
        elif outcome == INVALID and self.policy.drop_invalid_messages:
            self._drop(tag, item, duration, str(exc), level=logging.WARNING)
        elif outcome == INVALID:
            self._consumer_error(tag, item, exc, None, duration, None)
        else:
            self._consumer_error(tag, item, exc, message, duration, errors)

    def _halt(self, tag: int, item: Delivery, exc: HaltConsumer, duration: float) -> None:
        """The callback halted the consumer: settle its message as it asked, then stop."""
        self.stats.record(item.queue, HALT, duration)
        if exc.requeue:
            self._finished[tag] = False
            self.counts["requeued"] += 1
            self._settle_alone(tag, requeue=True)
        else:
            self._finished[tag] = True
        self._on_halt(exc)

    def _consumer_error(
        self,
        tag: int,
        item: Delivery,
        exc: BaseException,
        message: Message | None,
        duration: float,
        errors: ErrorCount | None,
    ) -> None:
        self.stats.record(item.queue, ERROR, duration)
        self.counts["failed"] += 1
        self._finished[tag] = False
        self._settle_alone(tag, requeue=True)
        # The executor counted its callback's errors; those found here are counted here.
        self._on_error(exc, message, duration, errors or self.errors.record())

    def _drop(
        self, tag: int, item: Delivery, duration: float, reason: str, level: int = logging.INFO
    ) -> None:
        """Copy to the drop exchange (when there is one), then reject."""
        log.log(level, "%s dropped: %s", _describe_delivery(item), reason)
        route = self.policy.drop_route(item, reason) if self._live else None
        if route is None:
            self.stats.record(item.queue, DROP, duration)
            self.counts["dropped"] += 1
            self._finished[tag] = False
            self._settle_alone(tag, requeue=False)
        else:
            self._republish(tag, item, route, duration, then_ack=False)

    def _retry(self, tag: int, item: Delivery, exc: BaseException, duration: float) -> None:
        route = self.policy.retry_route(item, exc) if self._live else None
        if route is not None:
            self._republish(tag, item, route, duration, then_ack=True)
            return
        if not self._live:
            self._finished[tag] = False
            return
        log.warning(
            "%s cannot be retried (queue %r has no retry queues: retry is disabled, or the "
            "queue is server-named, exclusive or auto-delete); dropping it instead",
            _describe_delivery(item),
            item.queue,
        )
        self._drop(tag, item, duration, f"the callback raised Retry: {exc}")

    def _park(self, tag: int, item: Delivery, reason: str) -> None:
        route = self.policy.park_route(item, reason) if self._live else None
        if route is None:
            log.error(
                "Rejected (to the queue's dead-letter exchange, if it has one) an %s",
                reason,
            )
            self.stats.record(item.queue, UNDECODABLE, 0.0)
            self.counts["dropped"] += 1
            self._finished[tag] = False
            self._settle_alone(tag, requeue=False)
            return
        log.error("Parking in %r an %s", route.routing_key, reason)
        self._republish(tag, item, route, 0.0, then_ack=True)

    def _republish(
        self, tag: int, item: Delivery, route: Route, duration: float, then_ack: bool
    ) -> None:
        """Publish a copy along ``route``; settle the original once the broker confirms it.

        A copy that fails to publish (nacked, unroutable, timed out, channel
        closed) leaves the original to be requeued: nothing is lost, and a
        duplicate is the worst outcome.
        """
        self._republishing += 1
        self.in_flight += 1
        queue = item.queue

        def published(result: object) -> None:
            self._republishing -= 1
            self.in_flight -= 1
            if isinstance(result, Failure) and result.check(PublishReturned):
                self._unroutable(tag, item, route, duration)
            elif isinstance(result, Failure):
                log.error(
                    "Could not republish %s to %s (%s); it goes back to its queue",
                    _describe_delivery(item),
                    _describe_route(route),
                    result.getErrorMessage(),
                )
                self.stats.record(queue, NACK, duration)
                self.counts["requeued"] += 1
                self._finished[tag] = False
                self._settle_alone(tag, requeue=True)
            else:
                what = route.what
                self.stats.record(
                    queue,
                    RETRY if what == "retried" else PARKED if what == "parked" else DROP,
                    duration,
                )
                if what == "dropped":
                    self.counts["dropped"] += 1
                if then_ack:
                    self._finished[tag] = True
                else:
                    self._finished[tag] = False
                    self._settle_alone(tag, requeue=False)
            self._ack_finished_run()
            if self._finished and self._live:
                self._ack_past_unfinished((tag,))
            if self._republishing == 0 and self._republished is not None:
                done, self._republished = self._republished, None
                done.callback(None)

        _tracing.republishing(item, route, self.policy.publish(route, item.body)).addBoth(published)

    def _unroutable(self, tag: int, item: Delivery, route: Route, duration: float) -> None:
        """The broker routed a copy to no queue: a missing queue, or a drop exchange unbound."""
        if route.exchange:
            # The drop exchange has no queue bound for this routing key. Requeueing
            # would loop; the message goes where a Drop goes without the exchange.
            log.error(
                "The drop_exchange %r routed %s to no queue (bind a queue to it); "
                "dropping the message without the copy",
                route.exchange,
                _describe_delivery(item),
            )
            headers = route.properties.headers
            reason = headers.get(DROPPED_REASON, "dropped") if headers else ""
            park = self.policy.park_route(item, str(reason)) if self._live else None
            if park is not None:
                self._republish(tag, item, park, duration, then_ack=False)
                return
            self.stats.record(item.queue, DROP, duration)
            self.counts["dropped"] += 1
            self._finished[tag] = False
            self._settle_alone(tag, requeue=False)
            return
        # One of fedmq's own queues is gone. Its message stays unsettled; a
        # reconnect declares the queue again, and the broker redelivers the message.
        missing = BrokerError(f"{_describe_route(route)} does not exist (was it deleted?)")
        log.error("%s; reconnecting to declare it again", missing)
        self._finished[tag] = False
        if self._on_queue_missing is not None:
            self._on_queue_missing(missing)
        else:
            self._settle_alone(tag, requeue=True)

    def _settle_alone(self, tag: int, requeue: bool) -> None:
        if not self._live:
            return
        if requeue:
            self._channel.nack(tag, requeue=True)
        else:
            self._channel.reject(tag)

    def _ack_finished_run(self) -> None:
        """Ack the run of finished deliveries from the oldest pending tag, in one ack.

        ``multiple=True`` reaches the run's last tag still to ack: it covers no
        unfinished tag, and tags already settled in the run are skipped.
        """
        pending, finished = self._pending, self._finished
        last_ack = 0
        run = 0
        while pending and pending[0] in finished:
            tag = pending.popleft()
            if finished.pop(tag):
                last_ack = tag
                run += 1
        if run and self._live:
            self.counts["acked"] += run
            self._ack(last_ack, run > 1)

    def _ack_past_unfinished(self, just_finished: Iterable[int]) -> None:
        """Ack alone each of ``just_finished`` that waits behind an unfinished tag.

        Called after :meth:`_ack_finished_run`, only when something is left in
        ``_finished`` (in order, the common case, nothing is). Each tag acked
        here is marked settled, so that the run reaching it later neither acks
        it again nor ends on it.
        """
        finished, ack = self._finished, self._ack
        alone = 0
        for tag in just_finished:
            if finished.get(tag):
                finished[tag] = False
                ack(tag, False)
                alone += 1
        self.counts["acked"] += alone

    def stop(self) -> defer.Deferred[None]:
        """Return unstarted deliveries to the queue; fire once in-flight ones are settled.

        Call after the channel's consumers are cancelled, so that nothing new
        arrives while the executor winds down.
        """
        if self._stopped is None:
            d = self._executor.stop_intake()
            d.addCallback(self._return_unstarted)
            d.addCallback(lambda _: self._executor.join())
            d.addCallback(lambda _: self._republishes_done())
            self._stopped = d
        return chain(self._stopped)

    def _republishes_done(self) -> defer.Deferred[None]:
        if self._republishing == 0:
            return defer.succeed(None)
        if self._republished is None:
            self._republished = defer.Deferred()
        return chain(self._republished)

    def return_unstarted(self, queue: str) -> defer.Deferred[None]:
        """Send ``queue``'s prefetched, unstarted deliveries back to it (nack, requeue).

        Call once ``queue``'s consumer is cancelled; its deliveries in flight
        finish and are settled as usual.
        """
        if self._stopped is not None:
            return defer.succeed(None)  # the stop returns them all
        taken: defer.Deferred[list[Delivery]] = self._executor.take_back(queue)
        return taken.addCallback(self._return_unstarted)

    def _return_unstarted(self, unstarted: list[Delivery]) -> None:
        self.in_flight -= len(unstarted)
        if self._budgets:
            self._count_settled(unstarted)
        for item in unstarted:
            tag = item.delivery_tag
            self._finished[tag] = False
            self.counts["requeued"] += 1
            self._settle_alone(tag, requeue=True)
        self._ack_finished_run()

    def abandon(self) -> defer.Deferred[None]:
        """The channel is gone: its tags are dead. Settle nothing more; let workers end.

        The broker requeues every unsettled delivery of a closed channel.
        """
        self._live = False
        return self.stop()


def _describe_delivery(item: Delivery) -> str:
    message_id = getattr(item.properties, "message_id", None)
    return f"message {message_id} (topic {item.routing_key!r}, queue {item.queue!r})"


def _describe_route(route: Route) -> str:
    if route.exchange:
        return f"exchange {route.exchange!r} (routing key {route.routing_key!r})"
    return f"queue {route.routing_key!r}"
