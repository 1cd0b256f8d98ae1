"""The consumer against a real broker: every outcome, observed on the broker."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, ClassVar

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task

import fedmq
from fedmq import exit_codes
from tests.integration.conftest import wait_for


async def start(config: Any, callback: Any) -> fedmq.Consumer:
    return await fedmq.consume(callback, config=config)


@pytest_twisted.ensureDeferred
async def test_returned_messages_are_acked_and_leave_the_queue(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(50)])
    seen = []
    consumer = await start(make_config(), lambda m: seen.append(m.body["n"]))
    await wait_for(lambda: len(seen) == 50, what="50 messages")
    await consumer.cancel()
    assert seen == list(range(50))
    assert broker.counts(queue_name) == (0, 0)
    assert consumer.counts["acked"] == 50


@pytest_twisted.ensureDeferred
async def test_a_message_carries_its_delivery_details(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    [message_id] = broker.publish(queue_name, [{"hello": "world"}], headers={"k": "v"}, priority=3)
    seen: list[fedmq.Message] = []
    consumer = await start(make_config(), seen.append)
    await wait_for(lambda: seen)
    await consumer.cancel()
    message = seen[0]
    assert message.body == {"hello": "world"}
    assert message.id == message_id
    assert message.topic == queue_name
    assert message.queue == queue_name
    assert message.exchange == ""
    assert message.headers == {"k": "v"}
    assert message.properties.priority == 3
    assert message.redelivered is False


@pytest_twisted.ensureDeferred
async def test_a_message_that_raises_nack_is_redelivered(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    seen = []

    def callback(message):
        seen.append(message.redelivered)
        if not message.redelivered:
            raise fedmq.Nack

    consumer = await start(make_config(), callback)
    await wait_for(lambda: len(seen) == 2, what="the redelivery")
    await consumer.cancel()
    assert seen == [False, True]
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_message_that_raises_drop_lands_in_the_dead_letter_queue(
    broker, queue_name, make_config
):
    dead = queue_name + ".dead"
    broker.declare_queue(dead)
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    config = make_config(queues={queue_name: {"arguments": arguments}})
    seen = []

    def callback(message):
        seen.append(message.body)
        if message.body == "bad":
            raise fedmq.Drop

    consumer = await start(config, callback)
    broker.publish(queue_name, ["good", "bad", "good"])
    await wait_for(lambda: len(seen) == 3)
    await wait_for(lambda: broker.ready(dead) == 1, what="the dead-lettered message")
    await consumer.cancel()
    assert broker.drain(dead) == ["bad"]
    assert broker.counts(queue_name) == (0, 0)
    assert consumer.counts["dropped"] == 1


@pytest_twisted.ensureDeferred
async def test_an_undecodable_message_is_dead_lettered_and_consuming_goes_on(
    broker, queue_name, make_config
):
    dead = queue_name + ".dead"
    broker.declare_queue(dead)
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    config = make_config(queues={queue_name: {"arguments": arguments}})
    seen = []
    consumer = await start(config, lambda m: seen.append(m.body))
    broker.publish(queue_name, [1])
    broker.publish(queue_name, [b"{not json"])
    broker.publish(queue_name, [3])
    await wait_for(lambda: len(seen) == 2)
    await wait_for(lambda: broker.ready(dead) == 1)
    await consumer.cancel()
    assert seen == [1, 3]
    assert broker.drain(dead, raw=True) == [b"{not json"]


@pytest_twisted.ensureDeferred
async def test_halt_consumer_acks_its_message_and_returns_the_rest(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(10)])
    seen = []

    def callback(message):
        seen.append(message.body["n"])
        if message.body["n"] == 2:
            raise fedmq.HaltConsumer(exit_code=0, reason="enough")

    consumer = await start(make_config(), callback)
    assert await consumer.result is None
    assert seen == [0, 1, 2]
    assert broker.counts(queue_name) == (7, 0)


@pytest_twisted.ensureDeferred
async def test_halt_consumer_with_requeue_leaves_its_message_in_the_queue(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 0}])

    def callback(message):
        raise fedmq.HaltConsumer(exit_code=0, requeue=True)

    consumer = await start(make_config(), callback)
    assert await consumer.result is None
    assert broker.counts(queue_name) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_halt_consumer_with_a_nonzero_exit_code_fails_the_result(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 0}])

    def callback(message):
        raise fedmq.HaltConsumer(exit_code=3)

    consumer = await start(make_config(), callback)
    with pytest.raises(fedmq.HaltConsumer) as raised:
        await consumer.result
    assert raised.value.exit_code == 3
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_an_unexpected_exception_requeues_its_message_and_stops_the_consumer(
    broker, queue_name, make_config, caplog
):
    """With max_errors = 1 (fedora-messaging's way) the first unexpected exception stops it."""
    broker.declare_queue(queue_name)
    ids = broker.publish(queue_name, [{"n": n} for n in range(6)])
    seen = []

    def callback(message):
        seen.append(message.body["n"])
        if message.body["n"] == 2:
            raise ValueError("database is down")

    consumer = await start(make_config(max_errors=1), callback)
    with pytest.raises(fedmq.CallbackError) as raised:
        await consumer.result
    assert isinstance(raised.value.__cause__, ValueError)
    assert raised.value.message_id == ids[2]
    assert raised.value.queue == queue_name
    assert seen == [0, 1, 2]
    # The failed message and the prefetched ones are back; the first two are acked.
    assert broker.counts(queue_name) == (4, 0)
    assert ids[2] in caplog.text and "database is down" in caplog.text


@pytest_twisted.ensureDeferred
async def test_a_class_callback_is_built_once_with_the_consumer_config(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [1, 2, 3])
    built = []

    class Handler:
        def __init__(self, consumer_config):
            built.append(consumer_config)
            self.seen = []

        def __call__(self, message):
            self.seen.append(message.body)

    config = make_config(consumer_config={"greeting": "hi"})
    consumer = await start(config, Handler)
    await wait_for(lambda: consumer.counts.get("acked") == 3)
    await consumer.cancel()
    assert built == [{"greeting": "hi"}]


@pytest_twisted.ensureDeferred
async def test_an_async_callback_runs_under_the_default_reactor(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(20)])
    seen = []

    async def callback(message):
        await asyncio.sleep(0)
        seen.append(message.body["n"])

    consumer = await start(make_config(), callback)
    await wait_for(lambda: len(seen) == 20)
    await consumer.cancel()
    assert seen == list(range(20))
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_an_object_with_async_call_is_awaited(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["a"])

    class Handler:
        seen: ClassVar[list[Any]] = []

        async def __call__(self, message):
            self.seen.append(message.body)

    consumer = await start(make_config(), Handler)
    await wait_for(lambda: Handler.seen == ["a"])
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_concurrency_runs_that_many_sync_callbacks_at_once(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(8)))
    # Four callbacks must be running together for any of them to pass.
    barrier = threading.Barrier(4, timeout=15)
    done = []

    def callback(message):
        barrier.wait()
        done.append(message.body)

    consumer = await start(make_config(concurrency=4), callback)
    await wait_for(lambda: len(done) == 8)
    await consumer.cancel()
    assert sorted(done) == list(range(8))
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_concurrency_runs_that_many_async_callbacks_at_once(broker, queue_name, make_config):
    """The first three callbacks wait for each other: they pass only if all three run at once."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(6)))
    running = [0]
    peak = [0]
    gate: dict[str, asyncio.Event] = {}

    async def callback(message):
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        three_in = gate.setdefault("three in", asyncio.Event())
        if peak[0] == 3:
            three_in.set()
        await asyncio.wait_for(three_in.wait(), 15)
        running[0] -= 1

    consumer = await start(make_config(concurrency=3), callback)
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="every message acked")
    await consumer.cancel()
    assert peak[0] == 3


@pytest_twisted.ensureDeferred
async def test_by_default_one_callback_runs_at_a_time(broker, queue_name, make_config):
    """While the first callback runs, the next delivery waits in fedmq, unstarted."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(3)))
    started: list[int] = []
    release = threading.Event()

    def callback(message):
        started.append(message.body)
        release.wait(30)

    consumer = await start(make_config(), callback)
    try:
        await wait_for(lambda: consumer.in_flight == 3, what="three deliveries in fedmq")
        # A second worker, if there were one, would start within microseconds.
        await task.deferLater(reactor, 0.5, lambda: None)
        assert started == [0]
    finally:
        release.set()
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="every message acked")
    await consumer.cancel()
    assert started == [0, 1, 2]


