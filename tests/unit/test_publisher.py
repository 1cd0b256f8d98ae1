"""fedmq.Publisher on a Clock: what goes on the wire, confirms, timeouts, one channel."""

from __future__ import annotations

import datetime
import logging
from typing import Any

import pytest

import fedmq
from fedmq.config import config_from_mapping
from fedmq.exceptions import PublishFormatError, PublishTimeout
from fedmq.message import Message
from tests.unit.test_publisher_object import FakeBroker, make


def make_publisher(**config: Any) -> tuple[fedmq.Publisher, FakeBroker, Any]:
    return make(**{"amqp_url": "amqp://localhost/", **config})


def test_a_publish_fires_only_once_the_broker_confirms():
    publisher, broker, _ = make_publisher()
    results: list[Any] = []
    publisher.publish(Message({"a": 1}, topic="t"), "ex", "rk").addBoth(results.append)
    assert len(broker.channel.sent) == 1
    assert results == []
    broker.channel.ack_all()
    assert results == [None]


def test_an_unconfirmed_publish_fails_with_publish_timeout_naming_the_message():
    publisher, _, clock = make_publisher()
    message = Message({"a": 1}, topic="t")
    d = publisher.publish(message, "orders", "rk", timeout=5)
    failures: list[Any] = []
    d.addErrback(failures.append)
    clock.advance(4.9)
    assert not failures
    clock.advance(0.2)
    [failure] = failures
    assert failure.check(PublishTimeout)
    assert message.id in str(failure.value) and "'orders'" in str(failure.value)


def test_the_default_exchange_and_topic_prefix_come_from_the_config():
    publisher, broker, _ = make_publisher(publish_exchange="events", topic_prefix="prod.")
    publisher.publish(Message({"a": 1}, topic="user.created"))
    exchange, routing_key, body, properties, mandatory = broker.channel.sent[0]
    assert (exchange, routing_key, body) == ("events", "prod.user.created", b'{"a":1}')
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert mandatory is False


def test_publishes_share_one_connection_and_confirm_channel():
    publisher, broker, _ = make_publisher()
    for n in range(3):
        publisher.publish(Message(n, topic="t"), "ex", "rk")
    assert len(broker.connections) == 1
    assert len(broker.channel.sent) == 3


def test_messages_published_while_the_connection_opens_keep_their_order():
    publisher, broker, _ = make_publisher()
    broker.slow = True
    for n in range(5):
        publisher.publish(Message(n, topic="t"), "ex", "rk")
    assert broker.connections[0].channel_made.sent == []
    broker.opening.callback(None)
    assert [body for _, _, body, _, _ in broker.channel.sent] == [b"0", b"1", b"2", b"3", b"4"]


# --- what goes on the wire ----------------------------------------------------


def sent(publisher: fedmq.Publisher, broker: FakeBroker, message: Any, **kwargs: Any) -> Any:
    """Publish ``message``; (exchange, routing key, body, properties, mandatory) as sent."""
    failures: list[Any] = []
    publisher.publish(message, **kwargs).addErrback(failures.append)
    assert not failures, failures[0]
    return broker.channel.sent[-1]


@pytest.mark.parametrize(
    ("prefix", "routing_key"),
    [
        ("org.fedoraproject.prod", "org.fedoraproject.prod.bodhi.update"),
        ("org.fedoraproject.prod.", "org.fedoraproject.prod.bodhi.update"),
        ("", "bodhi.update"),
    ],
)
def test_the_topic_prefix_is_joined_to_the_topic_with_a_dot(prefix: str, routing_key: str):
    publisher, broker, _ = make_publisher(topic_prefix=prefix)
    _exchange, key, *_ = sent(publisher, broker, Message({"a": 1}, topic="bodhi.update"))
    assert key == routing_key


def test_a_fedora_messaging_message_is_sent_with_the_properties_fedora_messaging_sends(
    fm_global_conf: Any,
):
    from fedmq_test_schemas import BuildFinishedV1

    from fedmq._fedora import fill_global_config

    config = config_from_mapping({"amqp_url": "amqp://localhost/", "topic_prefix": "org.example"})
    fill_global_config(config)  # fedora-messaging's own routing key uses the same prefix
    message = BuildFinishedV1(
        body={"build_id": 3, "package": "bash", "owner": "carol", "succeeded": True}
    )
    publisher, broker, _ = make_publisher(topic_prefix="org.example")
    exchange, key, body, properties, _ = sent(publisher, broker, message)
    assert exchange == "amq.topic"
    assert key == message._encoded_routing_key == "org.example.fedmqtest.build.finished"
    assert body == message._encoded_body
    theirs = message._properties
    for name in ("content_type", "content_encoding", "delivery_mode", "message_id", "priority"):
        assert getattr(properties, name) == getattr(theirs, name), name
    # With an OpenTelemetry SDK configured (an earlier test may have), the trace
    # context rides along too; everything else is fedora-messaging's.
    trace_context = {"traceparent", "tracestate"}
    sent_headers = {k: v for k, v in properties.headers.items() if k not in trace_context}
    assert sent_headers == theirs.headers
    assert properties.headers["fedora_messaging_schema"] == "fedmqtest.build.finished.v1"
    assert properties.headers["fedora_messaging_user_carol"] is True
    assert properties.headers["fedora_messaging_rpm_bash"] is True


