"""Settling later: Message.settle_later() and fedmq.Settlement, on the in-memory broker.

fedmq's real Consumer runs on an InMemoryBroker that shares a ThreadedClock
with it: results and settlements from other threads run when the test says,
and the drain timeout passes when the test advances the clock. Handles are
settled from threads the tests start and join, from the callback's own
thread, and from an async callback's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import pytest

from fedmq import Message, Settlement, SettlementError, StopForced
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.testing import InMemoryBroker, Outcome, ThreadedClock, run_callback

#: Seconds a thread or a condition is waited for before the test fails.
WAIT = 10.0


class Harness:
    """A consumer of queue "orders" on an in-memory broker, its callback taking messages over."""

    def __init__(
        self,
        callback: Any = None,
        prepare: Callable[[InMemoryBroker], Any] | None = None,
        **config: Any,
    ) -> None:
        self.handles: list[Settlement] = []
        self.clock = ThreadedClock()
        self.broker = InMemoryBroker(self.clock)
        if prepare is not None:
            prepare(self.broker)
        settings = {
            "amqp_url": "amqp://in-memory/",
            "queues": {"orders": {}},
            "bindings": [{"queue": "orders", "exchange": "amq.topic", "routing_keys": ["org.#"]}],
            "retry": {"delays": [5], "max_attempts": 3},
            **config,
        }
        self.consumer = Consumer(
            config_from_mapping(settings),
            callback if callback is not None else self.take_over,
            reactor=self.clock,
            connect=self.broker.connect,
        )
        started = self.consumer.start()
        self.until(lambda: started.called)

    def take_over(self, message: Message) -> None:
        self.handles.append(message.settle_later())

    def publish(self, *bodies: Any) -> None:
        for body in bodies:
            self.broker.publish(Message(body, "org.example"))

    def until(self, done: Callable[[], bool]) -> None:
        self.clock.run_until(done, timeout=WAIT)

    def settled(self, how: str) -> int:
        return len(self.broker.settled("orders", how))

    def stop(self) -> None:
        self.consumer.cancel()
        self.until(lambda: self.consumer.state == "stopped")


def in_thread(action: Callable[[], Any]) -> list[BaseException]:
    """Run ``action`` in a new thread, wait for it, and return what it raised (if anything)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive()
    return raised


def in_flight_metric(consumer: Consumer) -> float:
    """``fedmq_messages_in_flight`` as /metrics serves it for ``consumer``."""
    from fedmq.monitoring import ConsumerCollector

    service = type("Service", (), {"consumer": consumer})()
    [family] = [m for m in ConsumerCollector(service).collect() if m.name.endswith("in_flight")]
    return float(family.samples[0].value)


# --- settling from another thread ---------------------------------------------------


def test_a_message_settled_later_stays_unacked_and_in_flight_until_its_handle_acks_it():
    h = Harness()
    h.publish("slow work")
    h.until(lambda: len(h.handles) == 1)
    h.clock.run_pending()
    assert h.broker.unacked("orders") == 1
    assert h.consumer.in_flight == 1
    assert in_flight_metric(h.consumer) == 1
    assert h.settled("acked") == 0
    assert in_thread(h.handles[0].ack) == []
    h.until(lambda: h.broker.queue_depth("orders") == 0)
    assert h.settled("acked") == 1
    assert h.consumer.in_flight == 0
    assert in_flight_metric(h.consumer) == 0
    assert h.consumer.counts["acked"] == 1
    assert h.handles[0].settled_with == "ack"
    h.stop()


