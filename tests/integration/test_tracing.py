"""OpenTelemetry spans and metrics of messages published and consumed, on the broker.

The SDK exports to memory (tests/helpers.py's OpenTelemetrySDK); messages go
through the suite's RabbitMQ node.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any
from urllib.parse import urlsplit

import pytest_twisted
from opentelemetry import trace

import fedmq
from fedmq._logging import make_formatter
from fedmq.config import config_from_mapping
from tests.integration.conftest import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def topic_config(make_config: Any, queue_name: str, **overrides: Any) -> Any:
    """A config consuming ``queue_name``, bound to amq.topic for ``obs.<queue>``."""
    return make_config(
        bindings=[
            {"exchange": "amq.topic", "queue": queue_name, "routing_keys": [f"obs.{queue_name}"]}
        ],
        **overrides,
    )


async def consume_until(otel: Any, callback: Any, config: Any, queue: str, count: int = 1) -> Any:
    """Consume until ``count`` process spans of ``queue`` have ended; those spans."""
    consumer = await fedmq.consume(callback, config=config)
    try:
        await wait_for(
            lambda: len(otel.finished(f"process {queue}")) >= count, what="the process spans"
        )
    finally:
        await consumer.cancel()
    return otel.finished(f"process {queue}")


@pytest_twisted.ensureDeferred
async def test_a_message_published_and_consumed_by_fedmq_is_one_trace_send_then_process(
    otel, broker, queue_name, make_config
):
    """The process span is the send span's child and links to it; send ends on the confirm."""
    config = topic_config(make_config, queue_name)
    consumer = await fedmq.consume(lambda message: None, config=config)
    await consumer.cancel()  # declared and bound; consume again below
    message = fedmq.Message({"n": 1}, topic=f"obs.{queue_name}", correlation_id="order-7")
    await fedmq.publish(message, config=config)
    [send] = otel.finished("send amq.topic")
    [process] = await consume_until(otel, lambda message: None, config, queue_name)

    assert send.kind == trace.SpanKind.PRODUCER
    assert process.kind == trace.SpanKind.CONSUMER
    assert process.context.trace_id == send.context.trace_id
    assert process.parent.span_id == send.context.span_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert dict(send.attributes) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"amq.topic:obs.{queue_name}",
        "messaging.rabbitmq.destination.routing_key": f"obs.{queue_name}",
        "messaging.message.id": message.id,
        "messaging.message.conversation_id": "order-7",
        "server.address": "127.0.0.1",
        "server.port": urlsplit(broker.url).port,
    }
    attributes = dict(process.attributes)
    assert attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": f"amq.topic:obs.{queue_name}:{queue_name}",
        "messaging.rabbitmq.destination.routing_key": f"obs.{queue_name}",
        "messaging.rabbitmq.message.delivery_tag": attributes[
            "messaging.rabbitmq.message.delivery_tag"
        ],
        "messaging.message.id": message.id,
        "messaging.message.conversation_id": "order-7",
        "server.address": "127.0.0.1",
        "server.port": urlsplit(broker.url).port,
        "fedmq.message.outcome": "ack",
    }
    assert attributes["messaging.rabbitmq.message.delivery_tag"] >= 1
    assert send.end_time <= process.start_time  # the confirm came before the delivery
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_the_amqp_password_is_in_no_span_attribute(otel, broker, rabbit_node, queue_name):
    """server.address is the broker's host alone: the URL's credentials stay out of spans."""
    password = "s3cret-" + queue_name[-8:]
    user = "tracer-" + queue_name[-8:]
    rabbit_node.ctl("add_user", user, password)
    rabbit_node.ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    try:
        config = config_from_mapping(
            {
                "amqp_url": rabbit_node.vhost_url("/", user=user, password=password),
                "queues": {queue_name: {"durable": True}},
            }
        )
        spans = await consume_and_publish_one(otel, config, queue_name)
    finally:
        rabbit_node.ctl("delete_user", user)
    assert {span.name for span in spans} >= {"send amq.default", f"process {queue_name}"}
    for span in spans:
        assert span.attributes["server.address"] == "127.0.0.1"
        assert not any(
            password in str(value) or user in str(value) for value in span.attributes.values()
        )


async def consume_and_publish_one(otel: Any, config: Any, queue: str) -> list[Any]:
    consumer = await fedmq.consume(lambda message: None, config=config)
    try:
        await fedmq.publish(fedmq.Message("x", topic=queue), exchange="", config=config)
        await wait_for(lambda: otel.finished(f"process {queue}"), what="the process span")
    finally:
        await consumer.cancel()
    return list(otel.spans.get_finished_spans())