def test_a_fedora_messaging_message_failing_its_schema_is_refused_and_not_sent():
    from fedmq_test_schemas import BuildFinishedV1

    publisher, broker, _ = make_publisher()
    failures: list[Any] = []
    publisher.publish(BuildFinishedV1(body={"build_id": 0})).addErrback(failures.append)
    [failure] = failures
    assert failure.check(PublishFormatError)
    assert "BuildFinishedV1" in str(failure.value) and "fails its schema" in str(failure.value)
    assert broker.connections == []


def test_a_json_object_body_carries_what_fedora_messaging_consumers_need():
    publisher, broker, _ = make_publisher()
    *_, properties, _ = sent(publisher, broker, Message({"a": 1}, topic="t"))
    headers = properties.headers
    assert headers["fedora_messaging_schema"] == "base.message"
    assert headers["fedora_messaging_severity"] == 20
    sent_at = datetime.datetime.fromisoformat(headers["sent-at"])
    assert sent_at.tzinfo is not None and sent_at.microsecond == 0
    assert properties.content_encoding == "utf-8"


def test_headers_a_message_sets_itself_are_kept():
    own = {
        "fedora_messaging_schema": "fedmqtest.review.comment.v1",
        "fedora_messaging_severity": 10,
        "sent-at": "2020-01-01T00:00:00+00:00",
    }
    message = Message({"a": 1}, topic="t", headers=own, content_encoding="gzip")
    publisher, broker, _ = make_publisher()
    *_, properties, _ = sent(publisher, broker, message)
    assert {name: properties.headers[name] for name in own} == own
    assert properties.content_encoding == "gzip"
    assert message.headers == own  # the message itself is left as it was


def test_a_body_that_is_not_a_json_object_gets_no_fedora_messaging_headers():
    publisher, broker, _ = make_publisher()
    *_, properties, _ = sent(publisher, broker, Message(b"\x00raw", topic="t"))
    assert "fedora_messaging_schema" not in properties.headers


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (Message([1, 2], topic="t"), "its body is a list, not a JSON object"),
        (Message("hello", topic="t"), "its body is a string, not a JSON object"),
        (Message(b"[1]", topic="t", content_type="application/json"), "its body is a list"),
        (Message(b"\x00", topic="t"), "its content type is 'application/octet-stream', not JSON"),
        (
            Message({"a": 1}, topic="t", content_encoding="gzip"),
            "its content encoding is 'gzip', not utf-8",
        ),
    ],
    ids=["list", "string", "json-bytes", "octet-stream", "gzip"],
)
def test_publish_format_fedora_messaging_refuses_a_body_its_consumers_drop(
    message: Message, problem: str
):
    publisher, broker, _ = make_publisher(publish_format="fedora-messaging")
    failures: list[Any] = []
    publisher.publish(message).addErrback(failures.append)
    [failure] = failures
    assert failure.check(PublishFormatError)
    assert isinstance(failure.value, fedmq.PublishError)
    assert problem in str(failure.value)
    assert 'publish_format is "fedora-messaging"' in str(failure.value)
    assert broker.connections == []


def test_publish_format_fedmq_sends_a_list_body_and_warns_once_per_topic(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="fedmq")
    publisher, broker, _ = make_publisher()
    for topic in ("warned.once", "warned.once", "warned.twice"):
        sent(publisher, broker, Message([1], topic=topic))
    assert len(broker.channel.sent) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "'warned.once'" in warnings[0] and "'warned.twice'" in warnings[1]
    assert "fedora-messaging consumers will drop" in warnings[0]
    assert "publish_format" in warnings[0]


def test_publish_format_fedmq_sends_bytes_without_a_warning(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="fedmq")
    publisher, broker, _ = make_publisher()
    sent(publisher, broker, Message(b"\x00\x01", topic="binary.stuff"))
    assert caplog.records == []


def test_publish_priority_is_the_priority_of_messages_that_set_none():
    publisher, broker, _ = make_publisher(publish_priority=5)
    *_, unset, _ = sent(publisher, broker, Message({"a": 1}, topic="t"))
    *_, own, _ = sent(publisher, broker, Message({"a": 1}, topic="t", priority=9))
    *_, raw, _ = sent(publisher, broker, Message(b"x", topic="t"))
    assert (unset.priority, own.priority, raw.priority) == (5, 9, 5)


def test_without_publish_priority_a_message_has_none():
    publisher, broker, _ = make_publisher()
    *_, properties, _ = sent(publisher, broker, Message({"a": 1}, topic="t"))
    assert properties.priority is None


def test_publishing_something_that_is_not_a_message_fails_with_type_error():
    publisher, _, _ = make_publisher()
    failures: list[Any] = []
    publisher.publish({"a": 1}).addErrback(failures.append)  # type: ignore[arg-type]
    assert failures[0].check(TypeError)
