"""Tests for fedmq.testing: the throwaway RabbitMQ node the suite runs on.

These publish with pika's BlockingConnection so that they exercise the node
alone, not fedmq's own client code.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pika
import pika.exceptions
import pytest

import fedmq.testing.rabbitmq
from fedmq.testing import NOT_INSTALLED, RabbitNode
from tests.helpers import wait_until


@contextmanager
def channel(url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def publish_persistent(url: str, queue: str, bodies: list[bytes]) -> None:
    """Declare durable ``queue`` and put ``bodies`` in it, confirmed by the broker."""
    with channel(url) as ch:
        ch.queue_declare(queue, durable=True)
        ch.confirm_delivery()
        for body in bodies:
            ch.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=2), mandatory=True)


def drain(url: str, queue: str) -> list[bytes]:
    """Take every message from ``queue``, acknowledging each."""
    bodies = []
    with channel(url) as ch:
        while True:
            method, _props, body = ch.basic_get(queue, auto_ack=True)
            if method is None:
                return bodies
            bodies.append(body)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _decode_address(hex_address: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words), int(port, 16)


def listening(pids: list[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket that ``pids`` listen on, read from /proc."""
    inodes = set().union(*(_socket_inodes(pid) for pid in pids))
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A is TCP_LISTEN
                address, port = _decode_address(local)
                found.add((str(address), port))
    return found


def test_broker_accepts_amqp_connections(amqp_url: str) -> None:
    """The session's broker is up and a client can open a channel on it."""
    with channel(amqp_url) as ch:
        assert ch.is_open


def test_node_listens_on_loopback_only(rabbit_node: RabbitNode) -> None:
    """Nothing the node or its epmd opens is reachable from another machine."""
    pids = rabbit_node.pids()
    assert rabbit_node.epmd_pid is not None
    sockets = listening([*pids, rabbit_node.epmd_pid])

    assert ("127.0.0.1", rabbit_node.amqp_port) in sockets
    assert ("127.0.0.1", rabbit_node.dist_port) in sockets
    assert ("127.0.0.1", rabbit_node.epmd_port) in sockets
    exposed = {s for s in sockets if not ipaddress.ip_address(s[0]).is_loopback}
    assert exposed == set()


def test_durable_messages_survive_restart(
    rabbit_node: RabbitNode, vhost: str, vhost_name: str
) -> None:
    """Persistent messages in a durable queue are still there after restart()."""
    publish_persistent(vhost, "kept", [b"one", b"two", b"three"])

    rabbit_node.restart()

    assert rabbit_node.queue_depth("kept", vhost=vhost_name) == 3
    assert drain(vhost, "kept") == [b"one", b"two", b"three"]


def test_killed_node_starts_again_with_its_data(
    rabbit_node: RabbitNode, vhost: str, vhost_name: str
) -> None:
    """After kill(), no process of the node is left, and start() brings its queues back."""
    publish_persistent(vhost, "crash", [b"confirmed before the crash"])

    rabbit_node.kill()

    assert not rabbit_node.running
    assert rabbit_node.pids() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", rabbit_node.amqp_port), timeout=5).close()

    rabbit_node.start()

    assert drain(vhost, "crash") == [b"confirmed before the crash"]


def test_queue_counts_tell_ready_from_unacknowledged(
    rabbit_node: RabbitNode, vhost: str, vhost_name: str
) -> None:
    """A message delivered but not acknowledged counts as unacked, not ready."""
    with channel(vhost) as ch:
        ch.queue_declare("counted")
        for body in (b"a", b"b", b"c"):
            ch.basic_publish("", "counted", body)
        method, _props, _body = ch.basic_get("counted", auto_ack=False)
        assert method is not None

        assert rabbit_node.queue_counts("counted", vhost=vhost_name) == (2, 1)
        assert rabbit_node.queue_depth("counted", vhost=vhost_name) == 3


def test_queue_depth_of_missing_queue_raises(rabbit_node: RabbitNode, vhost_name: str) -> None:
    """Asking for a queue that does not exist is an error, not a depth of zero."""
    with pytest.raises(LookupError, match="no queue 'absent'"):
        rabbit_node.queue_depth("absent", vhost=vhost_name)


