"""The plugin's real-broker fixtures: a throwaway node, and a vhost per test, deleted after."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pytest_twisted
from twisted.internet import defer, reactor

import fedmq
from fedmq import Message
from fedmq.config import config_from_mapping


@pytest_twisted.inlineCallbacks
def test_a_published_message_reaches_the_callback(fedmq_amqp_url):
    """The docs' real-broker example: consume and publish on the test's own vhost."""
    config = config_from_mapping(
        {
            "amqp_url": fedmq_amqp_url,
            "queues": {"audit": {}},
            "bindings": [
                {"queue": "audit", "exchange": "amq.topic", "routing_keys": ["org.example.#"]}
            ],
        }
    )
    received: defer.Deferred = defer.Deferred()

    def callback(message: Message) -> None:
        reactor.callFromThread(received.callback, message.body)

    consumer = yield fedmq.consume(callback, config=config, reactor=reactor)
    yield fedmq.publish(Message({"n": 1}, "org.example.audit"), config=config, reactor=reactor)
    body = yield received
    assert body == {"n": 1}
    yield consumer.cancel()


def test_each_test_gets_a_vhost_of_its_own_that_is_deleted_after(fedmq_rabbit, fedmq_amqp_url):
    """The vhost exists during the test; the previous test's is gone."""
    vhost = unquote(urlsplit(fedmq_amqp_url).path[1:])
    vhosts = fedmq_rabbit.ctl("list_vhosts", "--quiet", "--no-table-headers").split()
    assert vhost in vhosts
    assert not [v for v in vhosts if v.startswith("test-test_a_published_message")]
