"""RabbitMQ and fedmq's in-memory router route every case of the shared table alike.

One topic exchange with a queue bound per pattern, one headers exchange with a
queue bound per argument set; each routing key (each header set) is
published once, confirmed, and where it landed is read back with basic.get.
"""

from __future__ import annotations

import os

import pika

from fedmq.testing.rabbitmq import RabbitNode
from fedmq.testing.routing import headers_match, topic_matches
from tests.routing_cases import (
    HEADERS_BINDINGS,
    HEADERS_SETS,
    TOPIC_KEYS,
    TOPIC_PATTERNS,
    case_id,
    headers_cases,
    record_verdicts,
    recorded_verdicts,
    topic_cases,
)


def _landed(channel, queue: str) -> set[int]:
    """The indexes (bodies) of the messages in ``queue``, taking them all."""
    found = set()
    while True:
        method, _properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            return found
        found.add(int(body))


def _broker_verdicts(url: str) -> tuple[dict[str, bool], dict[str, bool]]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.exchange_declare("agreement.topic", "topic")
        channel.exchange_declare("agreement.headers", "headers")
        for index, pattern in enumerate(TOPIC_PATTERNS):
            channel.queue_declare(f"t{index}")
            channel.queue_bind(f"t{index}", "agreement.topic", routing_key=pattern)
        for index, arguments in enumerate(HEADERS_BINDINGS):
            channel.queue_declare(f"h{index}")
            channel.queue_bind(f"h{index}", "agreement.headers", arguments=arguments)
        for index, key in enumerate(TOPIC_KEYS):
            channel.basic_publish("agreement.topic", key, str(index).encode())
        for index, headers in enumerate(HEADERS_SETS):
            properties = pika.BasicProperties(headers=headers)
            channel.basic_publish("agreement.headers", "", str(index).encode(), properties)
        topic = {}
        for index, pattern in enumerate(TOPIC_PATTERNS):
            landed = _landed(channel, f"t{index}")
            for key_index, key in enumerate(TOPIC_KEYS):
                topic[case_id((pattern, key))] = key_index in landed
        headers = {}
        for index, arguments in enumerate(HEADERS_BINDINGS):
            landed = _landed(channel, f"h{index}")
            for set_index, sent in enumerate(HEADERS_SETS):
                headers[case_id((arguments, sent))] = set_index in landed
        return topic, headers
    finally:
        connection.close()


def test_rabbitmq_and_the_in_memory_router_route_every_case_of_the_table_alike(
    vhost: str, rabbit_node: RabbitNode
):
    """Every (pattern, key) and (binding, headers) case: the broker, the recorded
    table and fedmq.testing.routing give the same answer.
    """
    topic, headers = _broker_verdicts(vhost)
    assert len(topic) == len(topic_cases()) >= 500
    assert len(headers) == len(headers_cases()) >= 300
    if os.environ.get("FEDMQ_RECORD_ROUTING"):
        version = rabbit_node.ctl("version").strip()
        record_verdicts(topic, headers, version)
    recorded = recorded_verdicts()
    assert topic == recorded["topic"]
    assert headers == recorded["headers"]
    router_topic = {case_id(case): topic_matches(*case) for case in topic_cases()}
    router_headers = {case_id(case): headers_match(*case) for case in headers_cases()}
    disagreements = [case for case, routed in topic.items() if router_topic[case] != routed]
    disagreements += [case for case, routed in headers.items() if router_headers[case] != routed]
    assert disagreements == []