def test_added_user_reaches_its_vhost_only(rabbit_node: RabbitNode, vhost_name: str) -> None:
    """add_user() gives the user its vhost and nothing else."""
    user, password = f"user-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    rabbit_node.add_user(user, password, vhost=vhost_name)
    try:
        with channel(rabbit_node.vhost_url(vhost_name, user, password)) as ch:
            assert ch.is_open
        with pytest.raises(pika.exceptions.ProbableAccessDeniedError):
            pika.BlockingConnection(pika.URLParameters(rabbit_node.vhost_url("/", user, password)))
    finally:
        rabbit_node.ctl("delete_user", user)


def test_close_all_connections_reaches_clients(rabbit_node: RabbitNode, vhost: str) -> None:
    """Clients see a connection-forced close carrying the reason given."""
    connection = pika.BlockingConnection(pika.URLParameters(vhost))

    rabbit_node.close_all_connections("maintenance test")

    def pump_twice() -> None:
        # The first round may end before the close arrives.
        connection.process_data_events(time_limit=5)
        connection.process_data_events(time_limit=5)

    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        pump_twice()
    assert closed.value.reply_code == 320
    assert "maintenance test" in closed.value.reply_text


def test_ctl_failure_carries_rabbitmqctl_error(rabbit_node: RabbitNode) -> None:
    """A failing rabbitmqctl command raises with what rabbitmqctl said."""
    with pytest.raises(RuntimeError, match=r"delete_vhost.*no-such-vhost"):
        rabbit_node.ctl("delete_vhost", "no-such-vhost")


def test_node_that_cannot_boot_raises_with_its_log(rabbit_node: RabbitNode, tmp_path: Path) -> None:
    """A node whose port is taken fails to start, and the error shows the log."""
    clash = RabbitNode(tmp_path, name="fedmq-clash", amqp_port=rabbit_node.amqp_port)
    try:
        with pytest.raises(RuntimeError, match="fedmq-clash@localhost") as failed:
            clash.start(timeout=30)
        assert "tail of" in str(failed.value)
        assert "eaddrinuse" in str(failed.value)
        assert clash.pids() == []
    finally:
        clash.cleanup()
    assert clash.epmd_pid is None


def test_missing_rabbitmq_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without rabbitmq-server installed, start() says to run `make deps`."""
    monkeypatch.setattr(fedmq.testing.rabbitmq, "find_rabbitmq_server", lambda: None)

    with pytest.raises(RuntimeError) as missing:
        RabbitNode(tmp_path).start()
    assert str(missing.value) == NOT_INSTALLED
    assert "make deps" in NOT_INSTALLED


def connection_states(node: RabbitNode, vhost_name: str) -> list[str]:
    listing = node.ctl("list_connections", "--quiet", "--no-table-headers", "vhost", "state")
    return [
        line.split("\t")[1].strip()
        for line in listing.splitlines()
        if line.split("\t")[0] == vhost_name
    ]


def test_a_memory_alarm_blocks_a_publisher_until_it_is_cleared(
    rabbit_node: RabbitNode, vhost: str, vhost_name: str
) -> None:
    """Under `with node.memory_alarm` a publishing connection is blocked and its message
    held; after it, the node's own watermark is back and the message arrives.
    """
    status = json.loads(rabbit_node.ctl("status", "--formatter", "json"))
    watermark = status["vm_memory_high_watermark_setting"]
    with channel(vhost) as ch:
        ch.queue_declare("held")
        with rabbit_node.memory_alarm as alarm:
            assert alarm.in_effect()
            ch.basic_publish("", "held", b"during the alarm")
            wait_until(
                lambda: connection_states(rabbit_node, vhost_name) == ["blocked"],
                "the publishing connection blocked",
            )
            assert rabbit_node.queue_depth("held", vhost=vhost_name) == 0
        assert not alarm.in_effect()
        wait_until(
            lambda: rabbit_node.queue_depth("held", vhost=vhost_name) == 1,
            "the held message in the queue",
        )
        assert connection_states(rabbit_node, vhost_name) == ["running"]
    status = json.loads(rabbit_node.ctl("status", "--formatter", "json"))
    assert status["vm_memory_high_watermark_setting"] == watermark
