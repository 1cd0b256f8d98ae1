"""Tests for fedmq._policy: where retried, parked and dropped messages go."""

from __future__ import annotations

import datetime

import pytest
from twisted.internet import defer

from fedmq._delivery import Delivery
from fedmq._policy import (
    ErrorPolicy,
    dead_queue_name,
    has_retry_queues,
    retry_queues,
    wait_queue_name,
)
from fedmq.config import QueueConfig, RetryConfig
from fedmq.exceptions import Retry
from fedmq.message import Message, Properties

QUEUE = "orders"


def delivery(headers: dict | None = None, exchange: str = "amq.topic", routing_key: str = "o.new"):
    properties = Properties(message_id="m-1", content_type="application/json", headers=headers)
    return Delivery(1, False, exchange, routing_key, properties, b"{}", QUEUE)


def policy(**keys) -> ErrorPolicy:
    keys.setdefault("retry", RetryConfig(delays=(1, 10, 60), max_attempts=4))
    keys.setdefault("retry_queues", [QUEUE])
    return ErrorPolicy(name="orders-worker", **keys)


# --- the queues --------------------------------------------------------------------


def test_wait_and_dead_queues_are_named_after_their_queue():
    """orders.retry.1s, orders.retry.2.5s, orders.dead."""
    assert wait_queue_name(QUEUE, 1) == "orders.retry.1s"
    assert wait_queue_name(QUEUE, 2.5) == "orders.retry.2.5s"
    assert dead_queue_name(QUEUE) == "orders.dead"


def test_wait_queues_expire_messages_back_into_their_queue():
    """Each wait queue has its delay as a TTL and dead-letters to the queue by name."""
    *waits, dead = retry_queues(QueueConfig(name=QUEUE), RetryConfig(delays=(1, 10)))
    assert [wait.name for wait in waits] == ["orders.retry.1s", "orders.retry.10s"]
    assert dict(waits[1].arguments) == {
        "x-message-ttl": 10000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": QUEUE,
    }
    assert dead.name == "orders.dead" and dead.durable and not dead.arguments


@pytest.mark.parametrize(
    ("queue", "retry", "expected"),
    [
        (QueueConfig(name=QUEUE), RetryConfig(), True),
        (QueueConfig(name=QUEUE), RetryConfig(enabled=False), False),
        (QueueConfig(name=""), RetryConfig(), False),
        (QueueConfig(name=QUEUE, exclusive=True), RetryConfig(), False),
        (QueueConfig(name=QUEUE, auto_delete=True), RetryConfig(), False),
    ],
    ids=["named", "disabled", "server-named", "exclusive", "auto-delete"],
)
def test_only_lasting_named_queues_get_retry_queues(queue, retry, expected):
    """Queues that vanish with their consumer get no wait queues pointing at them."""
    assert has_retry_queues(queue, retry) is expected


# --- routes ------------------------------------------------------------------------


def test_a_first_retry_goes_to_the_first_wait_queue_with_its_headers():
    """Attempt 1 failed: wait queue 1 s, X-Processing-Exception(s), X-Original-* set."""
    original = delivery(headers={"k": "v"})
    exchange, routing_key, properties, what = policy().retry_route(original, Retry("503"))
    assert (exchange, routing_key, what) == ("", "orders.retry.1s", "retried")
    assert properties.headers == {
        "k": "v",
        "X-Processing-Exceptions": 1,
        "X-Processing-Exception": "503",
        "X-Original-Exchange": "amq.topic",
        "X-Original-Routing-Key": "o.new",
        "X-Original-Queue": QUEUE,
    }
    assert properties.message_id == "m-1"
    assert original[4].headers == {"k": "v"}  # the delivery's own properties are untouched


@pytest.mark.parametrize(
    ("failed_before", "queue"),
    [(1, "orders.retry.10s"), (2, "orders.retry.60s")],
)
def test_later_retries_wait_longer(failed_before, queue):
    """The n-th failed run waits delays[n - 1]."""
    back = delivery(
        headers={
            "X-Processing-Exceptions": failed_before,
            "X-Original-Routing-Key": "o.new",
            "X-Original-Exchange": "amq.topic",
            "X-Original-Queue": QUEUE,
        },
        exchange="",
        routing_key=QUEUE,
    )
    _, routing_key, properties, _ = policy().retry_route(back, Retry("again"))
    assert routing_key == queue
    assert properties.headers["X-Processing-Exceptions"] == failed_before + 1
    assert properties.headers["X-Original-Routing-Key"] == "o.new"  # kept, not the queue name


def test_the_last_delay_repeats_when_attempts_outnumber_delays():
    """With 2 delays and 5 attempts, the third and fourth retries wait the last delay."""
    retry = RetryConfig(delays=(1, 5), max_attempts=5)
    back = delivery(headers={"X-Processing-Exceptions": 3})
    _, routing_key, _, what = policy(retry=retry).retry_route(back, Retry("again"))
    assert (routing_key, what) == ("orders.retry.5s", "retried")


