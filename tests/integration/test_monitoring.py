"""Operating fedmq against the real broker: health, metrics, systemd and logs.

The in-process tests pair a real :class:`~fedmq.consumer.Consumer` with the
monitoring and notifier services, the way ``fedmq.tap`` does; the last test
runs ``twistd -n fedmq`` as the shipped systemd unit does, with a
``$NOTIFY_SOCKET`` standing in for systemd's.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import Agent

import fedmq
from fedmq._logging import setup_logging
from fedmq._systemd import NotifyService
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.monitoring import MonitoringService
from tests.helpers import free_port
from tests.integration.conftest import Broker, wait_for

REPO = Path(__file__).resolve().parents[2]
TWISTD = Path(sys.executable).parent / "twistd"


class _Body(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.data)


async def get(port: int, path: str) -> tuple[int, bytes]:
    """GET http://127.0.0.1:port/path; the status and body."""
    response = await Agent(reactor).request(b"GET", f"http://127.0.0.1:{port}{path}".encode())
    body = _Body()
    response.deliverBody(body)
    return response.code, await body.done


async def ready_status(port: int) -> int:
    code, _ = await get(port, "/ready")
    return code


async def wait_for_ready_status(port: int, code: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (await ready_status(port)) != code:
        if time.monotonic() > deadline:
            raise AssertionError(f"/ready did not answer {code} within {timeout} s")
        await defer_sleep(0.1)


def defer_sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples /metrics serves: (name, sorted labels) -> value."""
    code, body = await get(port, "/metrics")
    assert code == 200
    return {
        (item.name, tuple(sorted(item.labels.items()))): item.value
        for family in text_string_to_metric_families(body.decode())
        for item in family.samples
    }


class Monitored:
    """A consumer with the monitoring service beside it, as fedmq.tap builds them."""

    def __init__(self, config: Any, callback: Any):
        self.consumer = Consumer(config, callback)
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


# --- /ready and /metrics ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_ready_goes_503_while_the_broker_is_down_and_200_once_it_is_back(
    rabbit_node, broker, queue_name, make_config
):
    config = make_config(
        monitoring={"port": 0},
        reconnect={"initial_delay": 0.2, "max_delay": 1.0},
        heartbeat=2,
    )
    monitored = Monitored(config, lambda message: None)
    port = await monitored.start()
    try:
        assert await ready_status(port) == 200
        await threads.deferToThread(rabbit_node.stop)
        try:
            # The consumer notices the lost connection soon, not at once.
            await wait_for_ready_status(port, 503, timeout=30)
            code, body = await get(port, "/ready")
            assert code == 503
            assert json.loads(body)["state"] in ("reconnecting", "connecting")
            code, _ = await get(port, "/live")
            assert code == 200
        finally:
            await threads.deferToThread(rabbit_node.start)
        await wait_for_ready_status(port, 200, timeout=60)
        samples = await scrape(port)
        assert samples[("fedmq_reconnects_total", ())] >= 1
        assert samples[("fedmq_connection_state", (("state", "consuming"),))] == 1
    finally:
        await monitored.stop()


@pytest_twisted.ensureDeferred
async def test_metrics_count_what_the_consumer_processed(broker, queue_name, make_config):
    broker.declare_queue(queue_name)
    before = time.time()
    broker.publish(queue_name, [{"n": n} for n in range(10)])
    requeued_once: set[int] = set()

    def callback(message: fedmq.Message) -> None:
        n = message.body["n"]
        if n % 5 == 0:
            raise fedmq.Drop  # the queue has no dead-letter exchange: discarded
        if n == 3 and n not in requeued_once:
            requeued_once.add(n)
            raise fedmq.Nack

    monitored = Monitored(make_config(monitoring={"port": 0}), callback)
    port = await monitored.start()
    try:
        await wait_for(
            lambda: (
                sum(monitored.consumer.stats.queue(queue_name)[k] for k in ("acked", "dropped"))
                == 10
            ),
            what="every message settled",
        )
        samples = await scrape(port)
    finally:
        await monitored.stop()

    queue = (("queue", queue_name),)
    assert samples[("fedmq_messages_received_total", queue)] == 11  # one redelivery
    assert samples[("fedmq_messages_acked_total", queue)] == 8
    assert samples[("fedmq_messages_requeued_total", queue)] == 1
    assert samples[("fedmq_messages_dropped_total", queue)] == 2
    assert samples[("fedmq_messages_failed_total", queue)] == 0
    assert samples[("fedmq_callback_duration_seconds_count", ())] == 11
    assert samples[("fedmq_messages_in_flight", ())] == 0
    assert before <= samples[("fedmq_last_message_timestamp_seconds", ())] <= time.time()
    assert samples[("fedmq_connection_state", (("state", "consuming"),))] == 1
    assert broker.counts(queue_name) == (0, 0)


# --- systemd -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_systemd_hears_ready_once_consuming_then_watchdog_pings(
    broker, queue_name, make_config, notify_socket
):
    consumer = Consumer(make_config(), lambda message: None)
    environ = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "200000"}
    notifier = NotifyService(SimpleNamespace(consumer=consumer), environ=environ)
    notifier.startService()
    try:
        assert notify_socket.saw("READY=1") == 0
        await consumer.start()
        await wait_for(lambda: notify_socket.saw("READY=1"), what="READY=1")
        assert f"STATUS=Consuming from {queue_name}" in notify_socket.poll()[-1].split("\n")
        await wait_for(lambda: notify_socket.saw("WATCHDOG=1") >= 3, what="watchdog pings")
    finally:
        notifier.stopService()
        await consumer.cancel()
    assert notify_socket.saw("READY=1") == 1
    assert notify_socket.saw("STOPPING=1") == 1


# --- logs ----------------------------------------------------------------------------


@pytest.fixture
def secret_user(rabbit_node: Any, vhost_name: str) -> Iterator[tuple[str, str]]:
    """A user of this test's vhost whose password no log line may show."""
    user, password = f"fedmq-{secrets.token_hex(3)}", f"pw-{secrets.token_hex(12)}"
    rabbit_node.add_user(user, password, vhost_name)
    yield user, password
    rabbit_node.ctl("delete_user", user)


@pytest_twisted.ensureDeferred
async def test_a_failed_message_logs_one_json_line_with_its_details_and_no_password(
    rabbit_node, vhost_name, secret_user, queue_name, restore_logging
):
    user, password = secret_user
    url = rabbit_node.vhost_url(vhost_name, user, password)
    config = config_from_mapping(
        {
            "amqp_url": url,
            "log_format": "json",
            "max_errors": 1,
            "queues": {queue_name: {}},
            "bindings": [
                {"queue": queue_name, "exchange": "amq.topic", "routing_keys": "orders.#"}
            ],
        }
    )
    stream = io.StringIO()
    setup_logging(config, stream=stream, begin_twisted_logging=False)

    def callback(message: fedmq.Message) -> None:
        time.sleep(0.05)
        # A callback's own error message carrying the URL: a common slip.
        raise ConnectionError(f"the inventory service at {url} refused")

    consumer = Consumer(config, callback)
    await consumer.start()
    publisher = Broker(rabbit_node)
    publisher.url = url
    [message_id] = publisher.publish("orders.created", [{"sku": 1}], exchange="amq.topic")
    with pytest.raises(fedmq.CallbackError):
        await consumer.result

    output = stream.getvalue()
    assert password not in output
    entries = [json.loads(line) for line in output.splitlines()]
    [failed] = [e for e in entries if "The callback raised" in e["message"]]
    assert failed["level"] == "ERROR"
    assert failed["logger"].startswith("fedmq")
    text = failed["message"]
    assert message_id in text
    assert "topic 'orders.created'" in text
    assert f"queue {queue_name!r}" in text
    duration = float(re.search(r"after (\d+\.\d+) s", text).group(1))  # type: ignore[union-attr]
    assert 0.05 <= duration < 5
    assert (failed["message_id"], failed["topic"], failed["queue"]) == (
        message_id,
        "orders.created",
        queue_name,
    )
    assert failed["duration"] == duration
    assert "ConnectionError: the inventory service at amqp://" in failed["exception"]
    assert f"{user}:***@" in failed["exception"]


# --- twistd, as the systemd unit runs it -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twistd_as_the_unit_runs_it_notifies_serves_health_and_logs_json(
    rabbit_node, vhost_name, secret_user, queue_name, notify_socket, tmp_path
):
    user, password = secret_user
    url = rabbit_node.vhost_url(vhost_name, user, password)
    port = free_port()
    config = tmp_path / "orders.toml"
    config.write_text(
        f'amqp_url = "{url}"\n'
        'callback = "fedmq.example:printer"\n'
        'log_format = "json"\n'
        f'[queues."{queue_name}"]\n'
        f"[monitoring]\nport = {port}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FEDMQ_CONFIG", "FEDMQ_AMQP_URL")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
        NOTIFY_SOCKET=notify_socket.path,
        WATCHDOG_USEC="400000",
    )
    # The unit's ExecStart, with this venv's twistd and a file of the test's.
    command = [str(TWISTD), "--nodaemon", "--pidfile=", "fedmq", "--config", str(config)]
    # Popen returns at once; the test then waits on the reactor, not on the process.
    process = subprocess.Popen(  # noqa: ASYNC220
        command,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def alive_and(condition: Any) -> Any:
        def check() -> Any:
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"twistd exited {process.returncode}:\n{out}\n{err}")
            return condition()

        return check

    try:
        await wait_for(alive_and(lambda: notify_socket.saw("READY=1")), 60, "READY=1")
        await wait_for(alive_and(lambda: notify_socket.saw("WATCHDOG=1") >= 2), 10, "pings")
        assert await ready_status(port) == 200
        publisher = Broker(rabbit_node)
        publisher.url = url
        publisher.publish(queue_name, [{"hello": "world"}])
        received = ("fedmq_messages_acked_total", (("queue", queue_name),))
        deadline = time.monotonic() + 20
        while (await scrape(port)).get(received) != 1:
            assert time.monotonic() < deadline, "the message was not acked within 20 s"
            await defer_sleep(0.1)
        process.send_signal(signal.SIGTERM)
        out, err = await threads.deferToThread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, f"{out}\n{err}"
    assert notify_socket.saw("STOPPING=1") == 1
    assert password not in out + err
    # fedmq's and Twisted's lines alike: one JSON object per line on stderr.
    entries = [json.loads(line) for line in err.splitlines() if line.strip()]
    loggers = {entry["logger"] for entry in entries}
    assert "fedmq" in {name.split(".")[0] for name in loggers}
    assert any(name.startswith("twisted") for name in loggers), loggers
