"""The first run a newcomer tries, from this checkout's own venv (``make venv``).

``twistd -n fedmq --config sample.toml`` and ``fedmq consume --config
sample.toml`` run with nothing on ``PYTHONPATH``, from a directory outside the
checkout, as a user's shell would; both must do the same useful thing: consume
from a server-named queue bound to ``amq.topic`` and print what arrives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.integration.processes import REPO, finish, terminate

BIN = Path(sys.executable).parent
SAMPLE = REPO / "sample.toml"

RUNNERS = {
    "twistd": [str(BIN / "twistd"), "-n", "--pidfile=", "fedmq", "--config", str(SAMPLE)],
    "fedmq consume": [str(BIN / "fedmq"), "consume", "--config", str(SAMPLE)],
}


def user_environment(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at this checkout."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "FEDMQ_CONFIG", "FEDMQ_AMQP_URL", "NOTIFY_SOCKET")
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def test_twistd_lists_the_fedmq_plugin(tmp_path):
    result = subprocess.run(
        [str(BIN / "twistd"), "--help"],
        cwd=tmp_path,
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert any(line.split()[:1] == ["fedmq"] for line in result.stdout.splitlines()), result.stdout


def consumers(node: Any, vhost: str) -> list[str]:
    text = node.ctl("list_consumers", "-p", vhost, "--no-table-headers", "--quiet", "queue_name")
    return [line.strip() for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_the_sample_configuration_prints_what_is_published_to_amq_topic(
    rabbit_node, vhost, vhost_name, tmp_path, runner
):
    process = subprocess.Popen(
        RUNNERS[runner],
        cwd=tmp_path,
        env=user_environment(FEDMQ_AMQP_URL=vhost),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not consumers(rabbit_node, vhost_name):
            if process.poll() is not None or time.monotonic() > deadline:
                status, out, err = finish(process, timeout=5)
                raise AssertionError(f"no consumer; exit {status}:\n{out}\n{err}")
            time.sleep(0.1)
        [queue] = consumers(rabbit_node, vhost_name)
        assert queue.startswith("amq.gen-")
        message_id = str(uuid.uuid4())
        connection = pika.BlockingConnection(pika.URLParameters(vhost))
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            "amq.topic",
            "first.run",
            json.dumps({"hello": "newcomer"}).encode(),
            pika.BasicProperties(content_type="application/json", message_id=message_id),
        )
        connection.close()
        while rabbit_node.queue_counts(queue, vhost=vhost_name) != (0, 0):
            assert time.monotonic() < deadline + 30, "the message was not acknowledged"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        status, out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    # twistd logs what a callback prints ("INFO stdout: ..."); fedmq consume prints it.
    printed = out if runner == "fedmq consume" else err
    assert f"Message {message_id} on topic 'first.run' from queue '{queue}'" in printed, (out, err)
    assert "body: {'hello': 'newcomer'}" in printed
