"""fedmq's own queues never stop a consumer that would run without them.

Where an administrator owns the topology (``passive_declares = true``), or
the user may only configure the queues it was given, the retry and dead
queues fedmq adds may be missing or refused. Each test has a vhost of its
own, and reads what exists there from the broker with ``rabbitmqctl``.
"""

from __future__ import annotations

import logging
from typing import Any

import pika
import pytest_twisted

import fedmq
from fedmq.config import config_from_mapping
from tests.integration.conftest import wait_for

QUEUE = "orders"


def admin_declares(url: str) -> None:
    """What the administrator set up: ``orders`` dead-lettering to ``orders-dlq``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare("orders-dlx", "fanout", durable=True)
    channel.queue_declare("orders-dlq", durable=True)
    channel.queue_bind("orders-dlq", "orders-dlx")
    channel.queue_declare(QUEUE, durable=True, arguments={"x-dead-letter-exchange": "orders-dlx"})
    connection.close()


def publish(url: str, *bodies: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    for body in bodies:
        channel.basic_publish(
            "amq.topic",
            "orders.new",
            body.encode(),
            pika.BasicProperties(content_type="text/plain", delivery_mode=2),
        )
    connection.close()


def queue_names(node: Any, vhost: str) -> set[str]:
    text = node.ctl("list_queues", "-p", vhost, "--no-table-headers", "--quiet", "name")
    return {line.strip() for line in text.splitlines() if line.strip()}


def bindings(node: Any, vhost: str) -> list[list[str]]:
    text = node.ctl(
        "list_bindings", "-p", vhost, "--no-table-headers", "--quiet",
        "source_name", "destination_name", "routing_key",
    )  # fmt: skip
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def settings(url: str, **overrides: Any) -> fedmq.Config:
    data: dict[str, Any] = {
        "amqp_url": url,
        "queues": {QUEUE: {"durable": True, "arguments": {"x-dead-letter-exchange": "orders-dlx"}}},
        "bindings": [{"queue": QUEUE, "exchange": "amq.topic", "routing_keys": ["orders.#"]}],
        "connect_timeout": 10,
        "reconnect": {"max_attempts": 1},
    }
    data.update(overrides)
    return config_from_mapping(data)


def retry_some(seen: list[str]) -> Any:
    def callback(message: fedmq.Message) -> None:
        seen.append(message.body)
        if message.body == "retry me":
            raise fedmq.Retry("the stock service is down")

    return callback


@pytest_twisted.ensureDeferred
async def test_passive_declares_without_retry_queues_consume_and_warn(
    rabbit_node, vhost, vhost_name, caplog
):
    """The consumer starts (no exit 3), says which queue is missing, still binds, and
    a Retry goes where a Drop goes: the queue's dead-letter exchange.
    """
    admin_declares(vhost)
    caplog.set_level(logging.WARNING, logger="fedmq")
    seen: list[str] = []
    consumer = await fedmq.consume(retry_some(seen), config=settings(vhost, passive_declares=True))
    publish(vhost, "retry me", "fine")
    await wait_for(lambda: len(seen) == 2, what="both messages")
    await wait_for(lambda: rabbit_node.queue_depth("orders-dlq", vhost=vhost_name) == 1)
    await consumer.cancel()

    assert seen == ["retry me", "fine"]
    assert queue_names(rabbit_node, vhost_name) == {QUEUE, "orders-dlq"}
    assert ["amq.topic", QUEUE, "orders.#"] in bindings(rabbit_node, vhost_name)
    assert rabbit_node.queue_counts(QUEUE, vhost=vhost_name) == (0, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        "Queue 'orders.retry.1s' does not exist, so 'orders' has no retry or dead queue: "
        "Retry drops its messages and undecodable ones go to its dead-letter exchange "
        "(checking queue 'orders.retry.1s' (for retries of 'orders'): 404 NOT_FOUND"
    ) in " ".join(warnings)


@pytest_twisted.ensureDeferred
async def test_passive_declares_use_retry_queues_that_exist(rabbit_node, vhost, vhost_name, caplog):
    """Once the retry and dead queues exist (here: made by a first, non-passive run),
    a passive consumer uses them: Retry waits in orders.retry.1s.
    """
    admin_declares(vhost)
    first = await fedmq.consume(retry_some([]), config=settings(vhost, retry={"delays": [30]}))
    await first.cancel()
    caplog.set_level(logging.WARNING, logger="fedmq")
    seen: list[str] = []
    config = settings(vhost, passive_declares=True, retry={"delays": [30]})
    consumer = await fedmq.consume(retry_some(seen), config=config)
    publish(vhost, "retry me")
    await wait_for(lambda: rabbit_node.queue_depth("orders.retry.30s", vhost=vhost_name) == 1)
    await consumer.cancel()

    assert seen == ["retry me"]
    assert rabbit_node.queue_depth("orders-dlq", vhost=vhost_name) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "Queue" in r.msg]


@pytest_twisted.ensureDeferred
async def test_a_user_who_may_not_declare_retry_queues_still_consumes(
    rabbit_node, vhost, vhost_name, caplog
):
    """A user allowed to configure only its own queue (a shared broker's usual rule)
    gets 403 for orders.retry.1s: a warning, no retry queues, and consuming goes on.
    """
    admin_declares(vhost)
    user, password = "orders-only", "orders-only-password"
    rabbit_node.add_user(user, password, vhost_name, configure=f"^{QUEUE}$")
    try:
        caplog.set_level(logging.WARNING, logger="fedmq")
        seen: list[str] = []
        url = rabbit_node.vhost_url(vhost_name, user, password)
        consumer = await fedmq.consume(retry_some(seen), config=settings(url))
        publish(vhost, "fine")
        await wait_for(lambda: seen == ["fine"], what="the message")
        await consumer.cancel()
    finally:
        rabbit_node.ctl("delete_user", user)

    assert queue_names(rabbit_node, vhost_name) == {QUEUE, "orders-dlq"}
    warnings = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "Queue 'orders.retry.1s' may not be declared (403 ACCESS_REFUSED)" in warnings
