"""Tests for fedmq._executors: where callbacks run.

The two real executors are tested with their real threads, under the reactor
pytest-twisted runs; they are made deterministic with Events and Barriers,
never by waiting for time to pass.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from fedmq._delivery import ACK, CONSUMER_ERROR, ERROR, HALT, RETURNED, Result
from fedmq._dispatch import Dispatcher
from fedmq._error_window import ErrorWindow
from fedmq._executors import AsyncioExecutor, ThreadExecutor, current_consumer
from fedmq.config import Config
from fedmq.exceptions import ConsumerError, HaltConsumer
from fedmq.message import Message
from tests.unit.fakes import FakeChannel
from tests.unit.test_dispatch import QUEUE, WAIT, counts, delivery

# --- the real executors ---------------------------------------------------------


def within(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    """``d``, cancelled if it has not fired after ``seconds``.

    A guard, not a wait: it turns a bug that would hang the suite into a
    failure. The tests wait for events, never for time to pass.
    """
    timer = threading.Timer(seconds, reactor.callFromThread, (d.cancel,))
    timer.daemon = True
    timer.start()

    def stop_timer(result: Any) -> Any:
        timer.cancel()
        return result

    return d.addBoth(stop_timer)


def one_reactor_turn() -> defer.Deferred[None]:
    """Let the reactor run what threads have already handed it with callFromThread."""
    return task.deferLater(reactor, 0, lambda: None)


class Results:
    """A real executor's results sink: records each batch and the thread it came on."""

    def __init__(self) -> None:
        self.batches: list[list[Result]] = []
        self.threads: set[int] = set()
        self._waiters: list[tuple[int, defer.Deferred[None]]] = []

    def __call__(self, batch: list[Result]) -> None:
        self.threads.add(threading.get_ident())
        self.batches.append(list(batch))
        count = len(self.outcomes)
        ready = [d for wanted, d in self._waiters if count >= wanted]
        self._waiters = [(wanted, d) for wanted, d in self._waiters if count < wanted]
        for d in ready:
            d.callback(None)

    @property
    def outcomes(self) -> dict[int, int]:
        return {result[0]: result[1] for batch in self.batches for result in batch}

    def when(self, count: int) -> defer.Deferred[None]:
        """Fires once ``count`` deliveries have been reported."""
        if len(self.outcomes) >= count:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((count, d))
        return within(d)


@pytest.fixture
def gates() -> Iterator[Callable[[], threading.Event]]:
    """Events callbacks wait on; all are opened at teardown so no thread is left waiting."""
    made: list[threading.Event] = []

    def gate() -> threading.Event:
        made.append(threading.Event())
        return made[-1]

    yield gate
    for event in made:
        event.set()


class Executors:
    """The executors a test makes; those not yet joined are stopped at teardown."""

    def __init__(self) -> None:
        self._made: list[tuple[Any, defer.Deferred[None]]] = []

    def append(self, executor: Any) -> None:
        self._made.append((executor, executor.join()))

    def stop_unjoined(self) -> None:
        for executor, joined in self._made:
            if not joined.called:
                executor.stop_intake()


def _window(max_errors: int) -> ErrorWindow:
    """The error window of a consumer with ``max_errors``."""
    return ErrorWindow.of(Config(max_errors=max_errors), reactor.seconds)


@pytest.fixture
def executors() -> Iterator[Executors]:
    """Tracks a test's executors so that none is left with workers waiting for work."""
    made = Executors()
    yield made
    made.stop_unjoined()


@pytest_twisted.ensureDeferred
async def test_thread_executor_runs_size_callbacks_at_once(executors: Executors):
    """With 3 workers, 3 callbacks run at the same time; results come back on the reactor thread."""
    running_together = threading.Barrier(4, timeout=WAIT)  # 3 callbacks and this test
    threads: list[threading.Thread] = []

    def callback(message: Message) -> None:
        threads.append(threading.current_thread())
        running_together.wait()

    results = Results()
    executor = ThreadExecutor(callback, 3, reactor, results)
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    running_together.wait()
    await results.when(3)
    assert results.outcomes == {1: ACK, 2: ACK, 3: ACK}
    assert results.threads == {threading.get_ident()}
    assert len({thread.ident for thread in threads}) == 3
    assert await executor.stop_intake() == []
    await within(executor.join())
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


