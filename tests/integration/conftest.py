"""Helpers for tests against the suite's throwaway RabbitMQ node.

Tests publish and inspect with pika's blocking client, so that what they
observe on the broker does not depend on fedmq's own code.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pytest
import pytest_twisted

from fedmq.config import Config, config_from_mapping
from tests.helpers import wait_for


class Broker:
    """Publishes to, and looks into, the test node's default vhost."""

    def __init__(self, node: Any):
        self.node = node
        self.url: str = node.url

    def _channel(self) -> tuple[pika.BlockingConnection, Any]:
        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        return connection, connection.channel()

    def declare_queue(self, name: str, **arguments: Any) -> None:
        connection, channel = self._channel()
        channel.queue_declare(name, durable=True, arguments=arguments or None)
        connection.close()

    def declare_exchange(self, name: str, kind: str = "fanout") -> None:
        connection, channel = self._channel()
        channel.exchange_declare(name, kind, durable=True)
        connection.close()

    def bind(self, queue: str, exchange: str, routing_key: str = "#") -> None:
        connection, channel = self._channel()
        channel.queue_bind(queue, exchange, routing_key)
        connection.close()

    def publish(
        self,
        routing_key: str,
        bodies: list[Any],
        exchange: str = "",
        content_type: str = "application/json",
        **properties: Any,
    ) -> list[str]:
        """Publish with confirms; JSON-encodes bodies that are not bytes. Returns the ids."""
        connection, channel = self._channel()
        channel.confirm_delivery()
        ids = []
        for body in bodies:
            message_id = uuid.uuid4().hex
            ids.append(message_id)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            channel.basic_publish(
                exchange,
                routing_key,
                data,
                pika.BasicProperties(
                    content_type=content_type,
                    message_id=message_id,
                    delivery_mode=2,
                    **properties,
                ),
            )
        connection.close()
        return ids

    def ready(self, queue: str) -> int:
        """Messages ready in ``queue`` (not counting unacknowledged ones)."""
        connection, channel = self._channel()
        count = channel.queue_declare(queue, passive=True).method.message_count
        connection.close()
        return int(count)

    def counts(self, queue: str) -> tuple[int, int]:
        """(ready, unacknowledged) as the broker reports them."""
        ready, unacked = self.node.queue_counts(queue)
        return int(ready), int(unacked)

    def consumers(self, queue: str) -> list[tuple[str, int]]:
        """(channel pid, prefetch count) of each consumer of ``queue``, as the broker lists them."""
        listing = self.node.ctl(
            "list_consumers",
            "--quiet",
            "--no-table-headers",
            "-p",
            "/",
            "queue_name",
            "channel_pid",
            "prefetch_count",
        )
        found = []
        for line in listing.splitlines():
            name, channel, prefetch = line.rsplit("\t", 2)
            if name == queue:
                found.append((channel, int(prefetch)))
        return found

    def get_all(self, queue: str) -> list[tuple[Any, Any, bytes]]:
        """Take every ready message out of ``queue``, in order: (pika's Basic.GetOk, with
        the exchange and routing key; pika properties; body).
        """
        connection, channel = self._channel()
        taken = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                break
            taken.append((method, properties, body))
        connection.close()
        return taken

    def take_all(self, queue: str) -> list[tuple[Any, bytes]]:
        """Take every ready message out of ``queue``, in order: (pika properties, body)."""
        return [(properties, body) for _, properties, body in self.get_all(queue)]

    def drain(self, queue: str, raw: bool = False) -> list[Any]:
        """Take every ready message out of ``queue``; their bodies, JSON-decoded unless raw."""
        return [
            json.loads(body) if properties.content_type == "application/json" and not raw else body
            for _, properties, body in self.get_all(queue)
        ]


@pytest.fixture
def broker(rabbit: Any) -> Broker:
    return Broker(rabbit)


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    """A queue name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_config(broker: Broker, queue_name: str) -> Callable[..., Config]:
    """A config consuming ``queue_name`` on the test node; keywords override keys."""

    def make(**overrides: Any) -> Config:
        data: dict[str, Any] = {
            "amqp_url": broker.url,
            "queues": {queue_name: {"durable": True}},
            "qos": {"prefetch_count": 10},
            "connect_timeout": 10,
        }
        data.update(overrides)
        return config_from_mapping(data)

    return make


__all__ = ["Broker", "pytest_twisted", "wait_for"]