@pytest_twisted.ensureDeferred
async def test_a_message_from_plain_pika_with_a_traceparent_continues_its_trace(
    otel, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x"], headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    [process] = await consume_until(otel, lambda message: None, make_config(), queue_name)
    assert format(process.context.trace_id, "032x") == TRACE_ID
    assert format(process.parent.span_id, "016x") == PARENT_ID
    assert [format(link.context.span_id, "016x") for link in process.links] == [PARENT_ID]
    assert process.attributes["messaging.destination.name"] == queue_name


@pytest_twisted.ensureDeferred
async def test_a_message_without_a_traceparent_starts_a_new_trace(
    otel, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x", "y"])
    first, second = await consume_until(otel, lambda m: None, make_config(), queue_name, 2)
    for process in (first, second):
        assert process.parent is None
        assert list(process.links) == []
    assert first.context.trace_id != second.context.trace_id


@pytest_twisted.ensureDeferred
async def test_with_link_only_the_process_span_starts_its_own_trace_linked_to_the_sender(
    otel, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x"], headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"})
    config = make_config(tracing={"link_only": True})
    [process] = await consume_until(otel, lambda message: None, config, queue_name)
    assert process.parent is None
    assert format(process.context.trace_id, "032x") != TRACE_ID
    [link] = process.links
    assert format(link.context.trace_id, "032x") == TRACE_ID
    assert format(link.context.span_id, "016x") == PARENT_ID


@pytest_twisted.ensureDeferred
async def test_a_retried_message_stays_in_its_trace_across_the_wait_queue(
    otel, broker, queue_name, make_config
):
    """The copy is sent from the first process span; the second run is in the same trace."""
    runs: list[int] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise fedmq.Retry("not yet")

    config = make_config(retry={"delays": [0.05]})
    consumer = await fedmq.consume(callback, config=config)
    try:
        await fedmq.publish(fedmq.Message("x", topic=queue_name), exchange="", config=config)
        await wait_for(lambda: len(otel.finished(f"process {queue_name}")) == 2, what="two runs")
    finally:
        await consumer.cancel()
    [sent] = [s for s in otel.finished("send amq.default") if s.parent is None]
    first, second = otel.finished(f"process {queue_name}")
    [copy] = [s for s in otel.spans.get_finished_spans() if s.name.startswith("send ") and s.parent]
    assert first.attributes["fedmq.message.outcome"] == "retry"
    assert second.attributes["fedmq.message.outcome"] == "ack"
    assert {first.context.trace_id, second.context.trace_id, copy.context.trace_id} == {
        sent.context.trace_id
    }
    assert copy.parent.span_id == first.context.span_id
    assert second.parent.span_id == copy.context.span_id
    assert copy.end_time <= first.end_time  # the original is settled after the copy's confirm


@pytest_twisted.ensureDeferred
async def test_a_span_made_in_a_sync_callback_is_a_child_of_the_process_span(
    otel, broker, queue_name, make_config
):
    def callback(message: fedmq.Message) -> None:
        with otel.tracer.start_as_current_span("user work"):
            pass

    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x"])
    [process] = await consume_until(otel, callback, make_config(), queue_name)
    [work] = otel.finished("user work")
    assert work.parent.span_id == process.context.span_id
    assert work.context.trace_id == process.context.trace_id


@pytest_twisted.ensureDeferred
async def test_a_span_made_in_an_async_callback_is_a_child_of_the_process_span(
    otel, broker, queue_name, make_config
):
    async def callback(message: fedmq.Message) -> None:
        with otel.tracer.start_as_current_span("user work"):
            pass

    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x", "y"])
    config = make_config(concurrency=2)
    processes = await consume_until(otel, callback, config, queue_name, 2)
    works = otel.finished("user work")
    assert sorted(w.parent.span_id for w in works) == sorted(p.context.span_id for p in processes)


@pytest_twisted.ensureDeferred
async def test_a_message_published_from_a_callback_is_sent_in_its_process_span(
    otel, broker, queue_name, make_config
):
    out = queue_name + ".out"
    broker.declare_queue(queue_name)
    broker.declare_queue(out)

    def callback(message: fedmq.Message) -> None:
        fedmq.publish(fedmq.Message("onward", topic=out), exchange="")

    broker.publish(queue_name, ["x"])
    [process] = await consume_until(otel, callback, make_config(), queue_name)
    [send] = otel.finished("send amq.default")
    assert send.parent.span_id == process.context.span_id
    [(properties, _body)] = broker.take_all(out)
    trace_id, span_id = properties.headers["traceparent"].split("-")[1:3]
    assert (trace_id, span_id) == (
        format(send.context.trace_id, "032x"),
        format(send.context.span_id, "016x"),
    )


@pytest_twisted.ensureDeferred
async def test_outcomes_are_on_the_process_span_and_error_type_only_for_unexpected_errors(
    otel, broker, queue_name, make_config
):
    seen: list[str] = []

    def callback(message: fedmq.Message) -> None:
        body = message.body
        seen.append(body)
        if body == "drop":
            raise fedmq.Drop("no")
        if body == "boom" and seen.count("boom") == 1:
            raise ValueError("boom")
        if body == "nack" and seen.count("nack") == 1:
            raise fedmq.Nack

    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["drop", "boom", "nack"])
    spans = await consume_until(otel, callback, make_config(), queue_name, 5)
    by_body = {}
    for span in spans:
        by_body.setdefault(span.attributes["messaging.message.id"], []).append(span)
    outcomes = sorted(
        tuple(s.attributes["fedmq.message.outcome"] for s in runs) for runs in by_body.values()
    )
    assert outcomes == [("drop",), ("nack", "ack"), ("nack", "ack")]
    errors = [s for s in spans if "error.type" in s.attributes]
    [error] = errors
    assert error.attributes["error.type"] == "ValueError"
    assert error.status.status_code == trace.StatusCode.ERROR
    assert [event.name for event in error.events] == ["exception"]


