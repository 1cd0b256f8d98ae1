"""What docs/publishing.md promises, observed on the broker."""

from __future__ import annotations

import threading

import pytest
import pytest_twisted

import fedmq
from tests.integration.conftest import wait_for


@pytest_twisted.ensureDeferred
async def test_a_full_reject_publish_queue_fails_the_publish_with_publish_nacked(
    broker, queue_name, make_config
):
    """The broker nacks a message for a full queue with x-overflow reject-publish."""
    broker.declare_queue(queue_name, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    config = make_config()
    first = fedmq.Message("first", topic=queue_name)
    await fedmq.publish(first, exchange="", config=config)
    with pytest.raises(fedmq.PublishNacked):
        await fedmq.publish(fedmq.Message("second", topic=queue_name), exchange="", config=config)
    assert broker.drain(queue_name) == ["first"]


@pytest_twisted.ensureDeferred
async def test_a_missing_exchange_is_broker_error_404_and_the_next_publish_works(
    broker, queue_name, make_config
):
    """The broker closes the channel (404); the next publish() opens another and is confirmed."""
    broker.declare_queue(queue_name)
    config = make_config()
    missing = f"{queue_name}-no-such-exchange"
    with pytest.raises(fedmq.BrokerError) as caught:
        await fedmq.publish(fedmq.Message("lost", topic="x"), exchange=missing, config=config)
    assert caught.value.reply_code == 404
    assert missing in caught.value.reply_text
    await fedmq.publish(fedmq.Message("after", topic=queue_name), exchange="", config=config)
    assert broker.drain(queue_name) == ["after"]


@pytest_twisted.ensureDeferred
async def test_a_callback_publishing_after_its_connection_closed_gets_publish_connection_lost(
    broker, queue_name, make_config
):
    """Nothing is published, and the error is both a PublishError and a ConnectionFailed."""
    out = queue_name + ".out"
    broker.declare_queue(queue_name)
    broker.declare_queue(out)
    started, release = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def callback(message: fedmq.Message) -> None:
        started.set()
        release.wait(30)
        try:
            fedmq.publish(fedmq.Message("too late", topic=out), exchange="")
        except BaseException as error:
            raised.append(error)
            raise

    consumer = await fedmq.consume(callback, config=make_config())
    broker.publish(queue_name, ["x"])
    await wait_for(started.is_set, what="the callback to start")
    consumer.abort()  # the connection goes; the callback is still running
    await wait_for(lambda: broker.counts(queue_name) == (1, 0), what="the message requeued")
    release.set()
    await wait_for(lambda: raised, what="the callback's publish to fail")
    [error] = raised
    assert isinstance(error, fedmq.PublishConnectionLost)
    assert isinstance(error, fedmq.PublishError) and isinstance(error, fedmq.ConnectionFailed)
    assert "nothing was published" in str(error)
    assert broker.counts(out) == (0, 0)
    with pytest.raises(fedmq.StopForced):
        await consumer.result


@pytest_twisted.ensureDeferred
async def test_a_callback_publishes_to_the_publish_exchange_with_the_topic_prefix(
    broker, queue_name, make_config
):
    """Without exchange or routing_key, publish() in a callback uses the consumer's config."""
    exchange, out, prefix = f"{queue_name}-out", f"{queue_name}.out", "org.example"
    broker.declare_exchange(exchange, kind="topic")
    broker.declare_queue(out)
    broker.bind(out, exchange, "#")
    broker.declare_queue(queue_name)

    def callback(message: fedmq.Message) -> None:
        fedmq.publish(fedmq.Message({"seen": message.body}, topic="orders.seen"))

    config = make_config(publish_exchange=exchange, topic_prefix=prefix)
    consumer = await fedmq.consume(callback, config=config)
    broker.publish(queue_name, [7])
    await wait_for(lambda: broker.counts(out) == (1, 0), what="the published message")
    await consumer.cancel()
    [(method, _properties, body)] = broker.get_all(out)
    assert body == b'{"seen":7}'
    assert method.exchange == exchange
    assert method.routing_key == f"{prefix}.orders.seen"
