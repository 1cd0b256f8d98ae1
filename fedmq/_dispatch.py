"""Dispatch: deliveries in, callbacks off the reactor thread, settlements back.

The reactor thread receives each delivery and hands it to an executor: a
bounded pool of worker threads for sync callbacks, or asyncio tasks for
``async def`` callbacks. Executors report outcomes back to the reactor thread
in batches, and :class:`Dispatcher` settles them there: acks are coalesced
into ``multiple=True`` over a contiguous run of finished deliveries; nacks and
rejects are always sent one delivery at a time.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import queue as queue_module
import threading
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from twisted.internet import defer

from fedmq._deferreds import chain
from fedmq._stats import ConsumerStats
from fedmq.exceptions import Drop, HaltConsumer, Nack
from fedmq.message import DEFAULT_MAX_BODY_SIZE, DecodeError, Message

log = logging.getLogger("fedmq")

# Outcomes, as the executors report them.
# The order is fedmq._stats._OUTCOME_NAMES' too.
ACK, NACK, DROP, UNDECODABLE, RETURNED, HALT, ERROR = range(7)
#: Outcomes after which a worker starts no further callback.
_STOPS_WORK = HALT

#: (delivery_tag, redelivered, exchange, routing_key, properties, body, queue)
Delivery = tuple[int, bool, str, str, Any, bytes, str]
#: (delivery_tag, outcome, exception or None, message or None, seconds in the callback, queue)
Result = tuple[int, int, BaseException | None, Message | None, float, str]

#: The consumer whose callback is running in this thread or asyncio task;
#: :func:`fedmq.publish` uses its connection.
current_consumer: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "fedmq_current_consumer", default=None
)

_STOP: Any = object()


def _settle_outcome(exc: BaseException) -> int:
    if isinstance(exc, Nack):
        return NACK
    if isinstance(exc, Drop):
        return DROP
    if isinstance(exc, HaltConsumer):
        return HALT
    return ERROR


def _message(item: Delivery, max_body_size: int, decode: bool) -> Message:
    tag, redelivered, exchange, routing_key, properties, body, queue = item
    return Message._from_delivery(
        body,
        properties,
        topic=routing_key,
        exchange=exchange,
        delivery_tag=tag,
        redelivered=redelivered,
        queue=queue,
        max_body_size=max_body_size,
        decode=decode,
    )


def _undecodable(item: Delivery, exc: DecodeError) -> Result:
    # No Message exists for a body that cannot be decoded; say which delivery it was.
    tag, _redelivered, _exchange, routing_key, properties, _body, queue = item
    message_id = getattr(properties, "message_id", None)
    exc.args = (f"message {message_id} (topic {routing_key!r}, queue {queue!r}): {exc}",)
    return (tag, UNDECODABLE, exc, None, 0.0, queue)


def run_sync(
    callback: Callable[[Message], Any],
    item: Delivery,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    decode: bool = True,
) -> Result:
    """Decode one delivery and run a sync callback on it, in a worker thread."""
    try:
        message = _message(item, max_body_size, decode)
    except DecodeError as exc:
        return _undecodable(item, exc)
    started = monotonic()
    try:
        callback(message)
    # SystemExit and KeyboardInterrupt too: a worker thread must report every
    # delivery it took, or that delivery is never settled and the stop hangs.
    except BaseException as exc:
        return (item[0], _settle_outcome(exc), exc, message, monotonic() - started, item[6])
    return (item[0], ACK, None, message, monotonic() - started, item[6])


async def run_async(
    callback: Callable[[Message], Any],
    item: Delivery,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    decode: bool = True,
) -> Result:
    """Decode one delivery and await an async callback on it, in an asyncio task."""
    try:
        message = _message(item, max_body_size, decode)
    except DecodeError as exc:
        return _undecodable(item, exc)
    started = monotonic()
    try:
        await callback(message)
    # CancelledError (a BaseException) escaping the callback is its failure too.
    except BaseException as exc:
        return (item[0], _settle_outcome(exc), exc, message, monotonic() - started, item[6])
    return (item[0], ACK, None, message, monotonic() - started, item[6])


class _ResultQueue:
    """Results from workers to the reactor thread, one wake-up per batch."""

    def __init__(
        self, wake: Callable[[Callable[[], None]], Any], deliver: Callable[[list[Result]], None]
    ):
        self._results: deque[Result] = deque()
        self._scheduled = False
        self._deliver = deliver
        # How to run a function on the reactor thread soon: callFromThread
        # from another thread, the loop's call_soon from the reactor's own.
        self._wake = wake

    def put(self, result: Result) -> None:
        self._results.append(result)
        if not self._scheduled:
            self._scheduled = True
            self._wake(self.flush)

    def flush(self) -> None:
        # Reset the flag before draining: a worker that appends meanwhile
        # schedules another flush, so nothing is left behind.
        self._scheduled = False
        results = self._results
        batch = []
        while results:
            batch.append(results.popleft())
        if batch:
            self._deliver(batch)


class _Executor:
    """What both executors share: their workers' count, the halt flag, the join."""

    def __init__(
        self,
        callback: Callable[[Message], Any],
        size: int,
        reactor: Any,
        consumer: Any,
    ):
        self._callback = callback
        self._reactor = reactor
        self._consumer = consumer
        # The consumer's config keys for decoding; the defaults without a consumer.
        config = getattr(consumer, "config", None)
        self._max_body_size: int = getattr(config, "max_body_size", DEFAULT_MAX_BODY_SIZE)
        self._decode: bool = getattr(config, "decode", True)
        self._size = size
        self._running = size
        #: Set by the worker whose callback halted or failed: start nothing more.
        self.halted = False
        self._joined: defer.Deferred[None] = defer.Deferred()
        self._results: _ResultQueue

    def _worker_exited(self) -> None:
        """On the reactor thread, once per worker, after its last result was queued."""
        self._running -= 1
        if self._running == 0:
            self._results.flush()
            self._all_exited()
            self._joined.callback(None)

    def _all_exited(self) -> None:
        """Release what the executor owns, once every worker has exited."""

    def join(self) -> defer.Deferred[None]:
        """Fires once every worker has finished its callback and reported."""
        return chain(self._joined)