def test_nack_later_returns_the_message_to_its_queue_and_it_is_delivered_again():
    runs: list[bool] = []

    def callback(message: Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            h.handles.append(message.settle_later())

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    in_thread(h.handles[0].nack)
    h.until(lambda: h.settled("acked") == 1)
    assert runs == [False, True]
    assert h.settled("requeued") == 1
    h.stop()


def test_drop_later_rejects_to_the_dead_letter_exchange_with_its_reason():
    h = Harness(queues={"orders": {"arguments": {"x-dead-letter-exchange": "amq.fanout"}}})
    h.broker.declare_queue("rejects")
    h.broker.bind("rejects", "amq.fanout")
    h.publish("spam")
    h.until(lambda: len(h.handles) == 1)
    in_thread(lambda: h.handles[0].drop("not ours"))
    h.until(lambda: h.broker.queue_depth("rejects") == 1)
    assert h.settled("rejected") == 1
    assert h.consumer.counts["dropped"] == 1
    h.stop()


def test_drop_later_copies_to_the_drop_exchange_with_the_reason_in_its_header():
    def prepare(broker: InMemoryBroker) -> None:
        broker.declare_exchange("dropped", "fanout")
        broker.declare_queue("dropped-copies")
        broker.bind("dropped-copies", "dropped")

    h = Harness(prepare=prepare, drop_exchange="dropped")
    h.publish("spam")
    h.until(lambda: len(h.handles) == 1)
    in_thread(lambda: h.handles[0].drop("not ours"))
    h.until(lambda: h.broker.queue_depth("dropped-copies") == 1)
    [copy] = h.broker.ready("dropped-copies")
    assert "not ours" in copy.headers["X-Dropped-Reason"]
    assert "drop()" in copy.headers["X-Dropped-Reason"]
    h.stop()


def test_retry_later_moves_the_message_to_its_retry_queue_and_it_comes_back():
    attempts: list[int] = []

    def callback(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            h.handles.append(message.settle_later())

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    in_thread(lambda: h.handles[0].retry("the database is busy"))
    h.until(lambda: h.broker.queue_depth("orders.retry.5s") == 1)
    [waiting] = h.broker.ready("orders.retry.5s")
    assert "the database is busy" in waiting.headers["X-Processing-Exception"]
    h.broker.advance(5)
    h.until(lambda: h.settled("acked") == 2)  # the original, once its copy was confirmed; run 2
    assert attempts == [1, 2]
    h.stop()


# --- once, and only while the callback runs -----------------------------------------


def test_a_handle_settles_once_and_a_second_call_names_the_first():
    h = Harness()
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    handle = h.handles[0]
    handle.ack()
    with pytest.raises(SettlementError, match=r"cannot be settled with nack\(\): ack\(\) was"):
        handle.nack()
    with pytest.raises(SettlementError):
        handle.ack()
    h.until(lambda: h.settled("acked") == 1)
    h.clock.run_pending()
    assert h.settled("requeued") == 0
    h.stop()


def test_of_many_threads_settling_one_handle_at_once_exactly_one_wins():
    def callback(message: Message) -> None:
        if not message.redelivered:  # a nacked message, back, is acked by returning
            h.handles.append(message.settle_later())

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    handle = h.handles[0]
    start = threading.Barrier(8)
    failures: list[BaseException] = []
    verbs = [handle.ack, handle.nack, handle.retry, handle.drop] * 2

    def settle(verb: Callable[[], None]) -> None:
        start.wait(WAIT)
        try:
            verb()
        except SettlementError as exc:
            failures.append(exc)

    threads = [threading.Thread(target=settle, args=(verb,)) for verb in verbs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(failures) == 7
    # What the broker sees for the one verdict that won, and nothing else.
    expected = {
        "ack": {"acked": 1, "requeued": 0, "rejected": 0, "retry": 0},
        "nack": {"acked": 1, "requeued": 1, "rejected": 0, "retry": 0},
        "drop": {"acked": 0, "requeued": 0, "rejected": 1, "retry": 0},
        "retry": {"acked": 1, "requeued": 0, "rejected": 0, "retry": 1},
    }[str(handle.settled_with)]

    def seen() -> dict[str, int]:
        found = {how: h.settled(how) for how in ("acked", "requeued", "rejected")}
        return {**found, "retry": h.broker.queue_depth("orders.retry.5s")}

    h.until(lambda: seen() == expected)
    h.clock.run_pending()
    assert seen() == expected
    h.stop()


def test_settle_later_is_for_a_running_callback_only():
    kept: list[Message] = []
    errors: list[str] = []

    def callback(message: Message) -> None:
        kept.append(message)
        message.settle_later().ack()
        with pytest.raises(SettlementError) as second:
            message.settle_later()
        errors.append(str(second.value))

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: h.settled("acked") == 1)
    assert "settle_later() was already called for message" in errors[0]
    with pytest.raises(SettlementError, match="is for the callback the consumer runs"):
        Message("to publish", "org.x").settle_later()
    h.publish("n")
    h.until(lambda: h.settled("acked") == 2)

    def returns(message: Message) -> None:
        kept.append(message)

    h2 = Harness(returns)
    h2.publish("m")
    h2.until(lambda: h2.settled("acked") == 1)
    with pytest.raises(SettlementError, match="before it returns"):
        kept[-1].settle_later()
    h.stop()
    h2.stop()


# --- where settling happens: the callback's own thread, an async callback ----------


def test_a_sync_callback_settling_its_message_before_it_returns_settles_it_once():
    def callback(message: Message) -> None:
        if not message.redelivered:
            message.settle_later().nack()

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: h.settled("acked") == 1)
    assert h.settled("requeued") == 1
    assert h.consumer.in_flight == 0
    h.stop()


def test_an_async_callback_settles_its_message_from_a_task_after_it_returned():
    settled = threading.Event()

    async def callback(message: Message) -> None:
        handle = message.settle_later()

        async def later() -> None:
            await asyncio.sleep(0)
            handle.ack()
            settled.set()

        asyncio.get_running_loop().create_task(later())

    h = Harness(callback)
    h.publish("m")
    h.until(settled.is_set)
    h.until(lambda: h.settled("acked") == 1)
    assert h.broker.queue_depth("orders") == 0
    h.stop()


def test_a_handle_settled_on_the_reactor_thread_is_settled_there_without_waiting():
    h = Harness()
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    h.clock.run_pending()
    h.handles[0].ack()  # the test's thread is this consumer's reactor thread
    h.until(lambda: h.settled("acked") == 1)
    h.stop()


# --- what settling later holds ------------------------------------------------------


def test_a_message_settled_later_holds_its_prefetch_slot():
    h = Harness(qos={"prefetch_count": 2}, concurrency=2)
    h.publish(1, 2, 3)
    h.until(lambda: len(h.handles) == 2)
    h.clock.run_pending()
    assert h.broker.unacked("orders") == 2
    assert len(h.broker.ready("orders")) == 1
    in_thread(h.handles[0].ack)
    h.until(lambda: len(h.handles) == 3)
    for handle in h.handles[1:]:
        handle.ack()
    h.until(lambda: h.broker.queue_depth("orders") == 0)
    h.stop()


def test_other_messages_are_acked_while_one_waits_for_its_handle():
    def callback(message: Message) -> None:
        if message.body == "later":
            h.handles.append(message.settle_later())

    h = Harness(callback, concurrency=2)
    h.publish("later", "a", "b", "c")
    h.until(lambda: h.settled("acked") == 3)
    assert h.broker.unacked("orders") == 1
    in_thread(h.handles[0].ack)
    h.until(lambda: h.settled("acked") == 4)
    h.stop()


# --- stopping and reconnecting --------------------------------------------------------


def test_the_drain_waits_for_a_message_settled_later():
    h = Harness(drain_timeout=30)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    stopped = h.consumer.cancel()
    h.clock.run_pending()
    h.clock.advance(29)
    h.clock.run_pending()
    assert h.consumer.state == "draining"
    assert not stopped.called
    in_thread(h.handles[0].ack)
    h.until(lambda: stopped.called)
    assert h.consumer.state == "stopped"
    assert h.consumer.result.called
    assert h.consumer.result.result is None
    assert h.settled("acked") == 1
    assert h.broker.queue_depth("orders") == 0


def test_a_message_not_settled_within_drain_timeout_goes_back_and_its_handle_then_warns(
    caplog: pytest.LogCaptureFixture,
):
    h = Harness(drain_timeout=30)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    h.consumer.cancel()
    h.clock.run_pending()
    h.clock.advance(30)
    h.until(lambda: h.consumer.state == "stopped")
    failures: list[Any] = []
    h.consumer.result.addErrback(failures.append)
    assert failures[0].check(StopForced)
    assert len(h.broker.ready("orders")) == 1
    with caplog.at_level(logging.WARNING, logger="fedmq"):
        assert in_thread(h.handles[0].ack) == []
    stale = [r for r in caplog.records if "came after its connection was lost" in r.getMessage()]
    assert len(stale) == 1
    assert h.settled("acked") == 0


def test_a_handle_that_outlived_its_connection_warns_once_and_the_message_comes_back(
    caplog: pytest.LogCaptureFixture,
):
    runs: list[bool] = []

    def callback(message: Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            h.handles.append(message.settle_later())

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: len(h.handles) == 1)
    h.broker.drop_connections()
    h.until(lambda: runs == [False, True])
    h.until(lambda: h.settled("acked") == 1)
    with caplog.at_level(logging.WARNING, logger="fedmq"):
        assert in_thread(h.handles[0].ack) == []
        h.clock.run_pending()
    stale = [r.getMessage() for r in caplog.records if "connection was lost" in r.getMessage()]
    assert len(stale) == 1
    assert "Settlement.ack()" in stale[0]
    assert "the broker delivers the message again" in stale[0]
    assert h.settled("acked") == 1
    assert h.consumer.in_flight == 0
    with pytest.raises(SettlementError):
        h.handles[0].nack()
    h.stop()


# --- what the callback does after settle_later() ---------------------------------------


def test_an_exception_after_settle_later_is_a_consumer_error_that_leaves_the_message_alone(
    caplog: pytest.LogCaptureFixture,
):
    def callback(message: Message) -> None:
        h.handles.append(message.settle_later())
        raise RuntimeError("the hand-off failed")

    with caplog.at_level(logging.ERROR, logger="fedmq"):
        h = Harness(callback, max_errors=5)
        h.publish("m")
        h.until(lambda: len(h.handles) == 1)
        h.until(lambda: "the hand-off failed" in caplog.text)
    assert "left to its Settlement" in caplog.text
    assert "consumer error 1 of max_errors 5" in caplog.text
    assert h.broker.unacked("orders") == 1
    assert h.settled("requeued") == 0
    in_thread(h.handles[0].ack)
    h.until(lambda: h.settled("acked") == 1)
    h.stop()


def test_halt_consumer_after_settle_later_stops_once_the_handle_settled_the_message():
    from fedmq import HaltConsumer

    def callback(message: Message) -> None:
        h.handles.append(message.settle_later())
        raise HaltConsumer(0, "enough", requeue=True)

    h = Harness(callback)
    h.publish("m")
    h.until(lambda: h.consumer.state == "draining")
    h.clock.run_pending()
    assert h.consumer.state == "draining"
    in_thread(h.handles[0].ack)
    h.until(lambda: h.consumer.state == "stopped")
    assert h.settled("acked") == 1
    assert h.settled("requeued") == 0


def test_nack_raised_after_settle_later_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
):
    from fedmq import Nack

    def callback(message: Message) -> None:
        h.handles.append(message.settle_later())
        raise Nack

    with caplog.at_level(logging.WARNING, logger="fedmq"):
        h = Harness(callback)
        h.publish("m")
        h.until(lambda: "raised Nack" in caplog.text)
    assert "after settle_later(); ignored" in caplog.text
    assert h.settled("requeued") == 0
    h.handles[0].ack()
    h.until(lambda: h.settled("acked") == 1)
    h.stop()


