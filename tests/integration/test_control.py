"""Controlling a running service from outside: the control socket, HTTP with a token, signals.

Each test starts a fedmq process as operators do (``fedmq consume`` or
``twistd -n fedmq``), pauses and resumes it from outside, and watches the
broker: a paused queue has no consumer, what is published meanwhile stays in
the queue, and a resume consumes it.
"""

from __future__ import annotations

import http.client
import json
import signal
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_for_port
from tests.integration.processes import (
    CALLBACKS,
    RUNNERS,
    events,
    fedmq,
    finish,
    start,
    terminate,
    wait_until,
    write_config,
)

TOKEN = "integration-control-token"


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for the control socket: its path may have at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="fedmq-ctl-", dir="/tmp"))
    yield path
    for leftover in path.iterdir():
        leftover.unlink()
    path.rmdir()


def config_file(broker: Any, tmp_path: Path, queue: str, control: dict[str, Any]) -> Path:
    return write_config(
        tmp_path / "config.toml",
        {
            "amqp_url": broker.url,
            "callback": f"{CALLBACKS}:Slow",
            "connect_timeout": 10,
            "consumer_config": {"log": str(tmp_path / "events.log"), "sleep": 0},
            "queues": {queue: {"durable": True}},
            "qos": {"prefetch_count": 5},
            "control": control,
        },
    )


def consumed(log: Path, count: int, process: Any) -> None:
    wait_until(lambda: len(events(log, "done")) == count, f"{count} messages consumed", process)


def stop(process: Any) -> str:
    process.send_signal(signal.SIGTERM)
    status, _out, err = finish(process)
    assert status == 0, err
    assert "Traceback" not in err, err
    return err


def test_fedmq_pause_stops_deliveries_and_resume_consumes_what_waited(
    broker, tmp_path, queue_name, socket_dir
):
    """Over the control socket: while paused the queue has no consumer and keeps
    what is published; after resume it is consumed. The socket is mode 0600
    and gone once the process stops.
    """
    broker.declare_queue(queue_name)
    path = socket_dir / "control.sock"
    config = config_file(broker, tmp_path, queue_name, {"socket": str(path)})
    log = tmp_path / "events.log"
    process = start([*RUNNERS["fedmq consume"], "--config", str(config)], cwd=tmp_path)
    try:
        broker.publish(queue_name, [{"n": n} for n in range(3)])
        consumed(log, 3, process)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

        paused = fedmq("pause", "--config", str(config), cwd=tmp_path)
        assert paused.returncode == 0, paused.stderr
        assert paused.stdout.splitlines() == ["consumer: consuming", f"{queue_name}: held (paused)"]
        # pause answers once the broker has cancelled the consumer.
        assert broker.consumers(queue_name) == []
        broker.publish(queue_name, [{"n": n} for n in range(4)])
        assert broker.counts(queue_name) == (4, 0)
        status = fedmq("status", "--json", "--socket", str(path), cwd=tmp_path)
        assert json.loads(status.stdout)["queues"][queue_name] == {
            "consuming": False,
            "reasons": ["paused"],
        }
        assert len(events(log, "done")) == 3

        resumed = fedmq("resume", queue_name, "--socket", str(path), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.splitlines()[-1] == f"{queue_name}: consuming"
        consumed(log, 7, process)
        wait_until(lambda: broker.counts(queue_name) == (0, 0), "every message acked")
        err = stop(process)
    finally:
        terminate(process)
    assert "as asked through the control socket" in err
    assert not path.exists()
    gone = fedmq("status", "--socket", str(path), cwd=tmp_path)
    assert gone.returncode == 7
    assert f"no consumer listens on the control socket {path}" in gone.stderr


def test_a_second_consumer_on_a_live_socket_exits_2_and_the_first_keeps_it(
    broker, tmp_path, queue_name, socket_dir
):
    broker.declare_queue(queue_name)
    path = socket_dir / "control.sock"
    config = config_file(broker, tmp_path, queue_name, {"socket": str(path)})
    log = tmp_path / "events.log"
    first = start([*RUNNERS["fedmq consume"], "--config", str(config)], cwd=tmp_path)
    try:
        broker.publish(queue_name, [{"n": 1}])
        consumed(log, 1, first)
        second = start([*RUNNERS["twistd"], "--config", str(config)], cwd=tmp_path)
        status, _out, err = finish(second)
        assert status == 2, err
        assert f"control.socket: {path} is in use: another process listens on it" in err
        assert "Traceback" not in err
        assert fedmq("status", "--socket", str(path), cwd=tmp_path).returncode == 0
        stop(first)
    finally:
        terminate(first)


def http_request(port: int, method: str, path: str, token: str | None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_over_http_only_the_token_pauses_and_resumes(broker, tmp_path, queue_name):
    """Under twistd: requests without the token, or with another, are 401 and the
    queue keeps consuming; with it, pause and resume work as over the socket.
    """
    broker.declare_queue(queue_name)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    config = config_file(
        broker, tmp_path, queue_name, {"http_port": port, "token_file": str(token_file)}
    )
    log = tmp_path / "events.log"
    process = start([*RUNNERS["twistd"], "--config", str(config)], cwd=tmp_path)
    try:
        wait_for_port(port, timeout=30)
        for token in (None, "wrong", TOKEN + "x"):
            code, body = http_request(port, "POST", "/pause", token)
            assert (code, body["ok"]) == (401, False)
        broker.publish(queue_name, [{"n": n} for n in range(2)])
        consumed(log, 2, process)  # still consuming: the refused requests changed nothing
        assert len(broker.consumers(queue_name)) == 1

        code, body = http_request(port, "POST", f"/pause?queue={queue_name}", TOKEN)
        assert code == 200, body
        assert body["queues"][queue_name] == {"consuming": False, "reasons": ["paused"]}
        assert broker.consumers(queue_name) == []
        broker.publish(queue_name, [{"n": n} for n in range(3)])
        assert broker.counts(queue_name) == (3, 0)
        assert http_request(port, "POST", "/resume", None)[0] == 401
        assert broker.counts(queue_name) == (3, 0)

        code, body = http_request(port, "POST", "/resume", TOKEN)
        assert code == 200, body
        consumed(log, 5, process)
        assert http_request(port, "GET", "/status", TOKEN)[1]["queues"][queue_name]["consuming"]
        err = stop(process)
    finally:
        terminate(process)
    assert "Refused a control request (POST /pause)" in err
    assert TOKEN not in err


def test_sigusr1_pauses_and_sigusr2_resumes(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    config = config_file(broker, tmp_path, queue_name, {"socket": ""})
    log = tmp_path / "events.log"
    process = start([*RUNNERS["fedmq consume"], "--config", str(config)], cwd=tmp_path)
    try:
        broker.publish(queue_name, [{"n": 1}])
        consumed(log, 1, process)
        process.send_signal(signal.SIGUSR1)
        wait_until(lambda: broker.consumers(queue_name) == [], "the consumer cancelled", process)
        broker.publish(queue_name, [{"n": n} for n in range(2)])
        assert broker.counts(queue_name) == (2, 0)
        process.send_signal(signal.SIGUSR2)
        consumed(log, 3, process)
        err = stop(process)
    finally:
        terminate(process)
    assert "as asked through SIGUSR1" in err and "as asked through SIGUSR2" in err
