"""fedmq.testing.run_callback: a callback's outcome on one message, as the consumer settles it."""

from __future__ import annotations

import asyncio
import gzip
from typing import Any, ClassVar

import pytest
import pytest_twisted

import fedmq
from fedmq import CallbackError, Drop, HaltConsumer, Message, Nack, Retry
from fedmq.config import Config
from fedmq.testing import Outcome, arun_callback, make_message, run_callback


def accept(message: Message) -> None:
    """Returns normally."""


def test_a_callback_that_returns_is_acked():
    """A callback returning normally gets ACK, no exception, no exit code."""
    result = run_callback(accept, {"id": 1}, "org.example.build")
    assert (result.outcome, result.exception, result.exit_code) == (Outcome.ACK, None, None)
    assert result.message is not None and result.message.body == {"id": 1}
    assert result.duration >= 0


@pytest.mark.parametrize(
    ("exception", "outcome"),
    [
        (Nack(), Outcome.NACK),
        (Drop("spam"), Outcome.DROP),
        (Retry("later"), Outcome.RETRY),
        (HaltConsumer(3), Outcome.HALT),
        (fedmq.ConsumerError("bad"), Outcome.ERROR),
        (KeyError("missing"), Outcome.ERROR),
    ],
)
def test_each_exception_gives_the_outcome_the_consumer_settles_with(
    exception: BaseException, outcome: Outcome
):
    """Nack, Drop, Retry, HaltConsumer and other exceptions each map to their outcome."""

    def callback(message: Message) -> None:
        raise exception

    result = run_callback(callback, "x")
    assert result.outcome is outcome
    assert result.exception is exception


def test_a_halt_reports_its_exit_code():
    """HaltConsumer(exit_code=4) is HALT with exit code 4."""

    def callback(message: Message) -> None:
        raise HaltConsumer(4, "stop")

    assert run_callback(callback).exit_code == 4


def test_fedora_messagings_exceptions_mean_what_fedmqs_do():
    """A callback raising fedora-messaging's Drop is dropped, as the consumer drops it."""
    from fedora_messaging.exceptions import Drop as FmDrop

    def callback(message: Message) -> None:
        raise FmDrop

    result = run_callback(callback)
    assert result.outcome is Outcome.DROP
    assert isinstance(result.exception, Drop)


def test_a_body_that_does_not_decode_never_reaches_the_callback():
    """Bytes that are not JSON under content type application/json are UNDECODABLE."""
    seen: list[Message] = []
    result = run_callback(seen.append, b"{not json", content_type="application/json")
    assert result.outcome is Outcome.UNDECODABLE
    assert seen == [] and result.message is None


def test_the_message_carries_what_the_consumer_would_decode():
    """Topic, headers, queue, redelivered, attempt and a gzip body arrive as delivered."""
    message = make_message(
        {"a": 1},
        "org.example.x",
        {"h": "v"},
        content_encoding="gzip",
        redelivered=True,
        attempt=3,
        queue="orders",
    )
    assert message.body == {"a": 1}
    assert gzip.decompress(message.data) == b'{"a":1}'
    assert (message.topic, message.headers["h"], message.queue) == ("org.example.x", "v", "orders")
    assert message.redelivered is True
    assert message.attempt == 3


def test_a_message_with_decoding_off_has_its_bytes_as_the_body():
    """With decode = false, the callback gets the raw bytes, as the consumer gives them."""
    config = Config().replace(decode=False)
    assert make_message({"a": 1}, config=config).body == b'{"a":1}'


class Configured:
    """A class callback taking consumer_config, with setup() and teardown()."""

    events: ClassVar[list[str]] = []

    def __init__(self, consumer_config: dict[str, Any]):
        self.greeting = consumer_config["greeting"]

    def setup(self) -> None:
        self.events.append("setup")

    def teardown(self) -> None:
        self.events.append("teardown")

    def __call__(self, message: Message) -> None:
        self.events.append(f"{self.greeting} {message.body}")
        fedmq.publish(Message({"done": message.body}, "org.example.done"))


def test_a_class_callback_gets_its_config_and_its_hooks_run_around_it():
    """consumer_config reaches __init__; setup, the call and teardown run in that order."""
    Configured.events.clear()
    result = run_callback(Configured, "bob", consumer_config={"greeting": "hi"})
    assert result.outcome is Outcome.ACK
    assert Configured.events == ["setup", "hi bob", "teardown"]


def test_what_the_callback_publishes_is_captured_and_not_sent():
    """A publish from the callback is in result.published, matched by topic pattern."""
    result = run_callback(Configured, "bob", consumer_config={"greeting": "hi"})
    result.published.assert_published("org.example.#", body={"done": "bob"}, count=1)


def test_a_setup_that_raises_is_a_callback_error():
    """setup() raising stops the run with CallbackError, as it stops the consumer."""

    class Broken:
        def setup(self) -> None:
            raise OSError("no database")

        def __call__(self, message: Message) -> None:
            raise AssertionError("never called")

    with pytest.raises(CallbackError, match=r"setup\(\) of the callback .* OSError: no database"):
        run_callback(Broken)


async def retry_async(message: Message) -> None:
    await asyncio.sleep(0)
    await fedmq.publish(Message(message.body, "org.example.retrying"))
    raise Retry("not yet")


class AsyncHooks:
    events: ClassVar[list[str]] = []

    async def setup(self) -> None:
        self.events.append("setup")

    async def teardown(self) -> None:
        self.events.append("teardown")

    async def __call__(self, message: Message) -> None:
        self.events.append("call")


def test_an_async_callback_runs_from_plain_pytest():
    """An async def callback's Retry and awaited publish are reported from a sync test."""
    result = run_callback(retry_async, "b", "t")
    assert result.outcome is Outcome.RETRY
    result.published.assert_published("org.example.retrying", body="b")


def test_async_hooks_run_on_the_callbacks_loop():
    """Async setup() and teardown() run around an async callback."""
    AsyncHooks.events.clear()
    assert run_callback(AsyncHooks).outcome is Outcome.ACK
    assert AsyncHooks.events == ["setup", "call", "teardown"]


def test_both_forms_run_inside_a_running_asyncio_loop():
    """Inside a running loop (as under pytest-asyncio), run_callback and arun_callback work."""

    async def main() -> tuple[Outcome, Outcome]:
        blocking = run_callback(retry_async, "b")
        awaited = await arun_callback(retry_async, "b")
        awaited.published.assert_published("org.example.retrying", count=1)
        return blocking.outcome, awaited.outcome

    assert asyncio.run(main()) == (Outcome.RETRY, Outcome.RETRY)


@pytest_twisted.inlineCallbacks
def test_a_callback_runs_on_the_reactor_thread_under_pytest_twisted():
    """Under pytest-twisted, the helper runs a sync and an async callback and reports them."""
    yield None
    assert run_callback(accept).outcome is Outcome.ACK
    assert run_callback(retry_async, "x").outcome is Outcome.RETRY


def test_an_unknown_delivery_option_is_refused():
    """A misspelt keyword (redelivred) is an error, not silently ignored."""
    with pytest.raises(TypeError, match="redelivred"):
        run_callback(accept, redelivred=True)


def test_a_callback_named_by_its_path_is_loaded_as_the_consumer_loads_it():
    """A "module:object" path is imported; a bad one is the consumer's CallbackError."""
    assert run_callback("tests.unit.callbacks_for_tests:sync_callback").outcome is Outcome.ACK
    with pytest.raises(CallbackError, match="has no attribute 'missing'"):
        run_callback("tests.unit.callbacks_for_tests:missing")