@pytest_twisted.ensureDeferred
async def test_settle_spans_show_each_ack_under_its_process_span(
    otel, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x"])
    config = make_config(tracing={"settle_spans": True})
    [process] = await consume_until(otel, lambda message: None, config, queue_name)
    [ack] = otel.finished(f"ack {queue_name}")
    assert ack.parent.span_id == process.context.span_id
    assert ack.kind == trace.SpanKind.CLIENT
    assert ack.attributes["messaging.operation.type"] == "settle"


@pytest_twisted.ensureDeferred
async def test_a_publish_the_broker_returns_ends_its_send_span_with_error_type(
    otel, broker, queue_name, make_config
):
    config = make_config()
    with contextlib.suppress(fedmq.PublishReturned):
        await fedmq.publish(
            fedmq.Message("x", topic="nowhere." + queue_name), config=config, mandatory=True
        )
    [send] = otel.finished("send amq.topic")
    assert send.attributes["error.type"] == "fedmq.exceptions.PublishReturned"
    assert send.status.status_code == trace.StatusCode.ERROR


@pytest_twisted.ensureDeferred
async def test_metrics_count_sent_and_consumed_messages_with_their_durations(
    otel, broker, queue_name, make_config
):
    config = topic_config(make_config, queue_name)
    consumer = await fedmq.consume(lambda message: None, config=config)
    try:
        for n in range(3):
            await fedmq.publish(fedmq.Message(n, topic=f"obs.{queue_name}"), config=config)
        await wait_for(lambda: len(otel.finished(f"process {queue_name}")) == 3, what="3 runs")
    finally:
        await consumer.cancel()
    # Low cardinality: the queue, not exchange:routing key:queue.
    [consumed] = otel.points(
        "messaging.client.consumed.messages",
        **{"messaging.destination.name": queue_name, "messaging.operation.name": "process"},
    )
    assert consumed.value == 3
    [processed] = otel.points(
        "messaging.process.duration", **{"messaging.destination.name": queue_name}
    )
    assert processed.count == 3
    assert processed.explicit_bounds[0] == 0.005
    sent = otel.points(
        "messaging.client.sent.messages",
        **{"messaging.destination.name": "amq.topic", "server.port": urlsplit(broker.url).port},
    )
    assert sum(point.value for point in sent) >= 3
    durations = otel.points(
        "messaging.client.operation.duration",
        **{"messaging.destination.name": "amq.topic", "messaging.operation.name": "send"},
    )
    assert sum(point.count for point in durations) >= 3


@pytest_twisted.ensureDeferred
async def test_json_log_lines_carry_the_trace_and_span_ids(
    otel, broker, queue_name, make_config, restore_logging
):
    """A line logged in the callback, and fedmq's own error line about the message."""
    lines: list[str] = []
    handler = logging.Handler()
    handler.setFormatter(make_formatter("json"))
    handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
    for name in ("fedmq", "app"):
        logging.getLogger(name).addHandler(handler)
    done = threading.Event()

    def callback(message: fedmq.Message) -> None:
        logging.getLogger("app").warning("working on it")
        if not done.is_set():
            done.set()
            raise ValueError("boom")

    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["x"])
    first, _second = await consume_until(otel, callback, make_config(), queue_name, 2)
    entries = [json.loads(line) for line in lines]
    ids = {"trace_id": format(first.context.trace_id, "032x")}
    ids["span_id"] = format(first.context.span_id, "016x")
    [working, *_] = [e for e in entries if e["message"] == "working on it"]
    assert {key: working[key] for key in ids} == ids
    [failed] = [e for e in entries if e["message"].startswith("The callback raised ValueError")]
    assert {key: failed[key] for key in ids} == ids
