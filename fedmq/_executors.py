"""Executors: where callbacks run, off the reactor thread.

A bounded pool of worker threads runs a sync callback; asyncio tasks run an
``async def`` one. Each decodes a delivery, runs the callback on it, and
reports the outcome back to the reactor thread in batches, where
:class:`fedmq._dispatch.Dispatcher` settles it.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue as queue_module
import threading
import weakref
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any

from twisted.internet import defer

from fedmq import _fedora, _tracing
from fedmq._deferreds import chain
from fedmq._delivery import (
    ACK,
    CONSUMER_ERROR,
    DEFERRED,
    DROP,
    ERROR,
    HALT,
    NACK,
    RETRY,
    RETURNED,
    UNDECODABLE,
    Delivery,
    Outcome,
    Result,
)
from fedmq._error_window import ErrorWindow
from fedmq._headers import FEDORA_SCHEMA
from fedmq._lifecycle import LoopThread, reactor_event_loop
from fedmq._settle_later import callback_ended
from fedmq.config import Config
from fedmq.exceptions import ConsumerError, Drop, HaltConsumer, Nack, Retry
from fedmq.message import DEFAULT_MAX_BODY_SIZE, DecodeError, Message

#: The consumer whose callback is running in this thread or asyncio task;
#: :func:`fedmq.publish` uses its connection.
current_consumer: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "fedmq_current_consumer", default=None
)

# Which consumer's callback runs here, by worker thread and by worker task. Unlike
# the context variable above, neither carries over to what a callback schedules: under
# Twisted's asyncio reactor a reactor call made from a task runs in a copy of its
# context, and must not count as that callback.
_worker_thread = threading.local()
_worker_tasks: weakref.WeakKeyDictionary[asyncio.Task[Any], _Worker] = weakref.WeakKeyDictionary()


class _Worker:
    """One worker thread's or task's consumer, and the refusals its callback left unheeded."""

    __slots__ = ("consumer", "refusals")

    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer
        #: Deferreds failed for the running callback (see :func:`refused_to_callback`).
        self.refusals: list[defer.Deferred[Any]] = []

    def callback_ended(self) -> None:
        """A refusal the callback ignored is handled now, in its own thread: not logged."""
        refusals, self.refusals = self.refusals, []
        for refusal in refusals:
            refusal.addErrback(lambda _: None)


def _here() -> _Worker | None:
    worker: _Worker | None = getattr(_worker_thread, "worker", None)
    if worker is not None:
        return worker
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop running in this thread
        return None
    return _worker_tasks.get(task) if task is not None else None


def refused_to_callback(refusal: defer.Deferred[Any]) -> None:
    """``refusal`` (already failed) goes to the callback running here.

    A callback may wait on it, or ignore it: once the callback has ended, its
    worker handles the failure, in the same thread (a Deferred is not for two
    threads at once), so an ignored refusal is not logged as unhandled.
    """
    worker = _here()
    if worker is not None:
        worker.refusals.append(refusal)


_STOP: Any = object()


def callback_consumer() -> Any:
    """The consumer whose callback (or worker) is running right here, or None.

    Here: in one of its sync workers' threads, or in one of its async workers'
    tasks (not in what they scheduled to run later).
    """
    worker = _here()
    return worker.consumer if worker is not None else None


def _settle_outcome(exc: BaseException) -> Outcome:
    if isinstance(exc, Nack):
        return NACK
    if isinstance(exc, Drop):
        return DROP
    if isinstance(exc, Retry):
        return RETRY
    if isinstance(exc, HaltConsumer):
        return HALT
    if isinstance(exc, ConsumerError):
        return CONSUMER_ERROR
    return ERROR


def _failed(item: Delivery, exc: BaseException, message: Any, duration: float) -> Result:
    # Taken over or not, the outcome is what was raised: the error window and
    # the halt gate see it; the dispatcher knows a message taken over.
    callback_ended(message, item)
    outcome = _settle_outcome(exc)
    if outcome == ERROR:
        # fedora-messaging's own Nack, Drop, HaltConsumer and ValidationError
        # mean what fedmq's do.
        translated = _fedora.translate_exception(exc)
        if translated is not None:
            exc, outcome = translated, _settle_outcome(translated)
    return Result(item.delivery_tag, outcome, exc, message, duration, item)


def _message(item: Delivery, max_body_size: int, decode: bool, schemas: bool = False) -> Any:
    _tag, redelivered, exchange, routing_key, properties, body, queue = item
    message = Message._from_delivery(  # noqa: SLF001 - the package's delivery fast path
        body,
        properties,
        topic=routing_key,
        exchange=exchange,
        delivery_tag=item.delivery_tag,
        redelivered=redelivered,
        queue=queue,
        max_body_size=max_body_size,
        decode=decode,
        delivery=item,
    )
    if schemas:
        headers = getattr(properties, "headers", None)
        schema = headers.get(FEDORA_SCHEMA) if headers else None
        if schema is not None:
            # Raises SchemaInvalid, a Drop, for a body or headers the class refuses.
            return _fedora.schema_message(message, schema)
    return message


def _undecodable(item: Delivery, exc: DecodeError) -> Result:
    # No Message exists for a body that cannot be decoded; say which delivery it was.
    message_id = getattr(item.properties, "message_id", None)
    where = f"topic {item.routing_key!r}, queue {item.queue!r}"
    exc.args = (f"message {message_id} ({where}): {exc}",)
    return Result(item.delivery_tag, UNDECODABLE, exc, None, 0.0, item)


def run_sync(
    callback: Callable[[Message], Any],
    item: Delivery,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    decode: bool = True,
    schemas: bool = False,
) -> Result:
    """Decode one delivery and run a sync callback on it, in a worker thread.

    With ``schemas``, a delivery naming a fedora-messaging schema class is
    handed over as an instance of that class, or dropped when it fails it.
    """
    try:
        message = _message(item, max_body_size, decode, schemas)
    except DecodeError as exc:
        return _undecodable(item, exc)
    except _fedora.SchemaInvalid as exc:
        return Result(item.delivery_tag, DROP, exc, None, 0.0, item)
    started = monotonic()
    try:
        callback(message)
    # SystemExit and KeyboardInterrupt too: a worker thread must report every
    # delivery it took, or that delivery is never settled and the stop hangs.
    except BaseException as exc:
        return _failed(item, exc, message, monotonic() - started)
    if message._deferral is item:  # noqa: SLF001 - not taken over: close it to settle_later()
        message._deferral = None  # noqa: SLF001
        return Result(item.delivery_tag, ACK, None, message, monotonic() - started, item)
    return Result(item.delivery_tag, DEFERRED, None, message, monotonic() - started, item)


async def run_async(
    callback: Callable[[Message], Any],
    item: Delivery,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    decode: bool = True,
    schemas: bool = False,
) -> Result:
    """Decode one delivery and await an async callback on it, in an asyncio task."""
    try:
        message = _message(item, max_body_size, decode, schemas)
    except DecodeError as exc:
        return _undecodable(item, exc)
    except _fedora.SchemaInvalid as exc:
        return Result(item.delivery_tag, DROP, exc, None, 0.0, item)
    started = monotonic()
    try:
        await callback(message)
    # CancelledError (a BaseException) escaping the callback is its failure too.
    except BaseException as exc:
        return _failed(item, exc, message, monotonic() - started)
    if message._deferral is item:  # noqa: SLF001 - not taken over: close it to settle_later()
        message._deferral = None  # noqa: SLF001
        return Result(item.delivery_tag, ACK, None, message, monotonic() - started, item)
    return Result(item.delivery_tag, DEFERRED, None, message, monotonic() - started, item)


class _ResultQueue:
    """Results from workers to the reactor thread, one wake-up per batch."""

    def __init__(
        self, wake: Callable[[Callable[[], None]], Any], deliver: Callable[[list[Result]], None]
    ) -> None:
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
    """What both executors share: their workers' count, the gate, the join."""

    def __init__(
        self,
        callback: Callable[[Message], Any],
        size: int,
        reactor: Any,
        consumer: Any,
        errors: ErrorWindow | None,
        max_body_size: int,
        decode: bool,
    ) -> None:
        self._callback = callback
        self._reactor = reactor
        # What fedmq.publish() finds as the current consumer in a callback.
        self._consumer = consumer
        self._max_body_size = max_body_size
        self._decode = decode
        # Schema classes need decoded bodies, and fedora-messaging to define them.
        self._schemas = decode and _fedora.installed()
        if errors is None:
            errors = ErrorWindow.of(Config(), monotonic)
        #: Where workers count consumer errors; once it closes, no callback starts.
        self.errors = errors
        self._size = size
        self._running = size
        #: Set by the worker whose callback halted: start nothing more.
        self.halted = False
        self._joined: defer.Deferred[None] = defer.Deferred()
        self._results: _ResultQueue

    def _settled(self, result: Result) -> Result:
        """Close the gate on a halt or on the error that reaches ``max_errors``.

        Called by the worker before it reports ``result`` or takes another
        delivery, so no callback starts after the consumer must stop.
        """
        outcome = result.outcome
        if outcome == HALT:
            self.halted = True
        elif outcome in (ERROR, CONSUMER_ERROR):
            return result._replace(errors=self.errors.record())
        return result

    def call_from_thread(self, f: Callable[..., Any], *args: Any) -> None:
        """Run ``f(*args)`` soon on the reactor thread, from any thread: a Settlement's way back."""
        self._reactor.callFromThread(f, *args)

    def _closed(self) -> bool:
        """No callback may start: the callback halted, or there were too many errors."""
        return self.halted or self.errors.closed

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
        *,
        errors: ErrorWindow | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        decode: bool = True,
    ) -> None:
        super().__init__(callback, size, reactor, consumer, errors, max_body_size, decode)
        self._inbox: queue_module.SimpleQueue[Delivery] = queue_module.SimpleQueue()
        self._results = _ResultQueue(reactor.callFromThread, on_results)
        self._run = _tracing.traced(run_sync, consumer)
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
        worker = _worker_thread.worker = _Worker(self._consumer)
        get, put, callback = self._inbox.get, self._results.put, self._callback
        while True:
            item = get()
            if item is _STOP:
                break
            if self._closed():
                put(Result(item.delivery_tag, RETURNED, None, None, 0.0, item))
                continue
            result = self._run(callback, item, self._max_body_size, self._decode, self._schemas)
            if worker.refusals:
                worker.callback_ended()
            put(self._settled(result))
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

    def take_back(self, queue: str) -> defer.Deferred[list[Delivery]]:
        """Take back ``queue``'s deliveries not yet started; the others keep their order."""
        waiting = []
        while True:
            try:
                waiting.append(self._inbox.get_nowait())
            except queue_module.Empty:
                break
        taken = [item for item in waiting if item.queue == queue]
        for item in waiting:
            if item.queue != queue:
                self._inbox.put(item)
        return defer.succeed(taken)