@pytest_twisted.ensureDeferred
async def test_thread_executor_starts_no_more_than_size_and_returns_the_rest(
    executors: Executors, gates: Callable[[], threading.Event]
):
    """With both workers busy the third delivery is not started; stop_intake hands it back."""
    both_started = threading.Barrier(3, timeout=WAIT)  # 2 callbacks and this test
    release = gates()
    seen: list[int | None] = []

    def callback(message: Message) -> None:
        seen.append(message.delivery_tag)
        both_started.wait()
        release.wait(WAIT)

    results = Results()
    executor = ThreadExecutor(callback, 2, reactor, results)
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    both_started.wait()
    unstarted = await executor.stop_intake()
    assert [item[0] for item in unstarted] == [3]
    release.set()
    await within(executor.join())
    assert results.outcomes == {1: ACK, 2: ACK}
    assert sorted(seen) == [1, 2]


@pytest.mark.parametrize(
    ("raised", "outcome", "max_errors"),
    [
        (HaltConsumer(), HALT, 5),
        (RuntimeError("database is down"), ERROR, 1),
        (ConsumerError("database is down"), CONSUMER_ERROR, 1),
    ],
    ids=["halt", "unexpected-error-max-errors-1", "consumer-error-max-errors-1"],
)
@pytest_twisted.ensureDeferred
async def test_thread_executor_starts_nothing_after_a_halt_or_error(
    raised: Exception, outcome: int, max_errors: int, executors: Executors
):
    """After a callback halts or fails, later deliveries come back unrun, as RETURNED."""
    seen: list[int | None] = []

    def callback(message: Message) -> None:
        seen.append(message.delivery_tag)
        if message.delivery_tag == 1:
            raise raised

    results = Results()
    executor = ThreadExecutor(callback, 1, reactor, results, errors=_window(max_errors))
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    await results.when(3)
    assert results.outcomes == {1: outcome, 2: RETURNED, 3: RETURNED}
    assert seen == [1]


@pytest.mark.parametrize("size", [1, 4])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest_twisted.ensureDeferred
async def test_no_callback_starts_once_the_error_window_stops_the_consumer(
    kind: str, size: int, executors: Executors
):
    """With max_errors 3 and 100 failing deliveries, callbacks stop at the third error.

    Only those already running when the third error is counted may still
    finish (one per other worker); every other delivery comes back unrun.
    """
    seen: list[int | None] = []
    lock = threading.Lock()

    def fail(message: Message) -> None:
        with lock:
            seen.append(message.delivery_tag)
        raise RuntimeError("database is down")

    async def fail_async(message: Message) -> None:
        fail(message)

    window = ErrorWindow(3, 60, reactor.seconds)
    results = Results()
    executor: Any
    if kind == "sync":
        executor = ThreadExecutor(fail, size, reactor, results, errors=window)
    else:
        executor = AsyncioExecutor(fail_async, size, reactor, results, errors=window)
    executors.append(executor)
    for tag in range(1, 101):
        executor.submit(delivery(tag))
    await results.when(100)
    ran = sorted(tag for tag, outcome in results.outcomes.items() if outcome == ERROR)
    unrun = [tag for tag, outcome in results.outcomes.items() if outcome == RETURNED]
    assert len(seen) <= 3 + size - 1
    assert sorted(seen) == ran
    assert len(ran) + len(unrun) == 100
    if size == 1:
        assert seen == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_thread_executor_goes_on_after_an_error_while_max_errors_allows(
    executors: Executors,
):
    """With max_errors above 1, the deliveries after a failed callback still run."""

    def callback(message: Message) -> None:
        if message.delivery_tag == 1:
            raise RuntimeError("database is down")

    results = Results()
    executor = ThreadExecutor(callback, 1, reactor, results, errors=_window(5))
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    await results.when(3)
    assert results.outcomes == {1: ERROR, 2: ACK, 3: ACK}


