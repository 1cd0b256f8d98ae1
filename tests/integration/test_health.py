"""Host health against the real broker: marked queues suspended and resumed, /ready following.

The monitoring endpoint listens on 127.0.0.1, port 0. What the broker shows
(its consumers, its ready messages) is read with rabbitmqctl and pika, not
through fedmq. Every wait is bounded.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from twisted.internet import defer

import fedmq
from fedmq.consumer import Consumer
from fedmq.monitoring import MonitoringService
from tests.integration.conftest import wait_for
from tests.integration.test_monitoring import get, wait_for_ready_status

#: What the configured check answers; the test sets it.
ANSWER = [True]


def check() -> bool:
    return ANSWER[0]


class Monitored:
    """A consumer with the monitoring service beside it, as fedmq.tap builds them."""

    def __init__(self, config: Any, **options: Any) -> None:
        self.seen: list[Any] = []
        self.events: list[fedmq.Event] = []
        self.consumer = Consumer(
            config,
            lambda message: self.seen.append(message.body),
            on_event=self.events.append,
            **options,
        )
        self.monitoring = MonitoringService(config, SimpleNamespace(consumer=self.consumer))

    async def start(self) -> int:
        self.monitoring.startService()
        assert self.monitoring.port
        await self.consumer.start()
        return self.monitoring.port

    async def stop(self) -> None:
        if self.consumer.state != "stopped":
            await self.consumer.cancel()
        await self.monitoring.stopService()


def suspending_config(make_config: Any, queue_name: str, **keys: Any) -> Any:
    return make_config(
        queues={queue_name: {"durable": True, "suspend_on_bad_host_health": True}},
        monitoring={"port": 0, "address": "127.0.0.1"},
        reconnect={"initial_delay": 0.2, "max_delay": 1.0},
        **keys,
    )


@pytest_twisted.ensureDeferred
async def test_an_unhealthy_host_suspends_its_queue_on_the_broker_and_ready_says_why(
    broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    health = fedmq.HealthMonitor()
    monitored = Monitored(suspending_config(make_config, queue_name), health=health)
    port = await monitored.start()
    try:
        assert len(broker.consumers(queue_name)) == 1
        # From a thread of the application's, as a watchdog would.
        teller = threading.Thread(target=health.set_unhealthy, args=("disk /var is full",))
        teller.start()
        teller.join(10)
        await wait_for(lambda: broker.consumers(queue_name) == [], what="the consumer cancelled")
        code, body = await get(port, "/ready")
        assert code == 503
        assert json.loads(body) == {
            "state": "suspended",
            "reason": "the host is unhealthy: disk /var is full",
        }
        broker.publish(queue_name, [{"n": 1}, {"n": 2}])
        await wait_for(lambda: broker.counts(queue_name) == (2, 0), what="two messages waiting")
        assert monitored.seen == []
        health.set_healthy()
        await wait_for_ready_status(port, 200, timeout=20)
        await wait_for(lambda: len(monitored.seen) == 2, what="the waiting messages consumed")
        await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="both acked")
    finally:
        await monitored.stop()
    told = [e for e in monitored.events if e.kind.startswith(("host", "queue"))]
    assert told == [
        fedmq.HostUnhealthy("disk /var is full"),
        fedmq.QueueSuspended(queue_name, "disk /var is full"),
        fedmq.HostHealthy(),
        fedmq.QueueResumed(queue_name),
    ]


@pytest_twisted.ensureDeferred
async def test_the_configured_check_suspends_and_a_reconnect_while_unhealthy_stays_suspended(
    rabbit, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    ANSWER[0] = True
    config = suspending_config(
        make_config,
        queue_name,
        health_check="tests.integration.test_health:check",
        health_interval=0.2,
        health_timeout=2,
    )
    monitored = Monitored(config)
    port = await monitored.start()
    try:
        ANSWER[0] = False
        await wait_for_ready_status(port, 503, timeout=20)
        await wait_for(lambda: broker.consumers(queue_name) == [], what="the consumer cancelled")
        await defer.maybeDeferred(rabbit.close_all_connections, "closed by the health test")
        await wait_for(
            lambda: (
                monitored.consumer.stats.reconnects == 1 and monitored.consumer.state == "suspended"
            ),
            timeout=30,
            what="reconnected, still suspended",
        )
        code, body = await get(port, "/ready")
        assert code == 503
        assert json.loads(body)["reason"] == (
            "the host is unhealthy: the health check "
            "tests.integration.test_health:check returned a false value"
        )
        broker.publish(queue_name, [{"n": 1}])
        await wait_for(lambda: broker.counts(queue_name) == (1, 0), what="a message waiting")
        assert broker.consumers(queue_name) == []
        ANSWER[0] = True
        await wait_for_ready_status(port, 200, timeout=20)
        await wait_for(lambda: monitored.seen == [{"n": 1}], what="the message consumed")
    finally:
        ANSWER[0] = True
        await monitored.stop()


@pytest_twisted.ensureDeferred
async def test_a_callback_of_a_suspended_consumer_that_publishes_fails_fast_when_configured(
    broker, queue_name, make_config
):
    """The unmarked queue keeps consuming; its callback's publish is refused, nothing sent."""
    other = f"{queue_name}-other"
    out = f"{queue_name}-out"
    for name in (queue_name, other, out):
        broker.declare_queue(name)
    health = fedmq.HealthMonitor()
    errors: list[str] = []

    def callback(message: fedmq.Message) -> None:
        try:
            fedmq.publish(fedmq.Message({"copy": message.body}, out), exchange="")
        except fedmq.ConsumerSuspended as error:
            errors.append(str(error))

    config = make_config(
        queues={
            queue_name: {"durable": True, "suspend_on_bad_host_health": True},
            other: {"durable": True},
        },
        fail_publish_when_suspended=True,
    )
    consumer = Consumer(config, callback, health=health)
    await consumer.start()
    try:
        health.set_unhealthy("the GPU is gone")
        await wait_for(lambda: broker.consumers(queue_name) == [], what="the consumer cancelled")
        broker.publish(other, [{"n": 1}])
        await wait_for(lambda: len(errors) == 1, what="the publish refused")
        assert "the GPU is gone" in errors[0]
        health.set_healthy()
        await wait_for(lambda: consumer.state == "consuming", what="consuming again")
        broker.publish(other, [{"n": 2}])
        await wait_for(lambda: broker.ready(out) == 1, what="the copy published")
    finally:
        await consumer.cancel()
    assert broker.drain(out) == [{"copy": {"n": 2}}]
