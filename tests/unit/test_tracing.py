"""How spans name a message's destination, as the RabbitMQ conventions spell it."""

from __future__ import annotations

import pytest

from fedmq._tracing import _server, process_destination, send_destination


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


def test_a_broker_address_without_a_port_is_named_as_it_is():
    """An in-memory broker's address is no host:port; the span names it and has no port."""
    assert _server("in-memory broker", None) == {"server.address": "in-memory broker"}
    assert _server("amqp://fake/", None) == {"server.address": "amqp://fake/"}
    assert _server("rabbit.example.org:5671", None) == {
        "server.address": "rabbit.example.org",
        "server.port": 5671,
    }