@pytest_twisted.ensureDeferred
async def test_a_slow_callback_does_not_hold_back_the_acks_of_the_others(
    broker, queue_name, make_config
):
    """Concurrency 4, prefetch 20: while the first message's callback runs, the broker sees
    every other message acked, and the other workers keep consuming the queue.
    """
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(200)))
    release = threading.Event()
    slow_done = threading.Event()

    def callback(message):
        if message.body == 0:
            release.wait(15)  # the slow message: held until the test has looked
            slow_done.set()

    config = make_config(concurrency=4, qos={"prefetch_count": 20})
    consumer = await start(config, callback)
    try:
        await wait_for(
            lambda: broker.counts(queue_name) == (0, 1),
            timeout=10,
            what="every message but the slow one acked",
        )
        assert not slow_done.is_set()
        assert consumer.counts.get("acked") == 199
    finally:
        release.set()
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the slow one acked too")
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_the_broker_sends_no_more_than_the_prefetch_count(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(20)))
    release = threading.Event()
    consumer = await start(make_config(qos={"prefetch_count": 3}), lambda m: release.wait(15))
    try:
        await wait_for(lambda: broker.counts(queue_name) == (17, 3), what="3 unacked, 17 ready")
    finally:
        release.set()
    await wait_for(lambda: consumer.counts.get("acked") == 20)
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_cancel_drains_in_flight_work_and_returns_the_rest(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(10)))
    started = threading.Event()
    finished = []

    def callback(message):
        started.set()
        time.sleep(0.3)
        finished.append(message.body)

    consumer = await start(make_config(), callback)
    await wait_for(started.is_set)
    await consumer.cancel()
    assert await consumer.result is None
    ready, unacked = broker.counts(queue_name)
    assert unacked == 0
    assert len(finished) + ready == 10
    assert len(finished) >= 1