@pytest_twisted.ensureDeferred
async def test_thread_executor_lets_a_running_callback_finish_after_another_halts(
    executors: Executors, gates: Callable[[], threading.Event]
):
    """A callback already running when another halts finishes; nothing new starts in any worker."""
    both_started = threading.Barrier(2, timeout=WAIT)
    release = gates()
    seen: list[int | None] = []

    def callback(message: Message) -> None:
        seen.append(message.delivery_tag)
        if message.delivery_tag in (1, 2):
            both_started.wait()
        if message.delivery_tag == 1:
            raise HaltConsumer
        release.wait(WAIT)

    results = Results()
    executor = ThreadExecutor(callback, 2, reactor, results)
    executors.append(executor)
    executor.submit(delivery(1))
    executor.submit(delivery(2))
    await results.when(1)
    assert results.outcomes == {1: HALT}
    executor.submit(delivery(3))
    executor.submit(delivery(4))
    release.set()
    await results.when(4)
    assert results.outcomes == {1: HALT, 2: ACK, 3: RETURNED, 4: RETURNED}
    assert sorted(seen) == [1, 2]


@pytest_twisted.ensureDeferred
async def test_thread_executor_callbacks_see_their_consumer(executors: Executors):
    """Inside a worker thread, current_consumer is the consumer (fedmq.publish relies on it)."""
    consumer = object()
    seen: list[Any] = []
    results = Results()
    executor = ThreadExecutor(
        lambda message: seen.append(current_consumer.get()), 1, reactor, results, consumer
    )
    executors.append(executor)
    executor.submit(delivery(1))
    await results.when(1)
    assert seen == [consumer]


@pytest_twisted.ensureDeferred
async def test_thread_executor_reports_a_callback_that_raises_system_exit(
    executors: Executors,
):
    """A callback calling sys.exit() still has its delivery reported, and the executor joins."""
    called = threading.Event()
    threads: list[threading.Thread] = []

    def callback(message: Message) -> None:
        threads.append(threading.current_thread())
        called.set()
        raise SystemExit(3)

    results = Results()
    executor = ThreadExecutor(callback, 1, reactor, results)
    executors.append(executor)
    joined = executor.join()
    executor.submit(delivery(1))
    assert called.wait(WAIT)
    await executor.stop_intake()
    threads[0].join(WAIT)
    assert not threads[0].is_alive()
    await one_reactor_turn()
    assert results.outcomes == {1: ERROR}
    assert joined.called


@pytest_twisted.ensureDeferred
async def test_dispatcher_with_worker_threads_acks_every_message():
    """With real worker threads, every finished delivery is acked and stop() then fires at once."""
    channel = FakeChannel()
    results = Results()
    halts: list[HaltConsumer] = []
    errors: list[Any] = []

    def make_executor(on_results: Callable[[list[Result]], None]) -> ThreadExecutor:
        def both(batch: list[Result]) -> None:
            on_results(batch)
            results(batch)

        return ThreadExecutor(lambda message: None, 2, reactor, both)

    dispatcher = Dispatcher(channel, make_executor, halts.append, lambda *args: errors.append(args))
    deliver = dispatcher.deliver_for(QUEUE)
    for tag in range(1, 6):
        _, redelivered, exchange, topic, properties, body, _ = delivery(tag)
        deliver(tag, redelivered, exchange, topic, properties, body)
    await results.when(5)
    await within(dispatcher.stop())
    assert all(sent[0] == "ack" for sent in channel.sent)
    # Two workers finish in any order: single acks past an unfinished tag, then a run.
    covered: list[int] = []
    for _, tag, multiple in channel.sent:
        covered += [t for t in range(1, tag + 1) if t not in covered] if multiple else [tag]
    assert sorted(covered) == [1, 2, 3, 4, 5]
    assert dispatcher.counts == counts(received=5, acked=5)
    assert dispatcher.in_flight == 0
    assert (halts, errors) == ([], [])


@pytest_twisted.ensureDeferred
async def test_asyncio_executor_runs_on_its_own_loop_thread_under_the_default_reactor(
    executors: Executors,
):
    """Under a non-asyncio reactor an async callback runs on a running loop in another thread."""
    consumer = object()
    seen: list[dict[str, Any]] = []

    async def callback(message: Message) -> None:
        loop = asyncio.get_running_loop()
        seen.append(
            {
                "thread": threading.get_ident(),
                "loop running": loop.is_running(),
                "consumer": current_consumer.get(),
            }
        )

    results = Results()
    executor = AsyncioExecutor(callback, 1, reactor, results, consumer)
    executors.append(executor)
    executor.submit(delivery(1))
    await results.when(1)
    assert results.outcomes == {1: ACK}
    [inside] = seen
    assert inside["thread"] != threading.get_ident()
    assert inside["loop running"] is True
    assert inside["consumer"] is consumer
    assert results.threads == {threading.get_ident()}


