"""fedmq's real Consumer on the in-memory broker: retries, dead-lettering, halts, reconnects.

The consumer and the broker share one ThreadedClock: retry delays pass when
the test advances it, and results from callback threads are run when the
test says. No sockets, no sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer

import fedmq
from fedmq import Drop, HaltConsumer, Message, Nack, Retry
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import AuthenticationFailed, ConnectionFailed
from fedmq.testing import InMemoryBroker, ThreadedClock


class Harness:
    """A consumer of queue "orders" (bound to amq.topic with org.#) on an in-memory broker."""

    def __init__(self, callback: Any, **config: Any) -> None:
        self.clock = ThreadedClock()
        self.broker = InMemoryBroker(self.clock)
        settings = {
            "amqp_url": "amqp://in-memory/",
            "queues": {"orders": {}},
            "bindings": [{"queue": "orders", "exchange": "amq.topic", "routing_keys": ["org.#"]}],
            "retry": {"delays": [5, 60], "max_attempts": 3},
            **config,
        }
        self.consumer = Consumer(
            config_from_mapping(settings), callback, reactor=self.clock, connect=self.broker.connect
        )
        started = self.consumer.start()
        self.clock.run_until(lambda: started.called)

    def until(self, done: Callable[[], bool]) -> None:
        self.clock.run_until(done)

    def stop(self) -> None:
        self.consumer.cancel()
        self.until(lambda: self.consumer.state == "stopped")


def test_a_retried_message_waits_each_delay_on_the_clock_then_succeeds():
    """Retry twice: the message comes back after 5 s, then after 60 s, and is acked on run 3."""
    attempts: list[int] = []

    def callback(message: Message) -> None:
        attempts.append(message.attempt)
        if message.attempt < 3:
            raise Retry("not yet")

    h = Harness(callback)
    h.broker.publish(Message({"id": 7}, "org.example.order"))
    h.until(lambda: h.broker.queue_depth("orders.retry.5s") == 1)
    h.broker.advance(4.9)
    assert attempts == [1]
    h.broker.advance(0.1)
    h.until(lambda: h.broker.queue_depth("orders.retry.60s") == 1)
    assert attempts == [1, 2]
    h.broker.advance(60)
    h.until(lambda: h.consumer.counts["acked"] == 1)
    assert attempts == [1, 2, 3]
    assert h.broker.queue_depth("orders") == 0
    h.stop()


def test_a_message_that_keeps_asking_for_retries_is_parked_in_the_dead_queue():
    """After max_attempts runs, the message is parked in orders.dead with its reason."""

    def callback(message: Message) -> None:
        raise Retry("still broken")

    h = Harness(callback)
    h.broker.publish(Message("m", "org.x"))
    for delay in (5, 60):
        h.until(lambda delay=delay: h.broker.queue_depth(f"orders.retry.{delay}s") == 1)
        h.broker.advance(delay)
    h.until(lambda: h.broker.queue_depth("orders.dead") == 1)
    [parked] = h.broker.ready("orders.dead")
    assert "Retry raised on each of 3 attempts" in parked.headers["X-Dropped-Reason"]
    assert parked.topic == "org.x"
    h.stop()


def test_a_dropped_message_goes_to_the_queues_dead_letter_exchange():
    """Drop rejects the message; the queue's x-dead-letter-exchange routes it to its queue."""

    def callback(message: Message) -> None:
        raise Drop("spam")

    h = Harness(
        callback,
        queues={"orders": {"arguments": {"x-dead-letter-exchange": "amq.fanout"}}},
    )
    h.broker.declare_queue("rejects")
    h.broker.bind("rejects", "amq.fanout")
    h.broker.publish(Message("spam", "org.x"))
    h.until(lambda: h.broker.queue_depth("rejects") == 1)
    assert [d.reason for d in h.broker.dead_lettered] == ["rejected"]
    assert len(h.broker.settled("orders", "rejected")) == 1
    h.stop()


def test_a_nacked_message_is_redelivered_and_then_acked():
    """Nack requeues; the next run sees redelivered=True and is acked."""
    runs: list[bool] = []

    def callback(message: Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            raise Nack

    h = Harness(callback)
    h.broker.publish(Message("m", "org.x"))
    h.until(lambda: h.consumer.counts["acked"] == 1)
    assert runs == [False, True]
    assert [s.how for s in h.broker.settlements] == ["requeued", "acked"]
    h.stop()


def test_a_halt_settles_the_message_and_stops_with_its_exit_code():
    """HaltConsumer(2): the message is acked, the consumer stops, result fails with it."""

    def callback(message: Message) -> None:
        raise HaltConsumer(2, "enough")

    h = Harness(callback)
    h.broker.publish(Message("m", "org.x"))
    h.until(lambda: h.consumer.state == "stopped")
    failure = h.consumer.result.result
    h.consumer.result.addErrback(lambda _: None)
    assert failure.value.exit_code == 2
    assert h.broker.queue_depth("orders") == 0


def test_an_async_callback_publishes_through_the_consumers_connection():
    """fedmq.publish from an async callback lands in the in-memory queue bound to its topic."""

    async def callback(message: Message) -> None:
        await fedmq.publish(Message({"seen": message.body}, "audit.seen"), exchange="amq.topic")

    h = Harness(callback)
    h.broker.declare_queue("audit")
    h.broker.bind("audit", "amq.topic", "audit.#")
    h.broker.publish(Message(1, "org.x"))
    h.until(lambda: h.broker.queue_depth("audit") == 1)
    assert [m.body for m in h.broker.ready("audit")] == [{"seen": 1}]
    h.stop()


def test_the_consumer_reconnects_and_gets_unsettled_messages_again():
    """The broker drops the connection mid-callback; once the callback has finished the
    consumer connects again and the unsettled message is redelivered, and acked.
    """
    release = threading.Event()
    runs: list[bool] = []

    def callback(message: Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            release.wait(10)

    h = Harness(callback)
    h.broker.publish(Message("m", "org.x"))
    h.until(lambda: runs == [False])
    h.broker.drop_connections()
    assert h.consumer.state == "reconnecting"
    release.set()
    h.until(lambda: len(h.broker.settled("orders", "acked")) == 1)
    assert runs == [False, True]
    assert h.consumer.stats.reconnects == 1
    h.stop()


@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetch_bounds_what_the_consumer_holds(prefetch: int):
    """With qos prefetch_count N and slow callbacks, N deliveries are unsettled at most."""
    gate = threading.Event()
    h = Harness(
        lambda message: gate.wait(10), qos={"prefetch_count": prefetch}, concurrency=prefetch
    )
    for n in range(6):
        h.broker.publish(Message(n, "org.x"))
    assert h.broker.unacked("orders") == prefetch
    gate.set()
    h.until(lambda: h.consumer.counts["acked"] == 6)
    h.stop()


def test_refused_connections_are_retried_with_backoff_on_the_clock():
    """Two refused attempts: the consumer tries again after 1 s, then 2 s, then consumes."""
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    broker.refuse_connections(ConnectionFailed("refused"), times=2)
    settings = config_from_mapping(
        {
            "amqp_url": "amqp://in-memory/",
            "queues": {"orders": {}},
            "reconnect": {"initial_delay": 1, "factor": 2, "jitter": 0},
        }
    )
    consumer = Consumer(settings, lambda m: None, reactor=clock, connect=broker.connect)
    started: defer.Deferred = consumer.start()
    assert consumer.state == "connecting" and not started.called
    clock.advance(0.9)
    assert not broker.connections
    clock.advance(0.1)
    clock.advance(1.9)
    assert not broker.connections
    clock.advance(0.1)
    clock.run_until(lambda: started.called)
    assert consumer.state == "consuming"
    assert len(broker.connections) == 1
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped")


def test_refused_credentials_end_the_consumer_at_once():
    """AuthenticationFailed is not retried: start() fails with it."""
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    broker.refuse_connections(AuthenticationFailed("bad password"))
    settings = config_from_mapping({"amqp_url": "amqp://in-memory/", "queues": {"orders": {}}})
    consumer = Consumer(settings, lambda m: None, reactor=clock, connect=broker.connect)
    failures: list = []
    consumer.start().addErrback(failures.append)
    clock.run_until(lambda: bool(failures))
    assert failures[0].check(AuthenticationFailed)
    consumer.result.addErrback(lambda _: None)