def test_the_run_that_reaches_max_attempts_parks_the_message():
    """Failed run number max_attempts goes to the dead queue, saying who, why and when."""
    back = delivery(headers={"X-Processing-Exceptions": 3})
    exchange, routing_key, properties, what = policy().retry_route(back, Retry("still 503"))
    assert (exchange, routing_key, what) == ("", "orders.dead", "parked")
    headers = properties.headers
    assert headers["X-Processing-Exceptions"] == 4
    assert headers["X-Dropped-By"] == "orders-worker"
    assert headers["X-Dropped-Reason"] == "Retry raised on each of 4 attempts; the last: still 503"
    stamp = datetime.datetime.fromisoformat(headers["X-Dropped-Timestamp"])
    assert stamp.tzinfo is not None and stamp.utcoffset() == datetime.timedelta(0)


def test_a_queue_without_retry_queues_has_no_retry_or_park_route():
    """Retry and parking need the queue's wait and dead queues."""
    bare = policy(retry_queues=[])
    assert bare.retry_route(delivery(), Retry("x")) is None
    assert bare.park_route(delivery(), "undecodable") is None


def test_a_drop_goes_to_the_drop_exchange_with_the_original_routing_key():
    """The drop exchange gets the message under the routing key it was first published with."""
    back = delivery(headers={"X-Original-Routing-Key": "o.new"}, exchange="", routing_key=QUEUE)
    exchange, routing_key, properties, what = policy(drop_exchange="drops").drop_route(
        back, "bad order"
    )
    assert (exchange, routing_key, what) == ("drops", "o.new", "dropped")
    assert properties.headers["X-Dropped-Reason"] == "bad order"
    assert policy().drop_route(delivery(), "bad order") is None


def test_a_huge_exception_text_is_cut_in_the_header():
    """Header values stay small however long the exception's text is."""
    _, _, properties, _ = policy().retry_route(delivery(), Retry("x" * 100_000))
    assert len(properties.headers["X-Processing-Exception"]) == 2000


@pytest.mark.parametrize(
    ("kind", "accepted"), [("order.created", True), ("refund", False), (None, False)]
)
def test_message_types_accept_only_the_listed_types(kind, accepted):
    """A type not listed, or no type at all, is not accepted; the reason names it."""
    reason = policy(message_types=["order.created"]).invalid_type(Properties(type=kind))
    assert (reason is None) is accepted
    if not accepted:
        assert repr(kind) in reason and "'order.created'" in reason


def test_without_message_types_every_type_is_accepted():
    assert policy().invalid_type(Properties(type="anything")) is None


def test_publish_hands_the_route_and_body_to_the_publish_function():
    sent = []

    def publish(exchange, routing_key, body, properties):
        sent.append((exchange, routing_key, body, properties.headers["X-Dropped-Reason"]))
        return defer.succeed(None)

    route = policy(publish=publish).park_route(delivery(), "undecodable")
    policy(publish=publish).publish(route, b"raw")
    assert sent == [("", "orders.dead", b"raw", "undecodable")]


# --- what the callback sees -----------------------------------------------------------------


def test_a_retried_delivery_shows_its_original_topic_and_attempt():
    """Back from a wait queue, the message has its first topic and exchange, and attempt 3."""
    headers = {
        "X-Processing-Exceptions": 2,
        "X-Original-Routing-Key": "o.new",
        "X-Original-Exchange": "amq.topic",
    }
    message = Message._from_delivery(
        b"{}",
        Properties(headers=headers, content_type="application/json"),
        topic=QUEUE,
        exchange="",
        delivery_tag=1,
        redelivered=False,
        queue=QUEUE,
    )
    assert (message.topic, message.exchange, message.attempt) == ("o.new", "amq.topic", 3)


def test_a_first_delivery_is_attempt_1_and_keeps_its_routing():
    message = Message._from_delivery(
        b"{}",
        Properties(content_type="application/json"),
        topic="o.new",
        exchange="amq.topic",
        delivery_tag=1,
        redelivered=False,
        queue=QUEUE,
    )
    assert (message.topic, message.exchange, message.attempt) == ("o.new", "amq.topic", 1)


def test_a_quorum_queue_gets_quorum_wait_and_dead_queues():
    """They survive a node's loss as the queue does, and return messages at least once."""
    queue = QueueConfig(name=QUEUE, arguments={"x-queue-type": "quorum"})
    *waits, dead = retry_queues(queue, RetryConfig(delays=(1,)))
    assert dict(waits[0].arguments) == {
        "x-queue-type": "quorum",
        "x-message-ttl": 1000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": QUEUE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    assert dict(dead.arguments) == {"x-queue-type": "quorum"}


def test_a_stream_gets_no_retry_queues():
    assert not has_retry_queues(
        QueueConfig(name=QUEUE, arguments={"x-queue-type": "stream"}), RetryConfig()
    )
