"""fedmq's Publisher on the in-memory broker, through a connection from its connect seam."""

from __future__ import annotations

from typing import Any

from fedmq import Message, Publisher, PublishReturned
from fedmq.config import config_from_mapping
from fedmq.exceptions import BrokerError
from fedmq.testing import InMemoryBroker


def publisher_on(broker: InMemoryBroker, **config: Any) -> Publisher:
    settings = config_from_mapping({"amqp_url": "amqp://in-memory/", **config})
    # The broker's clock: its confirms come at that clock's next turn.
    return Publisher(settings, reactor=broker.clock, connect=broker.connect)


def test_a_published_message_lands_in_the_queue_bound_to_its_prefixed_topic():
    """topic_prefix "prod" and topic "user.created" route along a binding of prod.user.#."""
    broker = InMemoryBroker()
    broker.declare_queue("users")
    broker.bind("users", "amq.topic", "prod.user.#")
    publisher = publisher_on(broker, publish_exchange="amq.topic", topic_prefix="prod")
    done = publisher.publish(Message({"id": 1}, "user.created"))
    broker.clock.advance(0)
    assert done.called and done.result is None
    [message] = broker.ready("users")
    assert (message.topic, message.body) == ("prod.user.created", {"id": 1})


def test_a_mandatory_message_no_queue_takes_fails_with_publish_returned():
    """mandatory=True to a topic nobody binds: the Deferred fails with PublishReturned."""
    broker = InMemoryBroker()
    publisher = publisher_on(broker, publish_exchange="amq.topic")
    failures: list[Any] = []
    publisher.publish(Message(1, "nobody.listens"), mandatory=True).addErrback(failures.append)
    broker.clock.advance(0)
    [failure] = failures
    assert failure.check(PublishReturned)
    assert broker.returned == [("amq.topic", "nobody.listens")]


def test_publishing_to_a_missing_exchange_fails_with_the_brokers_404():
    """An exchange that does not exist: BrokerError 404, as RabbitMQ answers."""
    broker = InMemoryBroker()
    publisher = publisher_on(broker)
    failures: list[Any] = []
    publisher.publish(Message(1, "t"), "no-such-exchange").addErrback(failures.append)
    broker.clock.advance(0)
    [failure] = failures
    assert failure.check(BrokerError)
    assert failure.value.reply_code == 404