class ThreadExecutor(_Executor):
    """Runs a sync callback in ``size`` worker threads of fedmq's own."""

    def __init__(
        self,
        callback: Callable[[Message], Any],
        size: int,
        reactor: Any,
        on_results: Callable[[list[Result]], None],
        consumer: Any = None,
    ):
        super().__init__(callback, size, reactor, consumer)
        self._inbox: queue_module.SimpleQueue[Delivery] = queue_module.SimpleQueue()
        self._results = _ResultQueue(reactor.callFromThread, on_results)
        self._threads = [
            threading.Thread(target=self._work, name=f"fedmq-worker-{n}", daemon=True)
            for n in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, item: Delivery) -> None:
        self._inbox.put(item)

    def _work(self) -> None:
        current_consumer.set(self._consumer)
        get, put, callback = self._inbox.get, self._results.put, self._callback
        while True:
            item = get()
            if item is _STOP:
                break
            if self.halted:
                put((item[0], RETURNED, None, None, 0.0, item[6]))
                continue
            result = run_sync(callback, item, self._max_body_size, self._decode)
            if result[1] >= _STOPS_WORK:
                # The consumer is stopping: start nothing more.
                self.halted = True
            put(result)
        self._reactor.callFromThread(self._worker_exited)

    def stop_intake(self) -> defer.Deferred[list[Delivery]]:
        """Take back deliveries not yet started, and let the workers finish."""
        unstarted = []
        while True:
            try:
                unstarted.append(self._inbox.get_nowait())
            except queue_module.Empty:
                break
        for _ in self._threads:
            self._inbox.put(_STOP)
        return defer.succeed(unstarted)


