"""fedora-messaging's own configuration files, run by fedmq unchanged.

The files come from the fedora-messaging source distribution that ``make
venv`` fetches (see :mod:`tests.anchors`), not from copies written here: the
example configuration, the Fedora and Fedora staging configurations, and its
test fixtures. Each is checked with ``fedmq check-config`` and run with
``fedmq consume`` (``$FEDMQ_AMQP_URL`` pointing it at a vhost of the test
node where the file names a remote broker), and what fedmq declares is read
back from the broker with ``rabbitmqctl``.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.anchors import sdist_dir
from tests.integration.processes import CALLBACKS, fedmq, finish, start, terminate

FEDORA_MESSAGING = sdist_dir("fedora-messaging")
EXAMPLE = FEDORA_MESSAGING / "config.toml.example"
FEDORA = FEDORA_MESSAGING / "configs" / "fedora.toml"
FEDORA_STAGING = FEDORA_MESSAGING / "configs" / "fedora.stg.toml"
FIXTURES = FEDORA_MESSAGING / "tests" / "fixtures"


def publish(url: str, routing_key: str, body: Any, exchange: str = "amq.topic") -> str:
    """Publish one persistent JSON message with confirms; returns its id."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    message_id = str(uuid.uuid4())
    channel.basic_publish(
        exchange,
        routing_key,
        json.dumps(body).encode(),
        pika.BasicProperties(
            content_type="application/json", message_id=message_id, delivery_mode=2
        ),
    )
    connection.close()
    return message_id


def rows(node: Any, vhost: str, what: str, *columns: str) -> list[list[str]]:
    """``rabbitmqctl list_<what>`` on ``vhost``: one list of column values per row."""
    text = node.ctl(f"list_{what}", "-p", vhost, "--no-table-headers", "--quiet", *columns)
    return [line.split("\t") for line in text.splitlines() if line.strip()]