@pytest_twisted.ensureDeferred
async def test_a_server_named_queue_is_declared_bound_and_consumed(broker, make_config):
    exchange = "fanout-" + str(id(broker))
    broker.declare_exchange(exchange)
    config = make_config(
        queues={"": {"durable": False, "exclusive": True, "auto_delete": True}},
        bindings=[{"queue": "", "exchange": exchange, "routing_keys": ["#"]}],
    )
    seen = []
    consumer = await start(config, lambda m: seen.append(m.body))
    assert consumer.queues[0].startswith("amq.gen-")
    broker.publish("", ["hello"], exchange=exchange)
    await wait_for(lambda: seen == ["hello"])
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_publish_fires_once_the_broker_confirms(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    config = make_config()
    await fedmq.publish(fedmq.Message({"a": 1}, topic=queue_name), exchange="", config=config)
    assert broker.drain(queue_name) == [{"a": 1}]


@pytest_twisted.ensureDeferred
async def test_an_unroutable_mandatory_publish_fails_with_publish_returned(make_config):
    config = make_config()
    message = fedmq.Message({"a": 1}, topic="no.such.queue.anywhere")
    with pytest.raises(fedmq.PublishReturned):
        await fedmq.publish(message, exchange="amq.topic", mandatory=True, config=config)


@pytest_twisted.ensureDeferred
async def test_sync_and_async_callbacks_can_publish(broker, queue_name, make_config):
    out = queue_name + ".out"
    broker.declare_queue(queue_name)
    broker.declare_queue(out)
    broker.publish(queue_name, [1, 2])

    def sync_callback(message):
        assert fedmq.publish(fedmq.Message(message.body * 10, topic=out), exchange="") is None

    consumer = await start(make_config(), sync_callback)
    await wait_for(lambda: consumer.counts.get("acked") == 2)
    await consumer.cancel()

    async def async_callback(message):
        await fedmq.publish(fedmq.Message(message.body * 100, topic=out), exchange="")

    broker.publish(queue_name, [3])
    consumer = await start(make_config(), async_callback)
    await wait_for(lambda: consumer.counts.get("acked") == 1)
    await consumer.cancel()
    assert sorted(broker.drain(out)) == [10, 20, 300]


@pytest_twisted.ensureDeferred
async def test_a_mismatched_redeclare_names_the_queue_and_quotes_the_broker(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)  # durable
    config = make_config(queues={queue_name: {"durable": False}})
    with pytest.raises(fedmq.DeclarationError) as raised:
        await start(config, print)
    text = str(raised.value)
    assert queue_name in text and "406" in text and "PRECONDITION_FAILED" in text
    assert raised.value.reply_code == 406


@pytest_twisted.ensureDeferred
async def test_a_passive_declare_of_a_missing_queue_is_a_clear_error(queue_name, make_config):
    config = make_config(passive_declares=True)
    with pytest.raises(fedmq.DeclarationError) as raised:
        await start(config, print)
    assert queue_name in str(raised.value) and "404" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_a_declaration_without_permission_is_refused_with_403(
    rabbit, queue_name, make_config
):
    rabbit.add_user("readonly", "readonly-pw", configure="^$", write="^$", read=".*")
    url = rabbit.vhost_url("/", "readonly", "readonly-pw")
    config = make_config(amqp_url=url)
    with pytest.raises(fedmq.DeclarationError) as raised:
        await start(config, print)
    assert "403" in str(raised.value) and queue_name in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_is_an_authentication_error_without_the_password(
    rabbit, make_config
):
    config = make_config(amqp_url=rabbit.vhost_url("/", "guest", "not-the-password"))
    with pytest.raises(fedmq.AuthenticationFailed) as raised:
        await start(config, print)
    assert "not-the-password" not in str(raised.value)
    assert "credentials" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_a_missing_vhost_is_an_authentication_error(rabbit, make_config):
    config = make_config(amqp_url=rabbit.vhost_url("no-such-vhost"))
    with pytest.raises(fedmq.AuthenticationFailed) as raised:
        await start(config, print)
    assert "virtual host" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_an_unreachable_broker_is_a_connection_error(make_config):
    config = make_config(
        amqp_url="amqp://guest:guest@127.0.0.1:1/%2F", reconnect={"max_attempts": 1}
    )
    with pytest.raises(fedmq.ConnectionFailed) as raised:
        await start(config, print)
    assert "127.0.0.1:1" in str(raised.value) and "refused" in str(raised.value)


def test_a_bad_callback_path_fails_before_connecting(make_config):
    config = make_config(amqp_url="amqp://guest:guest@127.0.0.1:1/%2F")
    with pytest.raises(fedmq.CallbackError, match="no_such_module"):
        fedmq.Consumer(config, "no_such_module:callback")


@pytest_twisted.ensureDeferred
async def test_a_queue_deleted_under_the_consumer_is_declared_and_consumed_again(
    broker, queue_name, make_config, rabbit, caplog
):
    broker.declare_queue(queue_name)
    seen = []
    consumer = await start(make_config(), lambda m: seen.append(m.body))
    [(channel_before, _)] = broker.consumers(queue_name)
    rabbit.ctl("delete_queue", queue_name)
    await wait_for(
        lambda: [c for c, _ in broker.consumers(queue_name)] not in ([], [channel_before]),
        what="the queue declared again, and consumed on a new channel",
    )
    broker.publish(queue_name, ["after"])
    await wait_for(lambda: seen == ["after"])
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    await consumer.cancel()
    assert "cancelled the consumer" in caplog.text


@pytest_twisted.ensureDeferred
async def test_a_connection_closed_by_the_broker_is_reopened(
    rabbit, queue_name, make_config, broker
):
    broker.declare_queue(queue_name)
    states = []
    seen = []
    consumer = await start(make_config(), lambda m: seen.append(m.body))
    consumer.add_state_listener(states.append)
    [(channel_before, _)] = broker.consumers(queue_name)
    await defer.maybeDeferred(rabbit.close_all_connections, "test closes it")
    await wait_for(
        lambda: [c for c, _ in broker.consumers(queue_name)] not in ([], [channel_before]),
        what="a consumer on a new connection",
    )
    broker.publish(queue_name, ["after"])
    await wait_for(lambda: seen == ["after"])
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    await consumer.cancel()
    assert states == ["reconnecting", "consuming", "draining", "stopped"]
    assert await consumer.result is None
    assert broker.consumers(queue_name) == []


@pytest_twisted.ensureDeferred
async def test_a_consumer_gives_up_after_max_attempts_with_connection_failed(make_config):
    config = make_config(
        amqp_url="amqp://guest:guest@127.0.0.1:1/%2F",
        reconnect={"max_attempts": 3, "initial_delay": 0.01, "max_delay": 0.05},
    )
    with pytest.raises(fedmq.ConnectionFailed) as raised:
        await start(config, print)
    assert "3 failed connection attempts" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_connecting_logs_no_factory_chatter(broker, queue_name, make_config):
    """Twisted's "Starting factory ..." / "Stopping factory ..." lines are not logged."""
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        consumer = await start(make_config(), lambda m: None)
        await consumer.cancel()
        # The positive control: a noisy factory's chatter does reach this observer.
        noisy = protocol.ClientFactory()
        noisy.noisy = True
        noisy.doStart()
        noisy.doStop()
    finally:
        globalLogPublisher.removeObserver(observe)
    chatter = [line for line in lines if "factory" in line]
    assert len(chatter) == 2 and all("ClientFactory" in line for line in chatter), chatter


@pytest_twisted.ensureDeferred
async def test_the_broker_connection_sends_small_frames_without_delay(
    broker, queue_name, make_config
):
    """TCP_NODELAY is on, so a lone ack or cancel is not held back by Nagle's algorithm."""
    broker.declare_queue(queue_name)
    consumer = await start(make_config(), print)
    assert consumer.broker_address is not None
    port = int(consumer.broker_address.rpartition(":")[2])
    (handle,) = [
        reader.getHandle()
        for reader in reactor.getReaders()
        if hasattr(reader, "getPeer") and getattr(reader.getPeer(), "port", None) == port
    ]
    nodelay = handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    await consumer.cancel()
    assert nodelay != 0


# --- several queues, stopping past drain_timeout, a cancel that cannot be mended ------------


@pytest_twisted.ensureDeferred
async def test_several_queues_share_one_channel_and_the_workers_with_prefetch_per_queue(
    broker, queue_name, make_config
):
    """Two queues: one channel consumes both, the broker sends each queue's consumer up to
    prefetch_count messages, and concurrency bounds the callbacks running across both.
    """
    first, second = f"{queue_name}-a", f"{queue_name}-b"
    for queue in (first, second):
        broker.declare_queue(queue)
        broker.publish(queue, [queue] * 5)
    release = threading.Event()
    started: list[str] = []

    def callback(message):
        started.append(message.body)
        release.wait(30)

    config = make_config(
        queues={first: {"durable": True}, second: {"durable": True}},
        qos={"prefetch_count": 2},
        concurrency=2,
    )
    consumer = await start(config, callback)
    try:
        await wait_for(lambda: len(started) == 2, what="two callbacks running")
        await wait_for(
            lambda: broker.counts(first) == (3, 2) and broker.counts(second) == (3, 2),
            what="two messages unacknowledged in each queue",
        )
        # The four deliveries reach fedmq; a third worker, if there were one, would start
        # one of them within microseconds: half a second is ample.
        await wait_for(lambda: consumer.in_flight == 4, what="four deliveries in fedmq")
        await task.deferLater(reactor, 0.5, lambda: None)
        assert len(started) == 2
        [(first_channel, first_prefetch)] = broker.consumers(first)
        [(second_channel, second_prefetch)] = broker.consumers(second)
    finally:
        release.set()
    assert first_channel == second_channel
    assert first_prefetch == second_prefetch == 2
    await wait_for(
        lambda: broker.counts(first) == (0, 0) and broker.counts(second) == (0, 0),
        what="both queues consumed",
    )
    await consumer.cancel()
    assert sorted(started) == sorted([first] * 5 + [second] * 5)


@pytest_twisted.ensureDeferred
async def test_callbacks_running_past_drain_timeout_are_abandoned_with_stop_forced(
    broker, queue_name, make_config, caplog
):
    """The stop does not wait past drain_timeout: the broker has the message back, result
    fails with StopForced, the abandonment is logged, and teardown() is not called.
    """
    broker.declare_queue(queue_name)
    broker.publish(queue_name, ["stuck"])
    started, release = threading.Event(), threading.Event()
    torn_down: list[str] = []

    class Stuck:
        def __call__(self, message):
            started.set()
            release.wait(30)

        def teardown(self):
            torn_down.append("teardown")

    consumer = await start(make_config(drain_timeout=0.5), Stuck)
    try:
        await wait_for(started.is_set, what="the callback to start")
        await consumer.cancel()
        with pytest.raises(fedmq.StopForced):
            await consumer.result
        assert broker.counts(queue_name) == (1, 0)
        assert broker.consumers(queue_name) == []
        assert not release.is_set(), "the stop waited for the callback"
    finally:
        release.set()
    assert torn_down == []
    assert "Still unsettled after drain_timeout (0.5 s): 1 callback(s) still running" in caplog.text
    assert "teardown() not called" in caplog.text


@pytest_twisted.ensureDeferred
async def test_a_queue_deleted_under_passive_declares_ends_the_consumer_with_consumer_cancelled(
    broker, queue_name, make_config, rabbit
):
    """The broker cancels the consumer; fedmq may not declare the queue again, so result
    fails with ConsumerCancelled (exit status 6) and the queue stays gone.
    """
    broker.declare_queue(queue_name)
    config = make_config(passive_declares=True, retry={"enabled": False})
    consumer = await start(config, lambda m: None)
    rabbit.ctl("delete_queue", queue_name)
    with pytest.raises(fedmq.ConsumerCancelled) as caught:
        await consumer.result
    assert queue_name in str(caught.value) and "404" in str(caught.value)
    assert exit_codes.exit_code_for(caught.value) == exit_codes.CONSUMER_CANCELLED
    with pytest.raises(LookupError):
        broker.counts(queue_name)
