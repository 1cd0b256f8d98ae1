"""What ``fedmq requeue-dead`` republishes a parked message with (the broker part is in
tests/integration/test_requeue_dead.py).
"""

from __future__ import annotations

from fedmq._policy import dead_queue_name
from fedmq._requeue import requeued_properties, without_verdict_headers
from fedmq.message import Properties


def test_the_verdict_headers_are_left_behind_and_the_others_kept() -> None:
    headers = {
        "X-Dropped-By": "orders-consumer",
        "X-Dropped-Reason": "undecodable: not gzip",
        "X-Dropped-Timestamp": "2026-11-23T12:00:00+00:00",
        "X-Processing-Exception": "the database said no",
        "X-Processing-Exceptions": 4,
        "X-Original-Exchange": "amq.topic",
        "X-Original-Routing-Key": "orders.created",
        "X-Original-Queue": "orders",
        "x-death": [{"count": 1, "queue": "orders.retry.1s"}],
        "source": "shop",
    }

    assert without_verdict_headers(headers) == {
        "X-Original-Exchange": "amq.topic",
        "X-Original-Routing-Key": "orders.created",
        "X-Original-Queue": "orders",
        "x-death": [{"count": 1, "queue": "orders.retry.1s"}],
        "source": "shop",
    }
    assert "X-Dropped-By" in headers  # the parked message's own dict is untouched


def test_a_message_without_headers_keeps_none() -> None:
    assert without_verdict_headers(None) is None
    assert without_verdict_headers({"X-Dropped-By": "x"}) == {}


def test_the_other_properties_are_republished_as_they_were() -> None:
    parked = Properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"X-Dropped-Reason": "why", "k": "v"},
        delivery_mode=2,
        message_id="m1",
        timestamp=1764000000,
        type="orders.created",
    )

    props = requeued_properties(parked)

    assert props == Properties(
        content_type="application/json",
        content_encoding="gzip",
        headers={"k": "v"},
        delivery_mode=2,
        message_id="m1",
        timestamp=1764000000,
        type="orders.created",
    )
    assert parked.headers == {"X-Dropped-Reason": "why", "k": "v"}


def test_the_dead_queue_of_a_queue_is_its_name_and_dot_dead() -> None:
    assert dead_queue_name("orders") == "orders.dead"
