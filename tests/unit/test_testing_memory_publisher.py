"""fedmq.Publisher on the in-memory broker, through the broker's publisher connect seam."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from fedmq import Message, Publisher, PublishRefused, PublishReturned
from fedmq.config import config_from_mapping
from fedmq.testing import InMemoryBroker


def publisher_on(broker: InMemoryBroker, **config: Any) -> Publisher:
    settings = config_from_mapping({"amqp_url": "amqp://in-memory/", **config})
    return Publisher(settings, reactor=broker.clock, connect=broker.connect)


def outcome(broker: InMemoryBroker, publishing: defer.Deferred[None]) -> list[Any]:
    """What ``publishing`` ended with, once the broker's confirm (or return) arrived."""
    ended: list[Any] = []
    publishing.addBoth(ended.append)
    broker.advance(0)
    return ended


def test_a_published_message_lands_in_the_queue_bound_to_its_prefixed_topic():
    """topic_prefix "prod" and topic "user.created" route along a binding of prod.user.#."""
    broker = InMemoryBroker()
    broker.declare_queue("users")
    broker.bind("users", "amq.topic", "prod.user.#")
    publisher = publisher_on(broker, publish_exchange="amq.topic", topic_prefix="prod")
    assert outcome(broker, publisher.publish(Message({"id": 1}, "user.created"))) == [None]
    [message] = broker.ready("users")
    assert (message.topic, message.body) == ("prod.user.created", {"id": 1})
    assert broker.attempts == ["amqp://in-memory/"]


def test_a_mandatory_message_no_queue_takes_fails_with_publish_returned():
    """mandatory=True to a topic nobody binds: the Deferred fails with PublishReturned."""
    broker = InMemoryBroker()
    publisher = publisher_on(broker, publish_exchange="amq.topic")
    publishing = publisher.publish(Message(1, "nobody.listens"), mandatory=True)
    [failure] = outcome(broker, publishing)
    assert failure.check(PublishReturned)
    assert broker.returned == [("amq.topic", "nobody.listens")]


def test_publishing_to_a_missing_exchange_fails_with_the_brokers_404():
    """An exchange that does not exist: the broker closes the channel with 404 after the
    publish, as RabbitMQ does, and the publish fails with that refusal at once.
    """
    broker = InMemoryBroker()
    publisher = publisher_on(broker)
    [failure] = outcome(broker, publisher.publish(Message({"n": 1}, "t"), "no-such-exchange"))
    assert failure.check(PublishRefused)
    assert failure.value.reply_code == 404
