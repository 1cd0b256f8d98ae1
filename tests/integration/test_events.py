"""Session events against the real broker: their order across a forced close and a restart.

Every wait is bounded (``wait_for``'s timeout); nothing sleeps to synchronise.
"""

from __future__ import annotations

from typing import Any

import pytest_twisted
from twisted.internet import defer, threads

import fedmq
from fedmq.consumer import Consumer
from tests.integration.conftest import wait_for


def without_states(events: list[fedmq.Event]) -> list[str]:
    return [event.kind for event in events if not isinstance(event, fedmq.StateChanged)]


@pytest_twisted.ensureDeferred
async def test_a_connection_the_broker_closes_is_told_in_order_and_consuming_resumes(
    rabbit, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    events: list[fedmq.Event] = []
    seen: list[Any] = []
    consumer = Consumer(
        make_config(reconnect={"initial_delay": 0.2, "max_delay": 1.0}),
        lambda message: seen.append(message.body),
        on_event=events.append,
    )
    await consumer.start()
    try:
        await defer.maybeDeferred(rabbit.close_all_connections, "closed by the events test")
        await wait_for(
            lambda: "topology_restored" in without_states(events),
            timeout=30,
            what="the topology restored",
        )
        broker.publish(queue_name, ["after"])
        await wait_for(lambda: seen == ["after"], what="a message consumed after the reconnect")
    finally:
        await consumer.cancel()
    assert without_states(events) == [
        "connected",
        "disconnected",
        "reconnecting",
        "reconnected",
        "queue_reopened",
        "topology_restored",
    ]
    [disconnected] = [e for e in events if isinstance(e, fedmq.Disconnected)]
    assert "closed by the events test" in disconnected.reason
    assert fedmq.QueueReopened(queue_name) in events
    assert fedmq.TopologyRestored((queue_name,)) in events
    states = [e.state for e in events if isinstance(e, fedmq.StateChanged)]
    assert states == ["consuming", "reconnecting", "consuming", "draining", "stopped"]
    assert "guest:guest" not in " ".join(map(repr, events))


@pytest_twisted.ensureDeferred
async def test_a_broker_restart_is_told_in_order_with_each_failed_attempt(
    rabbit_node, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    events: list[fedmq.Event] = []
    consumer = Consumer(
        make_config(reconnect={"initial_delay": 0.2, "max_delay": 0.5}, heartbeat=2),
        lambda message: None,
        on_event=events.append,
    )
    await consumer.start()
    try:
        await threads.deferToThread(rabbit_node.stop)
        try:
            await wait_for(
                lambda: sum(isinstance(e, fedmq.Reconnecting) for e in events) >= 3,
                timeout=60,
                what="failed attempts while the broker is down",
            )
        finally:
            await threads.deferToThread(rabbit_node.start)
        await wait_for(
            lambda: "topology_restored" in without_states(events),
            timeout=90,
            what="the topology restored after the restart",
        )
    finally:
        await consumer.cancel()
    told = without_states(events)
    assert told[:3] == ["connected", "disconnected", "reconnecting"]
    assert told[-3:] == ["reconnected", "queue_reopened", "topology_restored"]
    assert set(told[2:-3]) == {"reconnecting"}
    attempts = [e for e in events if isinstance(e, fedmq.Reconnecting)]
    assert [e.attempt for e in attempts] == list(range(1, len(attempts) + 1))
    assert attempts[0].delay == 0.0
    assert all(0 < e.delay <= 0.5 for e in attempts[1:])


@pytest_twisted.ensureDeferred
async def test_publish_and_cancel_from_an_event_handler_work_without_waiting_on_themselves(
    rabbit, broker, queue_name, make_config
):
    """On reconnected, a handler publishes (confirmed); then it cancels the consumer."""
    audit = f"{queue_name}-audit"
    broker.declare_queue(queue_name)
    broker.declare_queue(audit)
    published: list[Any] = []
    stopped: list[Any] = []
    holder: list[Consumer] = []

    def on_event(event: fedmq.Event) -> None:
        consumer = holder[0]
        if isinstance(event, fedmq.Reconnected):
            message = fedmq.Message({"event": event.kind}, audit)
            d = consumer.publish(message, exchange="")
            d.addBoth(published.append).addCallback(
                lambda _: consumer.cancel().addBoth(stopped.append)
            )

    consumer = Consumer(
        make_config(reconnect={"initial_delay": 0.2, "max_delay": 1.0}), lambda m: None
    )
    consumer.add_event_handler(on_event)
    holder.append(consumer)
    await consumer.start()
    try:
        await defer.maybeDeferred(rabbit.close_all_connections, "closed by the events test")
        await wait_for(lambda: stopped == [None], timeout=30, what="the handler's cancel")
    finally:
        if consumer.state != "stopped":
            await consumer.cancel()
    assert published == [None]
    assert broker.drain(audit) == [{"event": "reconnected"}]
    assert await consumer.result is None
