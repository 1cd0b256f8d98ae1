"""A class callback's setup() and teardown(), on a real broker."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import pytest_twisted

import fedmq
from fedmq import exit_codes
from fedmq.exceptions import CallbackError
from tests.integration.conftest import wait_for


class Recorder:
    """A sync callback class that records what happens to it, in order."""

    events: list[str]

    def __init__(self) -> None:
        self.events = []
        self.setup_thread: threading.Thread | None = None

    def setup(self) -> None:
        self.setup_thread = threading.current_thread()
        self.events.append("setup")

    def __call__(self, message: fedmq.Message) -> None:
        self.events.append(f"message {message.body}")

    def teardown(self) -> None:
        self.events.append("teardown")


@pytest_twisted.ensureDeferred
async def test_setup_runs_before_the_first_message_and_teardown_after_the_drain(
    broker, queue_name, make_config
):
    """setup() once before any message, off the reactor thread; teardown() once, last."""
    consumer = await fedmq.consume(Recorder, config=make_config())
    recorder: Any = consumer.callback
    broker.publish(queue_name, [1, 2])
    await wait_for(lambda: consumer.counts["acked"] == 2, what="both messages")
    await consumer.cancel()
    assert recorder.events == ["setup", "message 1", "message 2", "teardown"]
    assert recorder.setup_thread is not threading.main_thread()


@pytest_twisted.ensureDeferred
async def test_async_setup_runs_on_the_loop_the_async_callback_runs_on(
    broker, queue_name, make_config
):
    """What an async setup() makes for its loop (a lock, a client session) works in callbacks."""

    class AsyncConsumer:
        def __init__(self) -> None:
            self.loops: list[asyncio.AbstractEventLoop] = []
            self.lock: asyncio.Lock | None = None
            self.torn_down = False

        async def setup(self) -> None:
            self.loops.append(asyncio.get_running_loop())
            self.lock = asyncio.Lock()
            async with self.lock:  # binds the lock to this loop
                pass

        async def __call__(self, message: fedmq.Message) -> None:
            self.loops.append(asyncio.get_running_loop())
            assert self.lock is not None
            async with self.lock:
                await asyncio.sleep(0)

        async def teardown(self) -> None:
            self.loops.append(asyncio.get_running_loop())
            self.torn_down = True

    consumer = await fedmq.consume(AsyncConsumer, config=make_config(concurrency=2))
    instance: Any = consumer.callback
    broker.publish(queue_name, [1, 2, 3])
    await wait_for(lambda: consumer.counts["acked"] == 3, what="every message")
    await consumer.cancel()
    await consumer.result
    assert instance.torn_down
    assert len(set(instance.loops)) == 1
    assert len(instance.loops) == 5


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest_twisted.ensureDeferred
async def test_a_setup_that_raises_stops_the_consumer_before_it_consumes(
    broker, queue_name, make_config, is_async
):
    """The error names the callback and the exception; the exit code is 5; nothing is taken."""

    class NoDatabase:
        def __call__(self, message: fedmq.Message) -> None:
            raise AssertionError("never called")

    if is_async:

        async def setup(self: Any) -> None:
            raise ConnectionRefusedError("postgres at 127.0.0.1:5432 refused the connection")

    else:

        def setup(self: Any) -> None:
            raise ConnectionRefusedError("postgres at 127.0.0.1:5432 refused the connection")

    NoDatabase.setup = setup  # type: ignore[attr-defined]
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["waiting"])
    with pytest.raises(CallbackError) as caught:
        await fedmq.consume(NoDatabase, config=make_config(name="orders-db"))
    assert str(caught.value) == (
        "setup() of the callback 'orders-db' raised ConnectionRefusedError: "
        "postgres at 127.0.0.1:5432 refused the connection"
    )
    assert exit_codes.exit_code_for(caught.value) == exit_codes.CALLBACK_FAILED
    assert broker.counts(queue_name) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_a_teardown_that_raises_is_logged_and_the_stop_completes(
    broker, queue_name, make_config, caplog
):
    """An exception in teardown() is logged with the callback's name; the stop is still clean."""

    class Leaky(Recorder):
        def teardown(self) -> None:
            raise OSError("the socket was already closed")

    consumer = await fedmq.consume(Leaky, config=make_config(name="leaky"))
    await consumer.cancel()
    await consumer.result
    assert "teardown() of the callback 'leaky' raised OSError" in caplog.text


@pytest_twisted.ensureDeferred
async def test_a_teardown_running_past_drain_timeout_is_logged_and_the_stop_completes(
    broker, queue_name, make_config, caplog
):
    """The stop does not wait for a stuck teardown() longer than drain_timeout."""
    release = threading.Event()

    class StuckTeardown(Recorder):
        def teardown(self) -> None:
            self.events.append("teardown")
            release.wait(30)

    config = make_config(name="stuck-teardown", drain_timeout=0.5)
    consumer = await fedmq.consume(StuckTeardown, config=config)
    broker.publish(queue_name, [1])
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    try:
        await consumer.cancel()
        assert await consumer.result is None
        assert not release.is_set(), "the stop waited for teardown()"
        assert broker.consumers(queue_name) == []
    finally:
        release.set()
    assert consumer.callback.events[-1] == "teardown"
    assert "teardown() of the callback 'stuck-teardown' did not return within 0.5 s" in (
        caplog.text
    )


@pytest_twisted.ensureDeferred
async def test_reconnecting_does_not_call_setup_or_teardown_again(
    broker, queue_name, make_config, rabbit
):
    """The broker closes the connection; fedmq consumes again on a new channel, and the
    callback's setup() and teardown() still run once each.
    """
    consumer = await fedmq.consume(Recorder, config=make_config())
    recorder: Any = consumer.callback
    broker.publish(queue_name, [1])
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the first message acked")
    [(channel_before, _)] = broker.consumers(queue_name)
    rabbit.close_all_connections("the test closes it")
    await wait_for(
        lambda: [c for c, _ in broker.consumers(queue_name)] not in ([], [channel_before]),
        what="a consumer on a new channel",
    )
    broker.publish(queue_name, [2])
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the second message acked")
    await consumer.cancel()
    assert recorder.events == ["setup", "message 1", "message 2", "teardown"]
