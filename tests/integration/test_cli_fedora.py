"""``fedmq`` against fedora-messaging's own command, on the suite's broker.

fedora-messaging's command runs as a process too, pointed at a vhost of the
test node by a configuration file, so each test compares what the broker
sees from both tools, or hands a file from one tool to the other.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
from pathlib import Path
from typing import Any

import pika
import pytest

from tests.integration.processes import (
    RUNNERS,
    finish,
    run,
    start,
    terminate,
    wait_until,
    write_config,
)

FEDORA_MESSAGING = str(Path(sys.executable).parent / "fedora-messaging")
FEDMQ = RUNNERS["fedmq consume"][:-1]  # python -m fedmq

# A callback both tools can load with --callback-file: it appends one JSON
# line per message to OUT. fedora-messaging's messages keep their headers in
# _headers, fedmq's in headers.
CALLBACK_SOURCE = """\
import json

OUT = {out!r}


def handle(message):
    headers = getattr(message, "_headers", None)
    if headers is None:
        headers = message.headers
    line = {{"id": message.id, "topic": message.topic, "body": message.body, "headers": headers}}
    with open(OUT, "a") as out:
        out.write(json.dumps(line, default=str) + "\\n")
"""


@pytest.fixture
def second_vhost(rabbit_node, vhost_name):
    """A second vhost for this test, beside ``vhost_name``."""
    name = f"{vhost_name}-b-{secrets.token_hex(2)}"
    rabbit_node.add_vhost(name)
    try:
        rabbit_node.set_permissions("guest", name)
        yield name
    finally:
        rabbit_node.delete_vhost(name)


def callback_file(directory: Path, name: str = "handlers") -> tuple[str, Path]:
    """``(PATH:handle, the file it writes to)`` for a fresh callback file."""
    out = directory / f"{name}.out"
    path = directory / f"{name}.py"
    path.write_text(CALLBACK_SOURCE.format(out=str(out)))
    return f"{path}:handle", out


def lines_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def consumer_count(node, vhost: str) -> int:
    output = node.ctl("list_consumers", "-p", vhost, "--quiet", "--no-table-headers")
    return len([line for line in output.splitlines() if line.strip()])


SERVER_NAMED = re.compile(r"^amq\.gen-\S+$")
# fedmq's own wait and dead queues (see the Errors page): not fedora-messaging's.
FEDMQ_ERROR_QUEUE = re.compile(r"\.(retry\.\d+s|dead)$")


def topology(node, vhost: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """(queues, bindings) of a vhost as rabbitmqctl lists them, sorted.

    A queue the broker named is shown as ``<server-named>``; fedmq's error
    queues and the default exchange's implicit bindings are left out.
    """

    def name(queue: str) -> str:
        return "<server-named>" if SERVER_NAMED.match(queue) else queue

    queues = []
    listed = node.ctl(
        "list_queues", "-p", vhost, "--quiet", "--no-table-headers",
        "name", "durable", "auto_delete", "exclusive",
    )  # fmt: skip
    for line in listed.splitlines():
        queue, *flags = line.split("\t")
        if not FEDMQ_ERROR_QUEUE.search(queue):
            queues.append((name(queue), *flags))
    bindings = []
    listed = node.ctl(
        "list_bindings", "-p", vhost, "--quiet", "--no-table-headers",
        "source_name", "destination_name", "routing_key",
    )  # fmt: skip
    for line in listed.splitlines():
        source, destination, key = line.split("\t")
        if source and not FEDMQ_ERROR_QUEUE.search(destination):
            bindings.append((source, name(destination), key))
    return sorted(queues), sorted(bindings)


def app_names(node, vhost: str) -> list[str]:
    """The ``app`` client property of each connection to ``vhost``."""
    listed = node.ctl(
        "list_connections", "--quiet", "--no-table-headers", "vhost", "client_properties"
    )
    names = []
    for line in listed.splitlines():
        connection_vhost, _, properties = line.partition("\t")
        if connection_vhost == vhost:
            found = re.search(r'\{"app",longstr,"([^"]*)"\}', properties) or re.search(
                r'"app"[^"]*"([^"]*)"', properties
            )
            names.append(found.group(1) if found else properties)
    return sorted(names)


def declare(url: str, exchange: str | None = None, queue: str | None = None, key: str = "#"):
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    if exchange is not None:
        channel.exchange_declare(exchange, "topic", durable=True)
    if queue is not None:
        channel.queue_declare(queue, durable=True)
        channel.queue_bind(queue, "amq.topic", key)
    connection.close()


def publish(url: str, messages: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> list[str]:
    """Publish (topic, body, properties) to amq.topic with confirms; returns the ids."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    ids = []
    for topic, body, properties in messages:
        ids.append(secrets.token_hex(8))
        channel.basic_publish(
            "amq.topic",
            topic,
            json.dumps(body).encode(),
            pika.BasicProperties(
                content_type="application/json", message_id=ids[-1], delivery_mode=2, **properties
            ),
        )
    connection.close()
    return ids


