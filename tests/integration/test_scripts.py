"""``consume()`` in a plain script, under the default and the asyncio reactor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import wait_until

SCRIPT = Path(__file__).parent / "scripts" / "blocking_consume.py"


def run_script(broker, tmp_path, reactor, kind, queue, timeout=60):
    config = tmp_path / "config.toml"
    config.write_text(f'amqp_url = "{broker.url}"\n[qos]\nprefetch_count = 10\n')
    env = dict(os.environ, FEDMQ_CONFIG=str(config), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), reactor, kind, queue],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("reactor", ["default", "asyncio"])
@pytest.mark.parametrize("kind", ["function", "class", "async", "async-class"])
def test_a_script_consumes_until_halt_and_returns(broker, tmp_path, queue_name, reactor, kind):
    """Every kind of callback runs under both reactors; HaltConsumer(0) returns normally."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(5)])
    process = run_script(broker, tmp_path, reactor, kind, queue_name)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.count("got") == 3
    assert "consume returned" in out
    assert broker.counts(queue_name) == (2, 0)


@pytest.mark.parametrize("reactor", ["default", "asyncio"])
def test_the_example_printer_runs_until_sigterm_and_exits_cleanly(
    broker, tmp_path, queue_name, reactor
):
    """The quick-start example prints what arrives and stops cleanly on SIGTERM."""
    process = run_script(broker, tmp_path, reactor, "printer", queue_name)
    try:
        wait_until(lambda: broker.consumers(queue_name), "the script to consume", process)
        broker.publish(queue_name + ".hello", [{"greeting": "hi"}], exchange="amq.topic")
        wait_until(lambda: broker.counts(queue_name) == (0, 0), "the message acked", process)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err and "Unhandled error" not in err, err
    assert "{'greeting': 'hi'}" in out
    assert "consume returned" in out


@pytest.mark.parametrize("reactor", ["default", "asyncio"])
def test_a_script_whose_callback_raises_exits_non_zero_with_the_error(
    broker, tmp_path, queue_name, reactor
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    process = run_script(broker, tmp_path, reactor, "raises", queue_name)
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "the callback is broken" in err
    assert "CallbackError" in err
    assert "consume returned" not in out
    assert broker.counts(queue_name) == (1, 0)


def test_a_script_can_publish_then_consume(broker, tmp_path, queue_name):
    """A blocking publish() before consume() in one script works."""
    broker.declare_queue(queue_name)
    process = run_script(broker, tmp_path, "default", "publish-then-consume", queue_name)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.count("got") == 3