class AsyncioExecutor(_Executor):
    """Runs an async callback as asyncio tasks, ``size`` at a time.

    Under Twisted's asyncio reactor the tasks run on the reactor's own loop;
    under any other reactor they run on ``loop`` (the consumer's loop thread,
    shared with its async ``setup()`` and kept across reconnects) or, without
    one, on a loop thread of the executor's own; so an async callback never
    waits on a loop nobody runs.
    """

    def __init__(
        self,
        callback: Callable[[Message], Any],
        size: int,
        reactor: Any,
        on_results: Callable[[list[Result]], None],
        consumer: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        errors: ErrorWindow | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        decode: bool = True,
    ) -> None:
        super().__init__(callback, size, reactor, consumer, errors, max_body_size, decode)
        self._pending: deque[Delivery] = deque()
        self._pump_scheduled = False
        reactor_loop = reactor_event_loop(reactor)
        self._own_loop: LoopThread | None = None
        if reactor_loop is not None:
            self._loop = reactor_loop
            self._same_thread = True
        elif loop is not None:
            # The consumer's loop thread, which outlives this executor.
            self._loop = loop
            self._same_thread = False
        else:
            self._own_loop = LoopThread()
            self._loop = self._own_loop.loop
            self._same_thread = False
        self._results = _ResultQueue(
            self._loop.call_soon if self._same_thread else reactor.callFromThread, on_results
        )
        self._queue: asyncio.Queue[Delivery] | None = None
        self._run = _tracing.traced_async(run_async, consumer)
        self._call_in_loop(self._start_workers)

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
            task = self._loop.create_task(self._work())
            _worker_tasks[task] = _Worker(self._consumer)
        self._pump()

    async def _work(self) -> None:
        current_consumer.set(self._consumer)
        assert self._queue is not None  # noqa: S101 - set in __init__ before any work
        # Registered by _start_workers as the task was made, before it first ran.
        worker = _here() or _Worker(self._consumer)
        get, put, callback = self._queue.get, self._results.put, self._callback
        while True:
            item = await get()
            if item is _STOP:
                break
            if self._closed():
                put(Result(item.delivery_tag, RETURNED, None, None, 0.0, item))
                continue
            result = await self._run(
                callback, item, self._max_body_size, self._decode, self._schemas
            )
            if worker.refusals:
                worker.callback_ended()
            put(self._settled(result))
        if self._same_thread:
            self._worker_exited()
        else:
            self._reactor.callFromThread(self._worker_exited)

    def _all_exited(self) -> None:
        if self._own_loop is not None:
            self._own_loop.stop()

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
            assert self._queue is not None  # noqa: S101 - set in __init__ before any work
            # One popleft at a time: the reactor thread may append meanwhile.
            pending, unstarted = self._pending, []
            while pending:
                unstarted.append(pending.popleft())
            while not self._queue.empty():
                unstarted.append(self._queue.get_nowait())
            for _ in range(self._size):
                self._queue.put_nowait(_STOP)
            return unstarted

        return self._call_in_loop(take_back)

    def take_back(self, queue: str) -> defer.Deferred[list[Delivery]]:
        """Take back ``queue``'s deliveries not yet started; the others keep their order."""

        def take() -> list[Delivery]:
            self._pump()
            assert self._queue is not None  # noqa: S101 - _start_workers ran before
            waiting = []
            while not self._queue.empty():
                waiting.append(self._queue.get_nowait())
            for item in waiting:
                if item.queue != queue:
                    self._queue.put_nowait(item)
            return [item for item in waiting if item.queue == queue]

        return self._call_in_loop(take)