@pytest_twisted.ensureDeferred
async def test_asyncio_executor_runs_size_callbacks_at_once(executors: Executors):
    """With size 3, three async callbacks are awaiting at the same time."""
    state: dict[str, Any] = {"running": 0}

    async def callback(message: Message) -> None:
        all_in = state.setdefault("all in", asyncio.Event())
        state["running"] += 1
        if state["running"] == 3:
            all_in.set()
        await asyncio.wait_for(all_in.wait(), WAIT)

    results = Results()
    executor = AsyncioExecutor(callback, 3, reactor, results)
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    await results.when(3)
    assert results.outcomes == {1: ACK, 2: ACK, 3: ACK}
    assert await within(executor.stop_intake()) == []
    await within(executor.join())


@pytest.mark.parametrize(
    ("raised", "outcome", "max_errors"),
    [
        (HaltConsumer(), HALT, 5),
        (RuntimeError("database is down"), ERROR, 1),
        (ConsumerError("database is down"), CONSUMER_ERROR, 1),
    ],
    ids=["halt", "unexpected-error-max-errors-1", "consumer-error-max-errors-1"],
)
@pytest_twisted.ensureDeferred
async def test_asyncio_executor_starts_nothing_after_a_halt_or_error(
    raised: Exception, outcome: int, max_errors: int, executors: Executors
):
    """After an async callback halts or fails, later deliveries come back unrun, as RETURNED."""
    seen: list[int | None] = []

    async def callback(message: Message) -> None:
        seen.append(message.delivery_tag)
        if message.delivery_tag == 1:
            raise raised

    results = Results()
    executor = AsyncioExecutor(callback, 1, reactor, results, errors=_window(max_errors))
    executors.append(executor)
    for tag in (1, 2, 3):
        executor.submit(delivery(tag))
    await results.when(3)
    assert results.outcomes == {1: outcome, 2: RETURNED, 3: RETURNED}
    assert seen == [1]


@pytest_twisted.ensureDeferred
async def test_asyncio_executor_stop_intake_returns_unstarted_deliveries(executors: Executors):
    """With its one task busy, stop_intake hands back the waiting delivery; the busy one ends."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def callback(message: Message) -> None:
        state["loop"] = asyncio.get_running_loop()
        state["release"] = release = asyncio.Event()
        started.set()
        await asyncio.wait_for(release.wait(), WAIT)

    results = Results()
    executor = AsyncioExecutor(callback, 1, reactor, results)
    executors.append(executor)
    executor.submit(delivery(1))
    executor.submit(delivery(2))
    assert started.wait(WAIT)
    unstarted = await within(executor.stop_intake())
    assert [item[0] for item in unstarted] == [2]
    state["loop"].call_soon_threadsafe(state["release"].set)
    await within(executor.join())
    assert results.outcomes == {1: ACK}


@pytest_twisted.ensureDeferred
async def test_asyncio_executor_closes_its_own_loop_once_joined(executors: Executors):
    """Once joined, the executor's loop thread has ended and its loop is closed."""
    seen: list[tuple[threading.Thread, asyncio.AbstractEventLoop]] = []

    async def callback(message: Message) -> None:
        seen.append((threading.current_thread(), asyncio.get_running_loop()))

    results = Results()
    executor = AsyncioExecutor(callback, 1, reactor, results)
    executors.append(executor)
    executor.submit(delivery(1))
    await results.when(1)
    await within(executor.stop_intake())
    await within(executor.join())
    [(thread, loop)] = seen
    thread.join(WAIT)
    assert not thread.is_alive()
    assert loop.is_closed()


@pytest_twisted.ensureDeferred
async def test_asyncio_executor_reports_a_callback_that_raises_cancelled_error(
    executors: Executors,
):
    """An async callback whose awaited task was cancelled still has its delivery reported."""
    called = threading.Event()

    async def callback(message: Message) -> None:
        called.set()
        raise asyncio.CancelledError

    results = Results()
    executor = AsyncioExecutor(callback, 1, reactor, results)
    executors.append(executor)
    executor.submit(delivery(1))
    assert called.wait(WAIT)
    # The callback raised in one step of its task, before stop_intake reaches
    # the loop: any result it put is already on its way to the reactor thread.
    await within(executor.stop_intake())
    assert results.outcomes == {1: ERROR}
