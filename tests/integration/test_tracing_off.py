"""Without OpenTelemetry, or with its API but no SDK, fedmq consumes and publishes as before."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

# A script that publishes two messages, consumes them with a callback that
# publishes each onward and then halts, and publishes once more; it prints
# what it saw.
SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class BlockOpenTelemetry(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    url, queue, mode = sys.argv[1:4]
    if mode == "absent":
        sys.meta_path.insert(0, BlockOpenTelemetry())

    import fedmq
    from fedmq.config import config_from_mapping

    config = config_from_mapping({"amqp_url": url, "queues": {queue: {"durable": True}}})
    fedmq.publish(fedmq.Message("first", topic=queue), exchange="", config=config)
    fedmq.publish(fedmq.Message("second", topic=queue), exchange="", config=config)
    seen = []

    def callback(message):
        seen.append(message.body)
        fedmq.publish(fedmq.Message(message.body, topic=queue + ".out"), exchange="")
        if len(seen) == 2:
            raise fedmq.HaltConsumer()

    fedmq.consume(callback, config=config)
    fedmq.publish(fedmq.Message("third", topic=queue), exchange="", config=config)
    print(json.dumps({
        "seen": seen,
        "opentelemetry_imported": any(n.startswith("opentelemetry") for n in sys.modules),
    }))
    """
)


@pytest.mark.parametrize("mode", ["absent", "api-without-sdk"])
def test_fedmq_consumes_and_publishes_without_an_opentelemetry_sdk(
    mode: str, broker: Any, queue_name: str
) -> None:
    """Nothing breaks, and no trace context is added to the messages sent."""
    broker.declare_queue(queue_name)
    broker.declare_queue(queue_name + ".out")
    ran = subprocess.run(
        [sys.executable, "-c", SCRIPT, broker.url, queue_name, mode],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.splitlines()[-1])
    assert report["seen"] == ["first", "second"]
    assert report["opentelemetry_imported"] is (mode != "absent")
    onward = broker.take_all(queue_name + ".out")
    assert [json.loads(body) for _, body in onward] == ["first", "second"]
    for properties, _body in onward:
        assert "traceparent" not in (properties.headers or {})
    assert broker.drain(queue_name) == ["third"]
