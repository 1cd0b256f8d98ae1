"""How spans name a message's destination, as the RabbitMQ conventions spell it."""

from __future__ import annotations

import pytest

from fedmq._tracing import process_destination, send_destination


@pytest.mark.parametrize(
    ("exchange", "routing_key", "queue", "name"),
    [
        ("amq.topic", "org.build", "builds", "amq.topic:org.build:builds"),
        ("", "builds", "builds", "builds"),  # the default exchange, routed by the queue's name
        ("amq.topic", "builds", "builds", "amq.topic:builds"),
        ("logs", "", "all-logs", "logs:all-logs"),  # a fanout exchange
    ],
)
def test_a_delivery_is_named_exchange_routing_key_and_queue_leaving_out_empty_and_repeated_parts(
    exchange: str, routing_key: str, queue: str, name: str
) -> None:
    assert process_destination(exchange, routing_key, queue) == name


@pytest.mark.parametrize(
    ("exchange", "routing_key", "name"),
    [
        ("amq.topic", "org.build", "amq.topic:org.build"),
        ("", "builds", "builds"),
        ("logs", "", "logs"),
        ("", "", "amq.default"),
    ],
)
def test_a_publish_is_named_exchange_and_routing_key_or_amq_default(
    exchange: str, routing_key: str, name: str
) -> None:
    assert send_destination(exchange, routing_key) == name