# --- fedmq.testing ---------------------------------------------------------------------


def test_run_callback_reports_deferred_with_the_handle():
    results: list[Settlement] = []

    def callback(message: Message) -> None:
        results.append(message.settle_later())

    result = run_callback(callback, {"n": 1})
    assert result.outcome is Outcome.DEFERRED
    assert result.settlement is results[0]
    assert result.settlement.settled_with is None
    result.settlement.drop("bad")
    assert result.settlement.settled_with == "drop"
    assert run_callback(lambda message: None, {"n": 1}).settlement is None


# --- fedora-messaging schema classes ---------------------------------------------------


def test_a_message_delivered_as_its_schema_class_can_be_settled_later_too():
    from fedmq_test_schemas import BuildFinishedV1

    from fedmq._delivery import DEFERRED
    from fedmq._executors import run_sync
    from fedmq._settle_later import settlement_of
    from tests.unit.test_fedora import BUILD, delivery, schema_headers

    handles: list[Settlement] = []
    seen: list[Any] = []

    def callback(message: Any) -> None:
        seen.append(message)
        handles.append(message.settle_later())

    result = run_sync(callback, delivery(BUILD, schema_headers()), schemas=True)
    assert isinstance(seen[0], BuildFinishedV1)
    assert result.outcome == DEFERRED
    assert settlement_of(result.message) is handles[0]
    assert handles[0].message is seen[0].fedmq_message
    with pytest.raises(SettlementError, match="already called"):
        seen[0].fedmq_message.settle_later()

    returned = run_sync(seen.append, delivery(BUILD, schema_headers()), schemas=True)
    with pytest.raises(SettlementError, match="before it returns"):
        returned.message.settle_later()


def test_messages_left_to_settlements_count_in_the_byte_budget_until_settled():
    """10 bodies of about 300 bytes, max_unacked_bytes 1,000, each left to its Settlement:
    the queue stays held after the callbacks returned, while the bytes are unsettled, and
    consumes again once the Settlements settle them (a message left to one was counted
    out when its callback returned, and again at its verdict).
    """
    h = Harness(queues={"orders": {"max_unacked_bytes": 1000}})
    h.publish(*["y" * 300 for _ in range(10)])
    h.until(lambda: len(h.handles) == 4 and h.consumer.in_flight == 4)  # 4 x 302 > 1,000
    for _ in range(10):
        h.clock.run_pending()
    state = h.consumer.queue_states()["orders"]
    assert not state.consuming
    assert "over max_unacked_bytes" in state.reasons
    assert len(h.handles) == 4
    acked = 0
    while acked < 10:
        h.until(lambda done=acked: len(h.handles) > done)
        for handle in h.handles[acked:]:
            assert in_thread(handle.ack) == []
        acked = len(h.handles)
        h.until(lambda done=acked: h.settled("acked") == done)
    h.until(lambda: h.consumer.queue_states()["orders"].consuming)
    h.stop()