class AsyncioExecutor(_Executor):
    """Runs an async callback as asyncio tasks, ``size`` at a time.

    Under Twisted's asyncio reactor the tasks run on the reactor's own loop;
    under any other reactor they run on a dedicated loop thread, so an async
    callback never waits on a loop nobody runs.
    """

    def __init__(
        self,
        callback: Callable[[Message], Any],
        size: int,
        reactor: Any,
        on_results: Callable[[list[Result]], None],
        consumer: Any = None,
    ):
        super().__init__(callback, size, reactor, consumer)
        self._pending: deque[Delivery] = deque()
        self._pump_scheduled = False
        reactor_loop = getattr(reactor, "_asyncioEventloop", None)
        self._thread: threading.Thread | None = None
        if reactor_loop is not None:
            self._loop = reactor_loop
            self._same_thread = True
        else:
            self._loop = asyncio.new_event_loop()
            self._same_thread = False
            self._thread = threading.Thread(
                target=self._run_loop, name="fedmq-asyncio", daemon=True
            )
            self._thread.start()
        self._results = _ResultQueue(
            self._loop.call_soon if self._same_thread else reactor.callFromThread, on_results
        )
        self._queue: asyncio.Queue[Delivery] | None = None
        self._call_in_loop(self._start_workers)

    def _run_loop(self) -> None:
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def _call_in_loop(self, fn: Callable[[], Any]) -> defer.Deferred[Any]:
        """Run ``fn`` in the loop's thread; its result comes back on the reactor thread."""
        if self._same_thread:
            return defer.maybeDeferred(fn)
        d: defer.Deferred[Any] = defer.Deferred()

        def run() -> None:
            try:
                result = fn()
            except Exception as exc:
                self._reactor.callFromThread(d.errback, exc)
            else:
                self._reactor.callFromThread(d.callback, result)

        self._loop.call_soon_threadsafe(run)
        return d

    def _start_workers(self) -> None:
        self._queue = asyncio.Queue()
        for _ in range(self._size):
            self._loop.create_task(self._work())
        self._pump()

    async def _work(self) -> None:
        current_consumer.set(self._consumer)
        assert self._queue is not None
        get, put, callback = self._queue.get, self._results.put, self._callback
        while True:
            item = await get()
            if item is _STOP:
                break
            if self.halted:
                put((item[0], RETURNED, None, None, 0.0, item[6]))
                continue
            result = await run_async(callback, item, self._max_body_size, self._decode)
            if result[1] >= _STOPS_WORK:
                self.halted = True
            put(result)
        if self._same_thread:
            self._worker_exited()
        else:
            self._reactor.callFromThread(self._worker_exited)

    def _all_exited(self) -> None:
        if self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    def submit(self, item: Delivery) -> None:
        if self._same_thread and self._queue is not None:
            self._queue.put_nowait(item)
            return
        self._pending.append(item)
        if not self._pump_scheduled:
            self._pump_scheduled = True
            if self._same_thread:
                self._loop.call_soon(self._pump)
            else:
                self._loop.call_soon_threadsafe(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._queue is None:
            return
        pending, put = self._pending, self._queue.put_nowait
        while pending:
            put(pending.popleft())

    def stop_intake(self) -> defer.Deferred[list[Delivery]]:
        """Take back deliveries not yet started, and let the tasks finish."""

        def take_back() -> list[Delivery]:
            assert self._queue is not None
            unstarted = list(self._pending)
            self._pending.clear()
            while not self._queue.empty():
                unstarted.append(self._queue.get_nowait())
            for _ in range(self._size):
                self._queue.put_nowait(_STOP)
            return unstarted

        return self._call_in_loop(take_back)


class Dispatcher:
    """Hands one channel's deliveries to an executor and settles their outcomes.

    Everything here runs on the reactor thread. Delivery tags are settled in
    one of two ways: an ack covering a contiguous run of finished deliveries
    (``multiple=True`` when the run is longer than one), or a nack or reject
    of exactly one delivery. No delivery is acked before its callback has
    finished.

    Args:
        channel: the channel the deliveries came on; settlements go there.
        executor_factory: builds the executor, given the results sink.
        on_halt: called once with the callback's :class:`HaltConsumer`.
        on_error: called once with the callback's unexpected exception and
            the message it was handling.
    """

    def __init__(
        self,
        channel: Any,
        executor_factory: Callable[[Callable[[list[Result]], None]], Any],
        on_halt: Callable[[HaltConsumer], None],
        on_error: Callable[[BaseException, Message | None], None],
        stats: ConsumerStats | None = None,
    ):
        self.stats = stats if stats is not None else ConsumerStats()
        self._channel = channel
        self._ack = channel.ack
        self._pending: deque[int] = deque()
        # tag -> True when it still needs an ack, False once settled alone.
        self._finished: dict[int, bool] = {}
        self._on_halt = on_halt
        self._on_error = on_error
        self._live = True
        self._stopped: defer.Deferred[None] | None = None
        self.in_flight = 0
        self.counts = {"received": 0, "acked": 0, "requeued": 0, "dropped": 0, "failed": 0}
        self._executor = executor_factory(self._on_results)
        self._submit = self._executor.submit

    def deliver_for(self, queue: str) -> Callable[[int, bool, str, str, Any, bytes], None]:
        """The delivery handler for ``queue``'s consumer on this channel."""
        pending, counts = self._pending, self.counts
        queue_counts = self.stats.queue(queue)

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
            self._submit((tag, redelivered, exchange, routing_key, properties, body, queue))

        return on_delivery

    def _on_results(self, batch: list[Result]) -> None:
        finished, counts = self._finished, self.counts
        record = self.stats.record
        self.stats.batch_done()
        self.in_flight -= len(batch)
        for tag, outcome, exc, message, duration, queue in batch:
            record(queue, outcome, duration)
            if outcome == ACK:
                finished[tag] = True
                continue
            finished[tag] = False
            if outcome == NACK:
                counts["requeued"] += 1
                self._settle_alone(tag, requeue=True)
            elif outcome == DROP:
                counts["dropped"] += 1
                log.info("%s dropped by the callback: %s", _describe(message), exc)
                self._settle_alone(tag, requeue=False)
            elif outcome == RETURNED:
                counts["requeued"] += 1
                self._settle_alone(tag, requeue=True)
            elif outcome == UNDECODABLE:
                counts["dropped"] += 1
                log.error(
                    "Rejected (to the queue's dead-letter exchange, if it has one) an "
                    "undecodable %s",
                    exc,
                )
                self._settle_alone(tag, requeue=False)
            elif outcome == HALT:
                assert isinstance(exc, HaltConsumer)
                if exc.requeue:
                    counts["requeued"] += 1
                    self._settle_alone(tag, requeue=True)
                else:
                    finished[tag] = True
                self._on_halt(exc)
            else:
                counts["failed"] += 1
                assert exc is not None
                log.error(
                    "The callback raised on %s after %.3f s; the message is requeued and "
                    "the consumer stops",
                    _describe(message),
                    duration,
                    exc_info=(type(exc), exc, exc.__traceback__),
                )
                self._settle_alone(tag, requeue=True)
                self._on_error(exc, message)
        self._ack_finished_run()

    def _settle_alone(self, tag: int, requeue: bool) -> None:
        if not self._live:
            return
        if requeue:
            self._channel.nack(tag, requeue=True)
        else:
            self._channel.reject(tag)

    def _ack_finished_run(self) -> None:
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

    def stop(self) -> defer.Deferred[None]:
        """Return unstarted deliveries to the queue; fire once in-flight ones are settled.

        Call after the channel's consumers are cancelled, so that nothing new
        arrives while the executor winds down.
        """
        if self._stopped is None:
            d = self._executor.stop_intake()
            d.addCallback(self._return_unstarted)
            d.addCallback(lambda _: self._executor.join())
            self._stopped = d
        return chain(self._stopped)

    def _return_unstarted(self, unstarted: list[Delivery]) -> None:
        self.in_flight -= len(unstarted)
        for item in unstarted:
            tag = item[0]
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


def _describe(message: Message | None) -> str:
    if message is None:
        return "a message"
    return f"message {message.id} (topic {message.topic!r}, queue {message.queue!r})"