def executor_for(
    callback: Callable[[Message], Any],
    is_async: bool,
    config: Config,
    reactor: Any,
    on_results: Callable[[list[Result]], None],
    consumer: Any,
    *,
    loop: Callable[[], asyncio.AbstractEventLoop],
    errors: ErrorWindow,
) -> ThreadExecutor | AsyncioExecutor:
    """The executor a consumer's callback runs on, with the config's settings.

    Args:
        callback: the loaded callback.
        is_async: it is an ``async def`` callback (an :class:`AsyncioExecutor`).
        config: its ``concurrency``, ``max_body_size`` and ``decode``.
        reactor: the reactor results go back to.
        on_results: receives each batch of results on the reactor thread.
        consumer: the consumer a callback publishes through.
        loop: returns the event loop an async callback runs on.
        errors: the consumer's error window.

    """
    if is_async:
        return AsyncioExecutor(
            callback,
            config.concurrency,
            reactor,
            on_results,
            consumer,
            loop=loop(),
            errors=errors,
            max_body_size=config.max_body_size,
            decode=config.decode,
        )
    return ThreadExecutor(
        callback,
        config.concurrency,
        reactor,
        on_results,
        consumer,
        errors=errors,
        max_body_size=config.max_body_size,
        decode=config.decode,
    )
