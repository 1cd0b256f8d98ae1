"""One channel's consumers, one per queue: consumed while nothing holds the queue.

:class:`QueueConsumers` consumes each of a session's queues that nothing
holds (:class:`fedmq._flow.Holds`), and cancels the consumer of one that
becomes held. Each queue's consumer gets its own prefetch (``basic.qos``
with global=false, sent just before its ``basic.consume`` when it differs
from the last one sent), its priority (``x-priority``) and its byte budget.
Changes to one queue are made one at a time, in order, so that a pause and
a resume never cross; each ``basic.qos`` and the ``basic.consume`` it is
for go out together, one queue's pair at a time, so that no queue consumes
under another's prefetch. A ``basic.consume`` or ``basic.cancel`` the broker
leaves unanswered for ``connect_timeout`` makes the channel untrustworthy
(the broker may still register a consumer nobody tracks): the session is
lost, which drops the broker's consumers, and the change fails. Everything
here runs on the reactor thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._connection import Channel, Clock
from fedmq._dispatch import Dispatcher
from fedmq._flow import OVER_BYTES, RETURNS_UNSTARTED, ByteBudget, Holds
from fedmq._topology import step
from fedmq.config import Config, QueueConfig
from fedmq.exceptions import BrokerError

log = logging.getLogger("fedmq")


class QueueConsumers:
    """The consumers of one session's channel, by queue.

    Args:
        channel: the session's channel.
        dispatcher: where deliveries go.
        holds: the consumer's holds; they act through this object while it
            is in charge (see :meth:`take_charge`).
        config: returns the consumer's config of now (each queue's options).
        clock: what the timeouts run on.
        on_cancelled: called when the broker cancels a consumer.
        names: each queue's configured name -> the broker's name for it.
        on_unanswered: called with the error when the broker leaves a
            request unanswered for ``connect_timeout`` (the session is lost).

    """

    def __init__(
        self,
        channel: Channel,
        dispatcher: Dispatcher,
        holds: Holds,
        config: Callable[[], Config],
        clock: Clock,
        on_cancelled: Callable[[], None],
        names: dict[str, str],
        *,
        on_unanswered: Callable[[Exception], None] = lambda _error: None,
    ) -> None:
        self._channel = channel
        self._dispatcher = dispatcher
        self._holds = holds
        self._config = config
        # Any: Deferred.addTimeout wants Twisted's IReactorTime, which a Clock provides.
        self._clock: Any = clock
        self._on_cancelled = on_cancelled
        self._names = dict(names)
        self._tags: dict[str, str] = {}
        self._budgets: dict[str, ByteBudget] = {}
        self._locks: dict[str, defer.DeferredLock] = {}
        # One queue's basic.qos and basic.consume at a time on the channel.
        self._consuming = defer.DeferredLock()
        self._on_unanswered = on_unanswered
        # The prefetch count the channel's next consumer gets (basic.qos, global=false).
        self._prefetch: int | None = None
        #: Whether a failure to consume again is worth telling (False once fedmq stops it).
        self.reporting = True

    @property
    def names(self) -> dict[str, str]:
        """Each queue's configured name, and the broker's name for it."""
        return dict(self._names)

    @property
    def tags(self) -> list[str]:
        """The consumer tags of now."""
        return list(self._tags.values())

    # --- in charge -------------------------------------------------------------------

    async def take_charge(self) -> None:
        """Give each queue a fresh byte budget, act on the holds, consume every free queue."""
        for name in self._names:
            self._budget(name)
        self._holds.consumers = self
        for name in list(self._names):
            await self._lock(name).run(self._converge_now, name)

    def let_go(self, *, stopping: bool = True) -> None:
        """Act on no more holds: the session is ending.

        Unless fedmq itself is ``stopping`` it (a drain, an abort), a change
        still under way that fails is told to the failure listeners: the
        connection's loss is why consuming the queue again failed.
        """
        if stopping:
            self.reporting = False
        for budget in self._budgets.values():
            budget.retire()
        if self._holds.consumers is self:
            self._holds.consumers = None

    def _budget(self, queue: str) -> None:
        """Give ``queue`` a fresh byte budget, if it has one; a new session owes nothing."""
        options = self._options(queue)
        if options is None or options.max_unacked_bytes is None:
            return
        holds = self._holds
        if OVER_BYTES in holds.reasons(queue):
            _quiet(holds.release(queue, OVER_BYTES))
        self._budgets[queue] = ByteBudget(
            queue,
            options.max_unacked_bytes,
            lambda queue, reason: _quiet(holds.hold(queue, reason)),
            lambda queue, reason: _quiet(holds.release(queue, reason)),
        )

    # --- changes, one queue at a time ----------------------------------------------------

    def _lock(self, queue: str) -> defer.DeferredLock:
        return self._locks.setdefault(queue, defer.DeferredLock())

    def converge(self, queue: str) -> defer.Deferred[None]:
        """Consume ``queue`` if nothing holds it, cancel its consumer otherwise.

        A held queue's prefetched, unstarted deliveries go back to it when
        a reason that returns them holds it. A failure to consume again is
        told to the holds' failure listeners, and fails the Deferred too.
        Cancelling the Deferred stops the wait for it, not the change.
        """
        d = self._lock(queue).run(self._converge_now, queue)
        return _detached(d.addErrback(self._report, queue))

    def reconsume(self, queue: str) -> defer.Deferred[None]:
        """Cancel ``queue``'s consumer and consume again, with the options of now."""

        async def again() -> None:
            await self.cancel(queue)
            await self._converge(queue)

        d = self._lock(queue).run(lambda: defer.ensureDeferred(again()))
        return _detached(d.addErrback(self._report, queue))

    def add(self, queue: str, name: str) -> defer.Deferred[None]:
        """Consume ``queue`` (declared, under the broker's ``name``) unless held."""

        def add() -> defer.Deferred[None]:
            self._names[queue] = name
            self._budget(queue)
            return self._converge_now(queue)

        return _detached(self._lock(queue).run(add))

    def remove(self, queue: str) -> defer.Deferred[None]:
        """Cancel ``queue``'s consumer for good and send its unstarted deliveries back."""

        async def remove() -> None:
            await self.cancel(queue)
            name = self._names.pop(queue, None)
            budget = self._budgets.pop(queue, None)
            if budget is not None:
                budget.retire()
            if name is not None:
                await self._dispatcher.return_unstarted(name)

        return _detached(self._lock(queue).run(lambda: defer.ensureDeferred(remove())))

    def _report(self, failure: Failure, queue: str) -> Failure:
        """Tell the failure listeners why ``queue`` could not change; the failure goes on."""
        error = failure.value
        if self.reporting and isinstance(error, Exception):
            if isinstance(error, defer.CancelledError):
                error = RuntimeError(f"the change of queue {queue!r} was cancelled")
            self._holds.reconsume_failed(queue, error)
        return failure

    def _converge_now(self, queue: str) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._converge(queue))

    async def _converge(self, queue: str) -> None:
        if not self._channel.is_open or self._holds.consumers is not self:
            return
        wanted = self._holds.consumes(queue) and queue in self._names
        if wanted and queue not in self._tags:
            await self._consume(queue)
        elif not wanted:
            await self.cancel(queue)
            returns = self._holds.reasons(queue) & RETURNS_UNSTARTED
            if returns and queue in self._names:
                await self._dispatcher.return_unstarted(self._names[queue])

    async def _consume(self, queue: str) -> None:
        await self._consuming.run(lambda: defer.ensureDeferred(self._qos_and_consume(queue)))

    async def _qos_and_consume(self, queue: str) -> None:
        channel, name = self._channel, self._names[queue]
        options = self._options(queue)
        prefetch = self._config().qos.prefetch_count
        if options is not None and options.prefetch_count is not None:
            prefetch = options.prefetch_count
        if prefetch != self._prefetch:
            await self._step(channel.qos(prefetch, 0), f"setting the prefetch count of {name!r}")
            self._prefetch = prefetch
        budget = self._budgets.get(queue)
        deliver = self._dispatcher.deliver_for
        handler = deliver(name, budget) if budget is not None else deliver(name)
        if options is not None and options.consumer_priority is not None:
            arguments = {"x-priority": options.consumer_priority}
            consuming = channel.consume(name, handler, self._on_cancelled, arguments)
        else:
            consuming = channel.consume(name, handler, self._on_cancelled)
        self._tags[queue] = await self._step(consuming, f"consuming from queue {name!r}")

    async def cancel(self, queue: str) -> None:
        """Cancel ``queue``'s consumer, if it has one.

        Raises:
            BrokerError: the broker did not confirm the ``basic.cancel`` within
                ``connect_timeout`` (the session is lost then, unless it is
                already ending), or closed the channel.

        """
        tag = self._tags.pop(queue, None)
        if tag is None or not self._channel.is_open:
            return
        await self._step(self._channel.cancel(tag), f"cancelling the consumer of {queue!r}")

    async def cancel_all(self) -> None:
        """Cancel every consumer (a drain); one the broker does not confirm is given up."""
        self.let_go()
        for queue in list(self._tags):
            try:
                await self.cancel(queue)
            except BrokerError as error:
                log.warning("%s; stopping without it", error)

    def _options(self, queue: str) -> QueueConfig | None:
        for options in self._config().queues:
            if options.name == queue:
                return options
        return None

    async def _step(self, d: defer.Deferred[Any], what: str) -> Any:
        """Await one channel request; one left unanswered for connect_timeout loses the session."""
        unanswered = False

        def timed_out(result: object) -> object:
            nonlocal unanswered
            # Only step's timeout cancels this Deferred, which no one else holds.
            unanswered = (
                isinstance(result, Failure) and result.check(defer.CancelledError) is not None
            )
            return result

        d.addBoth(timed_out)
        try:
            return await step(d, what, self._config().connect_timeout, self._clock)
        except BrokerError as error:
            if unanswered and self._holds.consumers is self:
                self._on_unanswered(error)
            raise


def _detached(d: defer.Deferred[None]) -> defer.Deferred[None]:
    """A Deferred with ``d``'s result, whose cancellation leaves ``d``, the change, alone.

    A change half made (a lock taken, a hold's reason already changed) is
    finished whoever stops waiting for it.
    """
    out: defer.Deferred[None] = defer.Deferred()

    def relay(result: object) -> None:
        if out.called:
            return  # the waiter cancelled; the failure, if any, was already told
        if isinstance(result, Failure):
            out.errback(result)
        else:
            out.callback(None)

    d.addBoth(relay)
    return out


def _quiet(d: defer.Deferred[None]) -> None:
    # A failure to consume again is told by the holds' failure listeners.
    d.addErrback(lambda _: None)