def wait(condition: Any, what: str, process: Any = None, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            status, out, err = finish(process)
            raise AssertionError(f"exited {status} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def consumers(node: Any, vhost: str) -> list[list[str]]:
    return rows(node, vhost, "consumers", "queue_name")


def settled(node: Any, vhost: str, queue: str) -> bool:
    """Every message of ``queue`` delivered and acknowledged."""
    return all(
        row[1:] == ["0", "0"]
        for row in rows(node, vhost, "queues", "name", "messages_ready", "messages_unacknowledged")
        if row[0] == queue
    )


def copy_with(source: Path, target: Path, replacements: dict[str, str]) -> Path:
    """``source`` with each key replaced by its value, written to ``target``."""
    text = source.read_text()
    for old, new in replacements.items():
        assert old in text, f"{old!r} is not in {source}"
        text = text.replace(old, new)
    target.write_text(text)
    return target


# --- check-config ------------------------------------------------------------------


def test_the_example_configuration_is_valid(tmp_path):
    result = fedmq("check-config", str(EXAMPLE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"{EXAMPLE}: valid (1 queue, 1 binding, callback fedora_messaging.example:printer)\n"
    )


@pytest.mark.parametrize("path", [FEDORA, FEDORA_STAGING], ids=["fedora", "fedora.stg"])
def test_the_fedora_configurations_name_the_missing_ca_file(tmp_path, path):
    """They connect with amqps:// and name /etc/fedora-messaging's files: where those
    are missing, the file cannot run, and check-config says which file is missing.
    """
    result = fedmq("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith(f"fedmq: {path}: tls.ca_cert: /etc/fedora-messaging/")
    assert "does not exist (needed for the TLS connection to amqps://" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("path", [FEDORA, FEDORA_STAGING], ids=["fedora", "fedora.stg"])
def test_the_fedora_configurations_are_valid_with_their_certificates_installed(tmp_path, path):
    """With the certificate files the package ships where the file says, check-config
    passes: a server-named queue (none is listed) and its binding to amq.topic.
    """
    shipped = FEDORA_MESSAGING / "configs"
    text = path.read_text().replace("/etc/fedora-messaging/", f"{shipped}/")
    installed = tmp_path / path.name
    installed.write_text(text)
    result = fedmq("check-config", str(installed), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid (1 queue, 1 binding, callback fedora_messaging.example:printer)" in result.stdout


def test_a_tls_file_that_is_not_pem_is_a_configuration_error(tmp_path):
    installed = copy_with(
        FEDORA,
        tmp_path / "fedora.toml",
        {"/etc/fedora-messaging/cacert.pem": str(FIXTURES / "bad_cb")},
    )
    result = fedmq("check-config", str(installed), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"fedmq: {installed}: tls.ca_cert: {FIXTURES / 'bad_cb'} is not a PEM file "
        "(no -----BEGIN line) (needed for the TLS connection to "
        "amqps://fedora:***@rabbitmq.fedoraproject.org/%2Fpublic_pubsub)\n"
    )


def test_the_fixture_with_a_toml_mistake_is_refused_with_its_line(tmp_path):
    path = FIXTURES / "bad_conf.toml"
    result = fedmq("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"fedmq: {path}:1:")
    assert "not valid TOML" in result.stderr


def test_a_fixture_whose_callback_cannot_be_imported_is_refused(tmp_path):
    """good_conf.toml names a callback in fedora-messaging's own test suite, which is
    not importable here: fedora-messaging could not run it either.
    """
    path = FIXTURES / "good_conf.toml"
    result = fedmq("check-config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "tests.unit.test_cli:echo" in result.stderr and result.stderr.count("\n") == 1


# --- consuming ---------------------------------------------------------------------


def test_the_fedora_configuration_consumes_from_a_server_named_queue_bound_to_amq_topic(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """configs/fedora.toml lists no queue and a binding without one: fedmq declares a
    server-named, exclusive, auto-delete queue, binds it to amq.topic with "#", runs
    the file's callback (fedora-messaging's printer) and deletes the queue on exit.
    """
    process = start(
        [sys.executable, "-m", "fedmq", "consume", "--config", str(FEDORA)],
        tmp_path,
        FEDMQ_AMQP_URL=vhost,
    )
    try:
        wait(lambda: consumers(rabbit_node, vhost_name), "a consumer", process)
        queues = rows(rabbit_node, vhost_name, "queues", "name", "exclusive", "auto_delete")
        assert len(queues) == 1 and queues[0][0].startswith("amq.gen-"), queues
        assert queues[0][1:] == ["true", "true"]
        bindings = rows(
            rabbit_node, vhost_name, "bindings", "source_name", "destination_name", "routing_key"
        )
        assert ["amq.topic", queues[0][0], "#"] in bindings, bindings
        message_id = publish(vhost, "org.fedoraproject.prod.bodhi.update", {"update": 1})
        wait(lambda: settled(rabbit_node, vhost_name, queues[0][0]), "the message is acked")
        process.send_signal(signal.SIGTERM)
        status, out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    assert message_id in out, out
    assert rows(rabbit_node, vhost_name, "queues", "name") == []


def test_the_example_configuration_consumes_in_the_clear_with_its_tls_table(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """config.toml.example has amqp_url = "amqp://" and a [tls] table naming files that
    do not exist: as in fedora-messaging, [tls] only applies to amqps:// URLs, so it
    connects in the clear, declares my_queue, binds it and prints what arrives, on
    standard output as its log_config says.
    """
    process = start(
        [sys.executable, "-m", "fedmq", "consume", "--config", str(EXAMPLE)],
        tmp_path,
        FEDMQ_AMQP_URL=vhost,
    )
    try:
        wait(lambda: consumers(rabbit_node, vhost_name), "a consumer", process)
        message_id = publish(vhost, "anything.at.all", {"hello": "example"})
        wait(lambda: settled(rabbit_node, vhost_name, "my_queue"), "the message is acked")
        process.send_signal(signal.SIGTERM)
        status, out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    assert message_id in out
    # The example's log_config: "[LEVEL name] message" lines on standard output.
    assert "[INFO fedmq] Consuming from 'my_queue'" in out, out
    durable = rows(rabbit_node, vhost_name, "queues", "name", "durable")
    assert ["my_queue", "true"] in durable


def test_the_example_log_config_shows_why_the_consumer_stopped(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """The example's log_config disables existing loggers and sets the root logger to
    ERROR, configuring only fedora_messaging's logger: fedmq's lines are shown the way
    that logger's would be, so each failure of the callback and the reason the
    consumer stopped (five errors within a minute, exit status 5) are seen.
    """
    process = start(
        [
            sys.executable, "-m", "fedmq", "consume", "--config", str(EXAMPLE),
            "--callback", f"{CALLBACKS}:raises",
        ],
        tmp_path,
        FEDMQ_AMQP_URL=vhost,
    )  # fmt: skip
    try:
        wait(lambda: consumers(rabbit_node, vhost_name), "a consumer", process)
        publish(vhost, "anything", {"fails": True})
        status, out, err = finish(process, timeout=60)
    finally:
        terminate(process)
    assert status == 5, (out, err)
    assert out.count("RuntimeError: the callback is broken") >= 5, out
    assert "[ERROR fedmq." in out, out
    assert "fedmq stopped (exit status 5)" in out, out