def take_all(url: str, queue: str) -> list[tuple[str, Any, bytes]]:
    """Every ready message of ``queue``: (routing key, pika properties, body)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    taken = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        taken.append((method.routing_key, properties, body))
    connection.close()
    return taken


def config_for(path: Path, url: str, **data: Any) -> str:
    """A configuration file both tools read: only fedora-messaging's keys."""
    return str(write_config(path, {"amqp_url": url, **data}))


FEDORA_HEADERS = {
    "fedora_messaging_schema": "base.message",
    "fedora_messaging_severity": 30,
    "sent-at": "2026-01-02T03:04:05+00:00",
    "priority": 5,
    "k": "v",
}


# --- files: fedora-messaging's recordings replayed by fedmq, and the reverse ----------


def test_a_fedora_messaging_recording_is_published_by_fedmq_as_fedora_messaging_publishes_it(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """fedora-messaging record's file, published by fedmq and by fedora-messaging:
    the same topics, body bytes, headers, ids, priority and content properties.
    """
    config = config_for(tmp_path / "config.toml", vhost)
    recording = tmp_path / "recorded.jsonl"
    recorder = start(
        [FEDORA_MESSAGING, "--conf", config, "record", str(recording), "--limit", "2",
         "--routing-key", "fm.#"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: consumer_count(rabbit_node, vhost_name) == 1, "its consumer", recorder)
        assert app_names(rabbit_node, vhost_name) == ["recorder"]
        properties = {"headers": FEDORA_HEADERS, "priority": 5, "content_encoding": "utf-8"}
        ids = publish(
            vhost,
            [("fm.one", {"n": 1, "text": "grüß"}, properties), ("fm.two", {"n": 2}, properties)],
        )
        status, _out, err = finish(recorder)
    finally:
        terminate(recorder)
    assert status == 0, err
    assert len(recording.read_text().splitlines()) == 2

    declare(vhost, queue="replayed", key="fm.#")
    ours = run([*FEDMQ, "publish", "--conf", config, str(recording)], cwd=tmp_path)
    assert ours.returncode == 0, ours.stderr
    assert "Published 2 messages to 'amq.topic'" in ours.stdout
    theirs = run([FEDORA_MESSAGING, "--conf", config, "publish", str(recording)], cwd=tmp_path)
    assert theirs.returncode == 0, theirs.stderr

    taken = take_all(vhost, "replayed")
    assert len(taken) == 4
    by_fedmq, by_fedora_messaging = taken[:2], taken[2:]
    assert [key for key, _, _ in by_fedmq] == ["fm.one", "fm.two"]
    assert [props.message_id for _, props, _ in by_fedmq] == ids
    # fedora-messaging's publish names the package of the base.message schema.
    sent_headers = {**FEDORA_HEADERS, "fedora_messaging_schema_package": "fedora_messaging"}
    assert [props.headers for _, props, _ in by_fedmq] == [sent_headers, sent_headers]
    for (key, ours_props, ours_body), (their_key, their_props, their_body) in zip(
        by_fedmq, by_fedora_messaging, strict=True
    ):
        assert (key, ours_body) == (their_key, their_body)
        for name in (
            "message_id", "headers", "priority", "content_type", "content_encoding",
            "delivery_mode",
        ):  # fmt: skip
            assert getattr(ours_props, name) == getattr(their_props, name), name


def test_a_fedmq_recording_is_published_by_fedora_messaging_to_its_consumers_unchanged(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """Fedmq record's file (written as fedora-messaging's recorder, app name
    included), published by fedora-messaging's publish: its consume sees the
    recorded ids, topics, bodies and headers.
    """
    config = config_for(tmp_path / "config.toml", vhost)
    recording = tmp_path / "recorded.jsonl"
    recorder = start(
        [*FEDMQ, "--conf", config, "record", str(recording), "--limit", "2",
         "--routing-key", "fq.#"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: consumer_count(rabbit_node, vhost_name) == 1, "its consumer", recorder)
        assert app_names(rabbit_node, vhost_name) == ["recorder"]  # fedora-messaging's default
        ids = publish(
            vhost,
            [
                ("fq.one", {"n": 1}, {"headers": {"k": "v"}, "priority": 2}),
                ("fq.two", {"n": 2, "list": [1, 2]}, {"headers": FEDORA_HEADERS, "priority": 5}),
            ],
        )
        status, _out, err = finish(recorder)
    finally:
        terminate(recorder)
    assert status == 0, err
    assert "recorded 2 messages" in err

    spec, seen = callback_file(tmp_path)
    consumer = start(
        [FEDORA_MESSAGING, "--conf", config, "consume", "--callback-file", spec,
         "--routing-key", "fq.#"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: consumer_count(rabbit_node, vhost_name) == 1, "its consumer", consumer)
        published = run(
            [FEDORA_MESSAGING, "--conf", config, "publish", str(recording)], cwd=tmp_path
        )
        assert published.returncode == 0, published.stdout + published.stderr
        wait_until(lambda: len(lines_of(seen)) == 2, "both messages", consumer)
    finally:
        terminate(consumer)
    first, second = lines_of(seen)
    assert [first["id"], second["id"]] == ids
    assert [first["topic"], second["topic"]] == ["fq.one", "fq.two"]
    assert [first["body"], second["body"]] == [{"n": 1}, {"n": 2, "list": [1, 2]}]
    assert first["headers"]["k"] == "v" and first["headers"]["priority"] == 2
    assert {key: second["headers"][key] for key in FEDORA_HEADERS} == FEDORA_HEADERS


def test_record_stops_at_a_body_its_format_cannot_hold_and_leaves_it_in_the_queue(
    broker, tmp_path, queue_name
):
    config = config_for(
        tmp_path / "config.toml",
        broker.url,
        queues={queue_name: {"durable": True, "auto_delete": False, "exclusive": False,
                             "arguments": {}}},
        bindings=[{"queue": queue_name, "exchange": "amq.topic", "routing_keys": ["odd.#"]}],
    )  # fmt: skip
    recording = tmp_path / "recorded.jsonl"
    recorder = start([*FEDMQ, "record", str(recording), "--conf", config], cwd=tmp_path)
    try:
        wait_until(lambda: _has_consumer(broker, queue_name), "its consumer", recorder)
        broker.publish("odd.list", [[1, 2]], exchange="amq.topic")
        status, _out, err = finish(recorder)
    finally:
        terminate(recorder)
    assert status == 2, err
    assert "is not a JSON object (list)" in err and "use --format fedmq" in err
    assert recording.read_text() == ""
    assert broker.counts(queue_name) == (1, 0)


def _has_consumer(broker, queue: str) -> bool:
    listed = broker.node.ctl("list_consumers", "--quiet", "--no-table-headers")
    return any(line.split("\t")[0] == queue for line in listed.splitlines())


# --- consume's flags: what the broker sees from both tools ------------------------------


def full_queue(durable: bool) -> dict[str, Any]:
    # fedora-messaging wants every key of a queue's table.
    return {"durable": durable, "auto_delete": False, "exclusive": False, "arguments": {}}


SCENARIOS = {
    "routing keys rebind the default queue": (
        {},
        ["--routing-key", "a.#", "--routing-key", "b.*"],
    ),
    "a queue name names the default queue": (
        {},
        ["--queue-name", "mine", "--exchange", "shop"],
    ),
    "routing keys and exchange rebind every configured queue": (
        {
            "queues": {"orders": full_queue(True), "audit": full_queue(False)},
            "bindings": [
                {"queue": "orders", "exchange": "amq.topic", "routing_keys": ["order.#"]},
                {"queue": "audit", "exchange": "amq.topic", "routing_keys": ["#"]},
            ],
        },
        ["--routing-key", "new.#", "--exchange", "shop"],
    ),
    "a queue name with configured bindings and no queues": (
        {"bindings": [{"queue": "", "exchange": "amq.topic", "routing_keys": ["x.#", "y"]}]},
        ["--queue-name", "renamed", "--routing-key", "z.#"],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_consume_flags_declare_what_fedora_messaging_declares_for_them(
    rabbit_node, vhost_name, second_vhost, tmp_path, scenario
):
    """The same configuration and flags (--conf before the command,
    --callback-file, --app-name, and the topology flags), given to
    fedora-messaging in one vhost and to fedmq in another: the same queues,
    with the same flags, the same bindings, the same application name.
    """
    data, flags = SCENARIOS[scenario]
    processes = {}
    spec, _ = callback_file(tmp_path)
    try:
        for tool, vhost, command in (
            ("fedora-messaging", vhost_name, [FEDORA_MESSAGING]),
            ("fedmq", second_vhost, FEDMQ),
        ):
            declare(rabbit_node.vhost_url(vhost), exchange="shop")
            config = config_for(tmp_path / f"{tool}.toml", rabbit_node.vhost_url(vhost), **data)
            processes[tool] = start(
                [*command, "--conf", config, "consume", "--callback-file", spec,
                 "--app-name", "parity", *flags],
                cwd=tmp_path,
            )  # fmt: skip
        expected_consumers = max(1, len(data.get("queues", {})))
        for tool, vhost in (("fedora-messaging", vhost_name), ("fedmq", second_vhost)):
            wait_until(
                lambda vhost=vhost: consumer_count(rabbit_node, vhost) == expected_consumers,
                f"{tool}'s consumers",
                processes[tool],
            )
        theirs = topology(rabbit_node, vhost_name)
        ours = topology(rabbit_node, second_vhost)
        assert ours == theirs
        assert app_names(rabbit_node, second_vhost) == app_names(rabbit_node, vhost_name)
        assert "parity" in app_names(rabbit_node, second_vhost)[0]
    finally:
        for process in processes.values():
            terminate(process)


def test_consume_runs_the_callback_of_a_callback_file(broker, rabbit_node, tmp_path):
    config = config_for(tmp_path / "config.toml", broker.url)
    spec, seen = callback_file(tmp_path, "from_a_file")
    consumer = start(
        [*FEDMQ, "consume", "--conf", config, "--callback-file", spec, "--routing-key", "cf.#"],
        cwd=tmp_path,
    )
    try:
        wait_until(
            lambda: "amq.gen-" in rabbit_node.ctl("list_consumers", "--quiet"), "a consumer",
            consumer,
        )  # fmt: skip
        ids = broker.publish("cf.hello", [{"from": "file"}], exchange="amq.topic")
        wait_until(lambda: lines_of(seen), "the callback's line", consumer)
    finally:
        terminate(consumer)
    (line,) = lines_of(seen)
    assert (line["id"], line["topic"], line["body"]) == (ids[0], "cf.hello", {"from": "file"})
