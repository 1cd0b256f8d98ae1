"""Settling later against a real broker: what Settlement's methods do, seen on RabbitMQ.

Each handle is settled from a thread of Twisted's pool (deferToThread), not
the reactor's nor the callback's, after the callback returned.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import threads

import fedmq
from tests.integration.conftest import wait_for


async def start(config: Any, callback: Any) -> fedmq.Consumer:
    return await fedmq.consume(callback, config=config)


class TakeOver:
    """A callback that takes every message over (or only first deliveries) and keeps the handle."""

    def __init__(self, first_delivery_only: bool = False) -> None:
        self.handles: list[fedmq.Settlement] = []
        self.runs: list[tuple[Any, bool]] = []
        self._first_only = first_delivery_only

    def __call__(self, message: fedmq.Message) -> None:
        self.runs.append((message.body, message.redelivered))
        if not (self._first_only and message.redelivered):
            self.handles.append(message.settle_later())


@pytest_twisted.ensureDeferred
async def test_a_message_settled_later_from_another_thread_is_acked_then(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver()
    consumer = await start(make_config(), callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    await wait_for(lambda: broker.counts(queue_name) == (0, 1), what="the message unacked")
    assert consumer.in_flight == 1
    await threads.deferToThread(callback.handles[0].ack)
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    assert consumer.in_flight == 0
    await consumer.cancel()
    assert await consumer.result is None


@pytest_twisted.ensureDeferred
async def test_nack_later_puts_the_message_back_and_the_broker_delivers_it_again(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver(first_delivery_only=True)
    consumer = await start(make_config(), callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    await threads.deferToThread(callback.handles[0].nack)
    await wait_for(lambda: len(callback.runs) == 2, what="the redelivery")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the redelivery acked")
    await consumer.cancel()
    assert callback.runs == [({"n": 1}, False), ({"n": 1}, True)]


@pytest_twisted.ensureDeferred
async def test_drop_later_sends_the_message_to_the_dead_letter_queue(
    broker, queue_name, make_config
):
    dead = queue_name + ".rejected"
    broker.declare_queue(dead)
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    broker.declare_queue(queue_name, **arguments)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver()
    config = make_config(queues={queue_name: {"durable": True, "arguments": arguments}})
    consumer = await start(config, callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    await threads.deferToThread(callback.handles[0].drop, "not ours")
    await wait_for(lambda: broker.counts(dead) == (1, 0), what="the message dead-lettered")
    assert broker.counts(queue_name) == (0, 0)
    await consumer.cancel()
    assert broker.drain(dead) == [{"n": 1}]


@pytest_twisted.ensureDeferred
async def test_retry_later_moves_the_message_to_its_retry_queue(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver()
    consumer = await start(make_config(retry={"delays": [60], "max_attempts": 3}), callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    await threads.deferToThread(callback.handles[0].retry, "the database is busy")
    waiting = f"{queue_name}.retry.60s"
    await wait_for(lambda: broker.counts(waiting) == (1, 0), what="the message in its retry queue")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the original acked")
    await consumer.cancel()
    [(properties, _body)] = broker.take_all(waiting)
    assert properties.headers["X-Processing-Exceptions"] == 1
    assert "the database is busy" in properties.headers["X-Processing-Exception"]


@pytest_twisted.ensureDeferred
async def test_a_message_settled_later_holds_its_prefetch_slot(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(5)])
    callback = TakeOver()
    consumer = await start(make_config(qos={"prefetch_count": 2}, concurrency=2), callback)
    await wait_for(lambda: len(callback.handles) == 2, what="two messages taken over")
    await wait_for(lambda: broker.counts(queue_name) == (3, 2), what="3 ready, 2 unacked")
    assert len(callback.handles) == 2, "a third message came while both slots were held"
    await threads.deferToThread(callback.handles[0].ack)
    await wait_for(lambda: len(callback.handles) == 3, what="the freed slot taken")
    await wait_for(lambda: broker.counts(queue_name) == (2, 2), what="2 ready, 2 unacked")
    for handle in callback.handles[1:]:
        await threads.deferToThread(handle.ack)
    await wait_for(lambda: len(callback.handles) == 5, what="the last messages")
    for handle in callback.handles[3:]:
        await threads.deferToThread(handle.ack)
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="everything acked")
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_after_a_forced_reconnect_an_old_handle_warns_and_the_message_comes_back(
    rabbit, broker, queue_name, make_config, caplog
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver(first_delivery_only=True)
    consumer = await start(make_config(), callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    await threads.deferToThread(rabbit.close_all_connections, "test closes it")
    await wait_for(lambda: len(callback.runs) == 2, what="the message delivered again")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the redelivery acked")
    with caplog.at_level(logging.WARNING, logger="fedmq"):
        await threads.deferToThread(callback.handles[0].ack)
        await wait_for(lambda: "connection was lost" in caplog.text, what="the warning")
    stale = [r for r in caplog.records if "connection was lost" in r.getMessage()]
    assert len(stale) == 1
    assert callback.runs == [({"n": 1}, False), ({"n": 1}, True)]
    assert consumer.state == "consuming"
    await consumer.cancel()
    assert await consumer.result is None


@pytest_twisted.ensureDeferred
async def test_the_drain_waits_for_a_message_settled_later(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    callback = TakeOver()
    consumer = await start(make_config(drain_timeout=30), callback)
    await wait_for(lambda: callback.handles, what="the callback to take the message over")
    stopped = consumer.cancel()
    await wait_for(lambda: broker.consumers(queue_name) == [], what="basic.cancel")
    assert consumer.state == "draining"
    assert not stopped.called
    assert broker.counts(queue_name) == (0, 1)
    await threads.deferToThread(callback.handles[0].ack)
    await stopped
    assert await consumer.result is None
    assert broker.counts(queue_name) == (0, 0)


@pytest.mark.parametrize("in_callback", [True, False], ids=["in-the-callback", "from-a-task"])
@pytest_twisted.ensureDeferred
async def test_an_async_callback_settles_its_message_later(
    broker, queue_name, make_config, in_callback
):
    import asyncio

    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    done: list[str] = []

    async def callback(message: fedmq.Message) -> None:
        handle = message.settle_later()
        if in_callback:
            handle.ack()
        else:
            asyncio.get_running_loop().call_later(0.1, handle.ack)
        done.append(message.body)

    consumer = await start(make_config(), callback)
    await wait_for(lambda: done, what="the callback")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    await consumer.cancel()
