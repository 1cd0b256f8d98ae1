"""fedmq.testing.InMemoryBroker on its own: routing, returns, dead-lettering, TTL, settling."""

from __future__ import annotations

from typing import Any

import pytest

from fedmq import Message, PublishReturned
from fedmq.config import ExchangeConfig, QueueConfig
from fedmq.exceptions import BrokerError, ConnectionFailed, DeclarationError
from fedmq.testing import InMemoryBroker


def channel_of(broker: InMemoryBroker) -> Any:
    connection = broker.connect().result
    return connection.channel().result


@pytest.fixture
def broker() -> InMemoryBroker:
    return InMemoryBroker()


def test_the_default_exchange_routes_by_queue_name(broker: InMemoryBroker):
    """A message to "" with a queue's name as routing key lands in that queue only."""
    broker.declare_queue("orders")
    broker.declare_queue("other")
    assert broker.publish(Message(1, "orders"), exchange="") == {"orders"}
    assert [m.body for m in broker.ready("orders")] == [1]


def test_direct_fanout_and_topic_exchanges_route_as_rabbitmq(broker: InMemoryBroker):
    """Exact keys for direct, every binding for fanout, wildcards for topic."""
    for name in ("d", "f", "t"):
        broker.declare_queue(name)
    broker.declare_exchange("direct", "direct")
    broker.declare_exchange("fan", "fanout")
    broker.bind("d", "direct", "a.b")
    broker.bind("f", "fan", "ignored")
    broker.bind("t", "amq.topic", "a.#")
    assert broker.routes("direct", "a.b") == {"d"}
    assert broker.routes("direct", "a.c") == set()
    assert broker.routes("fan", "anything") == {"f"}
    assert broker.routes("amq.topic", "a") == {"t"}


def test_a_headers_exchange_routes_on_x_match(broker: InMemoryBroker):
    """x-match any takes one matching header, all needs every one."""
    broker.declare_queue("any")
    broker.declare_queue("all")
    broker.bind("any", "amq.headers", arguments={"x-match": "any", "a": 1, "b": 2})
    broker.bind("all", "amq.headers", arguments={"x-match": "all", "a": 1, "b": 2})
    assert broker.routes("amq.headers", "", {"a": 1}) == {"any"}
    assert broker.routes("amq.headers", "", {"a": 1, "b": 2}) == {"any", "all"}


def test_exchange_to_exchange_bindings_carry_messages_on(broker: InMemoryBroker):
    """A topic exchange bound to another passes on what its binding matches."""
    broker.declare_exchange("upstream", "topic")
    broker.declare_exchange("downstream", "fanout")
    broker.declare_queue("q")
    broker.bind_exchange("downstream", "upstream", "org.#")
    broker.bind("q", "downstream")
    assert broker.routes("upstream", "org.x") == {"q"}
    assert broker.routes("upstream", "com.x") == set()


def test_an_alternate_exchange_takes_what_nothing_else_routes(broker: InMemoryBroker):
    """Unroutable messages go to the alternate exchange's queues, routable ones do not."""
    broker.declare_exchange("catchall", "fanout")
    broker.declare_queue("unrouted")
    broker.bind("unrouted", "catchall")
    broker.declare_exchange("main", "direct", {"alternate-exchange": "catchall"})
    broker.declare_queue("routed")
    broker.bind("routed", "main", "yes")
    assert broker.routes("main", "yes") == {"routed"}
    assert broker.routes("main", "no") == {"unrouted"}


def test_a_mandatory_message_no_queue_takes_is_returned(broker: InMemoryBroker):
    """mandatory=True and no binding: PublishReturned, and the return is recorded."""
    with pytest.raises(PublishReturned, match="could not route"):
        broker.publish(Message(1, "nowhere"), mandatory=True)
    assert broker.returned == [("amq.topic", "nowhere")]
    assert broker.publish(Message(1, "nowhere")) == set()


