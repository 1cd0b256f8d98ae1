"""``python -m fedmq.demo``: a consumer against a throwaway RabbitMQ, end to end.

Starts a private RabbitMQ node on free loopback ports, consumes a queue bound
to ``amq.topic`` with :func:`fedmq.example.printer`, publishes a few demo
messages with confirms, and stops once it has printed them all.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

import fedmq
from fedmq.config import config_from_mapping
from fedmq.example import printer
from fedmq.testing import RabbitNode

DEMO_MESSAGES = [
    {"greeting": "hello"},
    {"order": 42, "items": ["tea", "scones"]},
    {"status": "done"},
]


async def _run(reactor: Any, url: str) -> None:
    config = config_from_mapping(
        {
            "amqp_url": url,
            "queues": {"demo": {"durable": False, "auto_delete": True}},
            "bindings": [{"queue": "demo", "exchange": "amq.topic", "routing_keys": ["demo.#"]}],
        },
        source="fedmq.demo",
    )
    printed = 0

    def callback(message: fedmq.Message) -> None:
        nonlocal printed
        printer(message)
        printed += 1
        if printed == len(DEMO_MESSAGES):
            raise fedmq.HaltConsumer(exit_code=0, reason="all demo messages printed")

    consumer = await fedmq.consume(callback, config=config, reactor=reactor)
    for n, body in enumerate(DEMO_MESSAGES):
        await fedmq.publish(fedmq.Message(body, topic=f"demo.{n}"), config=config, reactor=reactor)
    print(f"Published {len(DEMO_MESSAGES)} messages to amq.topic; consuming...")
    await consumer.result


def main() -> None:
    """Start a throwaway RabbitMQ node, consume the demo messages from it, stop it."""
    with tempfile.TemporaryDirectory(prefix="fedmq-demo-") as tmp:
        node = RabbitNode(Path(tmp), name="fedmq-demo")
        print("Starting a throwaway RabbitMQ node...")
        with node:
            print(f"RabbitMQ is up on 127.0.0.1:{node.amqp_port} ({node.boot_seconds:.1f} s)")
            task.react(lambda reactor: defer.ensureDeferred(_run(reactor, node.url)))


if __name__ == "__main__":
    main()
