"""Publishing: confirms, timeouts and the channel a publisher keeps."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from fedmq._publisher import Publisher
from fedmq.config import config_from_mapping
from fedmq.exceptions import PublishConnectionLost, PublishTimeout
from fedmq.message import Message


class FakeChannel:
    """A confirm channel whose broker answers only when the test says so."""

    def __init__(self) -> None:
        self.is_open = True
        self.published: list[tuple[str, str, bytes, Any, bool]] = []
        self.confirms: list[defer.Deferred[None]] = []
        self.confirm_selected = False

    def confirm_select(self) -> defer.Deferred[None]:
        self.confirm_selected = True
        return defer.succeed(None)

    def publish(self, exchange, routing_key, body, properties, mandatory=False):
        self.published.append((exchange, routing_key, body, properties, mandatory))
        d: defer.Deferred[None] = defer.Deferred()
        self.confirms.append(d)
        return d

    def close(self) -> defer.Deferred[None]:
        self.is_open = False
        return defer.succeed(None)


class FakeConnection:
    def __init__(self) -> None:
        self.is_open = True
        self.channels: list[FakeChannel] = []

    def channel(self) -> defer.Deferred[FakeChannel]:
        channel = FakeChannel()
        self.channels.append(channel)
        return defer.succeed(channel)


def make_publisher(**config: Any) -> tuple[Publisher, FakeConnection, task.Clock]:
    clock = task.Clock()
    connection = FakeConnection()
    settings = config_from_mapping({"amqp_url": "amqp://localhost/", **config})
    return Publisher(settings, clock, connection), connection, clock  # type: ignore[arg-type]


def test_a_publish_fires_only_once_the_broker_confirms():
    publisher, connection, _ = make_publisher()
    results: list[Any] = []
    publisher.publish(Message({"a": 1}, topic="t"), "ex", "rk").addBoth(results.append)
    [channel] = connection.channels
    assert channel.confirm_selected
    assert results == []
    channel.confirms[0].callback(None)
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
    publisher, connection, _ = make_publisher(publish_exchange="events", topic_prefix="prod.")
    publisher.publish(Message({"a": 1}, topic="user.created"))
    exchange, routing_key, body, properties, mandatory = connection.channels[0].published[0]
    assert (exchange, routing_key, body) == ("events", "prod.user.created", b'{"a":1}')
    assert properties.content_type == "application/json"
    assert properties.delivery_mode == 2
    assert mandatory is False


def test_publishes_share_one_confirm_channel():
    publisher, connection, _ = make_publisher()
    for n in range(3):
        publisher.publish(Message(n, topic="t"), "ex", "rk")
    assert len(connection.channels) == 1
    assert len(connection.channels[0].published) == 3


def test_a_closed_consumer_connection_is_reported_not_reopened():
    publisher, connection, _ = make_publisher()
    connection.is_open = False
    failures: list[Any] = []
    publisher.publish(Message(1, topic="t"), "ex", "rk").addErrback(failures.append)
    [failure] = failures
    assert failure.check(PublishConnectionLost)
    assert "nothing was published" in str(failure.value)
    assert connection.channels == []


def test_messages_published_while_the_channel_opens_keep_their_order():
    publisher, connection, _ = make_publisher()
    opening: defer.Deferred[FakeChannel] = defer.Deferred()
    connection.channel = lambda: opening  # type: ignore[method-assign]
    for n in range(5):
        publisher.publish(Message(n, topic="t"), "ex", "rk")
    channel = FakeChannel()
    opening.callback(channel)
    assert [body for _, _, body, _, _ in channel.published] == [b"0", b"1", b"2", b"3", b"4"]
