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
from collections.abc import Callable, Iterable
from time import monotonic
from typing import Any

from twisted.internet import defer

from fedmq import _tracing
from fedmq._acks import Acks
from fedmq._deferreds import chain
from fedmq._delivery import (
    ACK,
    DEFERRED,
    DROP,
    ERROR,
    HALT,
    INVALID,
    NACK,
    RETRY,
    RETURNED,
    UNDECODABLE,
    Delivery,
    Result,
)
from fedmq._error_window import ErrorCount, ErrorWindow
from fedmq._fedora import SchemaInvalid
from fedmq._flow import ByteBudget
from fedmq._policy import ErrorPolicy
from fedmq._republish import Republisher, describe_delivery
from fedmq._settle_later import LaterSettlements, taken_over
from fedmq._stats import ConsumerStats
from fedmq.config import Config
from fedmq.exceptions import ConsumerError, HaltConsumer
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
        policy = policy if policy is not None else ErrorPolicy()
        self.errors = errors if errors is not None else ErrorWindow.of(Config(), monotonic)
        self._on_halt = on_halt
        self._on_error = on_error
        self._stopped: defer.Deferred[None] | None = None
        # Deliveries received and not yet settled, but for republished ones.
        self._in_flight = 0
        # The messages Settlements settle (see fedmq._settle_later); made at the first.
        self._later: LaterSettlements | None = None
        self.counts = {"received": 0, "acked": 0, "requeued": 0, "dropped": 0, "failed": 0}
        self._acks = Acks(channel, self.counts)
        self._republisher = Republisher(
            self._acks, self.stats, self.counts, policy, on_queue_missing
        )
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
        pending, counts = self._acks.pending, self.counts
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
            self._in_flight += 1
            item = Delivery(tag, redelivered, exchange, routing_key, properties, body, queue)
            if checks_type:
                invalid = self.policy.invalid_type(properties)
                if invalid is not None:
                    error = ConsumerError(f"{describe_delivery(item)}: {invalid}")
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

    @property
    def policy(self) -> ErrorPolicy:
        """Where retried, parked and dropped messages go."""
        return self._republisher.policy

    @property
    def in_flight(self) -> int:
        """Deliveries received and not yet settled (a republished one until its copy's confirm)."""
        return self._in_flight + self._republisher.in_flight

    @property
    def unsettled(self) -> tuple[int, int]:
        """(deliveries whose callback or Settlement has not ended, copies awaiting confirms)."""
        return self._in_flight, self._republisher.in_flight

    def _on_results(self, batch: list[Result]) -> None:
        acks = self._acks
        finished = acks.finished
        record = self.stats.record
        self.stats.batch_done()
        self._in_flight -= len(batch)
        if self._budgets:
            # A message a Settlement took over stays unsettled: counted out at its verdict.
            self._count_settled(
                result.delivery
                for result in batch
                if result.outcome != DEFERRED and not taken_over(result.message)
            )
        for result in batch:
            _tracing.settling(result.delivery, result.outcome, result.error)
            if result.outcome == ACK:  # the common case, kept inline
                record(result.delivery.queue, ACK, result.duration)
                finished[result.delivery_tag] = True
            elif result.outcome == DEFERRED or taken_over(result.message):
                self._adopt(result)
            else:
                self._settle_other(result)
        acks.flush(result.delivery_tag for result in batch)
        _tracing.batch_settled()

    def _settle_other(self, result: Result) -> None:
        """Settle a delivery whose outcome is not a plain ack."""
        tag, outcome, exc, message, duration, item, errors = result
        republisher = self._republisher
        if outcome in (NACK, RETURNED):
            self.stats.record(item.queue, outcome, duration)
            self.counts["requeued"] += 1
            self._acks.alone(tag, requeue=True)
        elif outcome == DROP:
            if isinstance(exc, SchemaInvalid):
                # Refused by its schema class before any callback saw it.
                republisher.drop(tag, item, duration, str(exc), level=logging.WARNING)
            else:
                republisher.drop(tag, item, duration, f"the callback raised Drop: {exc}")
        elif outcome == UNDECODABLE:
            republisher.park(tag, item, f"undecodable {exc}")
        elif outcome == HALT and isinstance(exc, HaltConsumer):
            self._halt(tag, item, exc, duration)
        elif exc is None:
            raise TypeError(f"the outcome {outcome!r} of delivery {tag} came without its error")
        elif outcome == RETRY:
            republisher.retry(tag, item, exc, duration)
        elif outcome == INVALID and self.policy.drop_invalid_messages:
            republisher.drop(tag, item, duration, str(exc), level=logging.WARNING)
        elif outcome == INVALID:
            self._consumer_error(tag, item, exc, None, duration, None)
        else:
            self._consumer_error(tag, item, exc, message, duration, errors)

    def _adopt(self, result: Result) -> None:
        """A callback that called settle_later() ended: its Settlement settles the message."""
        later = self._later
        if later is None:
            later = self._later = LaterSettlements(
                self._executor.call_from_thread,
                lambda verdict: self._on_results([verdict]),
                self._on_halt,
                self._on_error,
                self.errors,
                live=self._acks.live,
            )
        if later.adopt(result):
            self._in_flight += 1  # still in flight: counted out when its verdict is settled

    def _halt(self, tag: int, item: Delivery, exc: HaltConsumer, duration: float) -> None:
        """The callback halted the consumer: settle its message as it asked, then stop."""
        self.stats.record(item.queue, HALT, duration)
        if exc.requeue:
            self.counts["requeued"] += 1
            self._acks.alone(tag, requeue=True)
        else:
            self._acks.to_ack(tag)
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
        self._acks.alone(tag, requeue=True)
        # The executor counted its callback's errors; those found here are counted here.
        self._on_error(exc, message, duration, errors or self.errors.record())

    def stop(self) -> defer.Deferred[None]:
        """Return unstarted deliveries to the queue; fire once in-flight ones are settled.

        Call after the channel's consumers are cancelled, so that nothing new
        arrives while the executor winds down.
        """
        if self._stopped is None:
            d = self._executor.stop_intake()
            d.addCallback(self._return_unstarted)
            d.addCallback(lambda _: self._executor.join())
            d.addCallback(lambda _: self._later.settled() if self._later is not None else None)
            d.addCallback(lambda _: self._republisher.done())
            self._stopped = d
        return chain(self._stopped)

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
        self._in_flight -= len(unstarted)
        if self._budgets:
            self._count_settled(unstarted)
        for item in unstarted:
            self.counts["requeued"] += 1
            self._acks.alone(item.delivery_tag, requeue=True)
        self._acks.flush()

    def abandon(self) -> defer.Deferred[None]:
        """The channel is gone: its tags are dead. Settle nothing more; let workers end.

        The broker requeues every unsettled delivery of a closed channel.
        """
        self._acks.live = False
        if self._later is not None:
            self._in_flight -= self._later.abandon()
        return self.stop()