def test_a_rejected_message_is_dead_lettered_with_x_death(broker: InMemoryBroker):
    """Reject without requeue sends it to the queue's dead-letter exchange, x-death set."""
    broker.declare_queue("dlq")
    broker.declare_queue("work", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"})
    broker.publish(Message("m", "work"), exchange="")
    channel = channel_of(broker)
    tag = channel.get("work").result[0]
    channel.reject(tag)
    [dead] = broker.ready("dlq")
    assert dead.body == "m"
    assert dead.headers["x-death"][0]["reason"] == "rejected"
    assert [d.reason for d in broker.dead_lettered] == ["rejected"]
    assert len(broker.settled("work", "rejected")) == 1


def test_a_message_expires_when_the_clock_passes_its_ttl(broker: InMemoryBroker):
    """x-message-ttl 5000: still there at 4.9 s, dead-lettered at 5 s."""
    broker.declare_queue("back")
    arguments = {
        "x-message-ttl": 5000,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "back",
    }
    broker.declare_queue("wait", arguments)
    broker.publish(Message("m", "wait"), exchange="")
    broker.advance(4.9)
    assert broker.queue_depth("wait") == 1
    broker.advance(0.1)
    assert broker.queue_depth("wait") == 0
    assert [m.body for m in broker.ready("back")] == ["m"]


def test_a_per_message_expiration_without_a_dead_letter_exchange_discards(broker):
    """Expiration "1000" and no DLX: gone after a second, recorded as expired."""
    broker.declare_queue("q")
    broker.publish(Message("m", "q", expiration="1000"), exchange="")
    broker.advance(1)
    assert broker.queue_depth("q") == 0
    assert [(d.queue, d.reason, d.exchange) for d in broker.dead_lettered] == [
        ("q", "expired", None)
    ]


def test_a_quorum_queue_dead_letters_past_its_delivery_limit(broker: InMemoryBroker):
    """x-delivery-limit 2: the third requeue dead-letters the message."""
    broker.declare_queue("dlq")
    args = {
        "x-queue-type": "quorum",
        "x-delivery-limit": 2,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "dlq",
    }
    broker.declare_queue("q", args)
    broker.publish(Message("m", "q"), exchange="")
    channel = channel_of(broker)
    for _ in range(3):
        channel.nack(channel.get("q").result[0], requeue=True)
    assert broker.queue_depth("q") == 0
    assert broker.dead_lettered[0].reason == "delivery_limit"
    assert [m.body for m in broker.ready("dlq")] == ["m"]


def test_a_nacked_message_comes_back_redelivered(broker: InMemoryBroker):
    """Nack with requeue puts it back at the head, flagged redelivered."""
    broker.declare_queue("q")
    broker.publish(Message("first", "q"), exchange="")
    broker.publish(Message("second", "q"), exchange="")
    channel = channel_of(broker)
    tag, redelivered, *_ = channel.get("q").result
    assert redelivered is False
    channel.nack(tag)
    _tag, redelivered, _ex, _key, _props, body, _left = channel.get("q").result
    assert (redelivered, body) == (True, b'"first"')


def test_prefetch_limits_deliveries_in_flight(broker: InMemoryBroker):
    """With qos(2), a consumer has two unsettled deliveries; an ack lets the next one in."""
    broker.declare_queue("q")
    for n in range(5):
        broker.publish(Message(n, "q"), exchange="")
    channel = channel_of(broker)
    channel.qos(2)
    delivered: list[int] = []
    channel.consume("q", lambda tag, *rest: delivered.append(tag), lambda: None)
    assert len(delivered) == 2
    channel.ack(delivered[0], False)
    assert len(delivered) == 3
    assert broker.queue_depth("q") == 4


def test_prefetch_is_per_consumer_as_qos_was_when_it_began(broker: InMemoryBroker):
    """qos(2) then a consumer, qos(1) then another: each is held to its own count."""
    for name in ("a", "b"):
        broker.declare_queue(name)
        for n in range(5):
            broker.publish(Message(n, name), exchange="")
    channel = channel_of(broker)
    delivered: dict[str, list[int]] = {"a": [], "b": []}
    channel.qos(2)
    channel.consume("a", lambda tag, *rest: delivered["a"].append(tag), lambda: None)
    channel.qos(1)
    channel.consume("b", lambda tag, *rest: delivered["b"].append(tag), lambda: None)
    assert (len(delivered["a"]), len(delivered["b"])) == (2, 1)
    channel.ack(delivered["b"][0], False)
    assert (len(delivered["a"]), len(delivered["b"])) == (2, 2)


def test_the_higher_priority_consumer_gets_the_messages_while_it_has_room(
    broker: InMemoryBroker,
):
    """x-priority 10 with prefetch 3 takes 3 of 4 messages; the default-priority one the 4th."""
    broker.declare_queue("q")
    low, high = channel_of(broker), channel_of(broker)
    got: dict[str, list[int]] = {"low": [], "high": []}
    low.qos(10)
    low.consume("q", lambda tag, *rest: got["low"].append(tag), lambda: None)
    high.qos(3)
    high.consume("q", lambda tag, *rest: got["high"].append(tag), lambda: None, {"x-priority": 10})
    for n in range(4):
        broker.publish(Message(n, "q"), exchange="")
    assert (len(got["high"]), len(got["low"])) == (3, 1)


def test_a_closed_channel_gives_its_unsettled_deliveries_back(broker: InMemoryBroker):
    """Closing a channel requeues what it had not settled, in order, as redelivered."""
    broker.declare_queue("q")
    for n in range(2):
        broker.publish(Message(n, "q"), exchange="")
    channel = channel_of(broker)
    channel.get("q")
    channel.get("q")
    channel.close()
    assert [(m.body, m.redelivered) for m in broker.ready("q")] == [(0, True), (1, True)]


def test_declaring_a_queue_again_with_other_arguments_is_refused(broker: InMemoryBroker):
    """406 PRECONDITION_FAILED, and the channel closes, as on RabbitMQ."""
    channel = channel_of(broker)
    channel.declare_queue(QueueConfig("q", arguments={"x-message-ttl": 1}))
    failure = channel.declare_queue(QueueConfig("q")).result
    failure.trap(DeclarationError)
    assert failure.value.reply_code == 406
    assert channel.is_open is False


def test_a_passive_declare_of_a_missing_exchange_is_404(broker: InMemoryBroker):
    """Checking an exchange that does not exist fails with 404 NOT_FOUND."""
    failure = channel_of(broker).declare_exchange(ExchangeConfig("nope"), passive=True).result
    failure.trap(DeclarationError)
    assert failure.value.reply_code == 404


def test_publishing_to_a_missing_exchange_closes_the_channel(broker: InMemoryBroker):
    """A publish to an exchange that does not exist fails with 404 and closes the channel."""
    channel = channel_of(broker)
    failure = channel.publish("nope", "k", b"x", Message("x").properties).result
    failure.trap(BrokerError)
    assert failure.value.reply_code == 404
    assert channel.closed.called


def test_deleting_a_consumed_queue_cancels_its_consumers(broker: InMemoryBroker):
    """The consumer's on_cancelled is called, as RabbitMQ cancels it."""
    broker.declare_queue("q")
    cancelled: list[bool] = []
    channel_of(broker).consume("q", lambda *a: None, lambda: cancelled.append(True))
    broker.delete_queue("q")
    assert cancelled == [True]
    assert "q" not in broker.queues


def test_each_connection_attempt_is_recorded_with_its_url(broker: InMemoryBroker):
    """The broker's attempts list the URL of every attempt, refused ones too, in order."""
    broker.refuse_connections(ConnectionFailed("refused"))
    broker.connect(None, None, "amqp://a/").addErrback(lambda _: None)
    broker.connect(None, None, "amqp://b/")
    broker.connect()
    assert broker.attempts == ["amqp://a/", "amqp://b/", None]
    assert len(broker.connections) == 2


def test_held_channel_closes_are_never_answered(broker: InMemoryBroker):
    """After hold_closes(), a channel's close never fires and the channel stays open."""
    broker.hold_closes(channels=True, connections=False)
    connection = broker.connect().result
    channel = connection.channel().result
    closing = channel.close()
    assert not closing.called
    assert channel.is_open
    assert broker.held_closes == ["channel"]
    assert connection.close().called  # connection closes are still answered
    assert not channel.is_open and not connection.aborted


def test_a_held_connection_close_leaves_it_open_until_aborted(broker: InMemoryBroker):
    """An unanswered connection close keeps it open; abort() still ends it, and says so."""
    broker.hold_closes(channels=False, connections=True)
    connection = broker.connect().result
    closing = connection.close()
    assert not closing.called
    assert connection.is_open and broker.connections == [connection]
    assert broker.held_closes == ["connection"]
    connection.abort()
    assert connection.aborted
    assert not connection.is_open and broker.connections == []
    assert connection.closed.called


def test_closes_are_answered_again_after_hold_closes_false(broker: InMemoryBroker):
    """hold_closes(False, False) goes back to answering every close."""
    broker.hold_closes()
    broker.hold_closes(channels=False, connections=False)
    connection = broker.connect().result
    assert connection.channel().result.close().called
    assert connection.close().called
    assert broker.held_closes == []


def test_settling_on_a_closed_channel_is_refused(broker: InMemoryBroker):
    """A closed channel's tags are dead: an ack on it raises, and the message stays requeued."""
    broker.declare_queue("q")
    broker.publish(Message(1, "q"), exchange="")
    channel = channel_of(broker)
    tag = channel.get("q").result[0]
    channel.close()
    with pytest.raises(BrokerError, match="the channel is closed"):
        channel.ack(tag, False)
    assert [m.redelivered for m in broker.ready("q")] == [True]
    assert broker.settlements == []
