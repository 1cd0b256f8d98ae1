"""Every ``fedmq`` command against the suite's broker, and the mistakes users make."""

from __future__ import annotations

import json
import signal
import uuid

import pytest

from tests.helpers import free_port, one_line
from tests.integration.processes import (
    CALLBACKS,
    RUNNERS,
    fedmq,
    finish,
    start,
    terminate,
    wait_until,
    write_config,
)


def config_file(tmp_path, url, **data):
    return str(write_config(tmp_path / "config.toml", {"amqp_url": url, **data}))


def assert_no_traceback(result, name):
    for sign in ("Traceback", "Unhandled error"):
        assert sign not in result.stderr, (name, result.stderr)


# --- publish and get ------------------------------------------------------------


def test_publish_sends_one_message_with_headers_and_waits_for_the_confirm(
    broker, tmp_path, queue_name
):
    broker.declare_queue(queue_name)
    config = config_file(tmp_path, broker.url)
    result = fedmq(
        "publish", "--config", config, "--exchange", "", "--routing-key", queue_name,
        "--header", "source=cli", "--body", '{"order": 42}',
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Published 1 message" in result.stdout
    assert broker.drain(queue_name) == [{"order": 42}]


def test_publish_reads_the_body_from_standard_input(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    config = config_file(tmp_path, broker.url)
    result = fedmq(
        "publish", "-c", config, "--exchange", "", "--routing-key", queue_name,
        "--content-type", "text/plain", "--body", "-",
        cwd=tmp_path, input="hello from stdin",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert broker.drain(queue_name, raw=True) == [b"hello from stdin"]


def test_publish_with_mandatory_and_no_queue_exits_8(broker, tmp_path):
    config = config_file(tmp_path, broker.url)
    result = fedmq(
        "publish", "-c", config, "--exchange", "amq.topic", "--routing-key", "nobody.listens",
        "--mandatory", "--body", "{}",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 8, result.stderr
    assert "could not route" in one_line(result)


def test_publish_of_a_body_that_is_not_json_exits_2(broker, tmp_path):
    config = config_file(tmp_path, broker.url)
    result = fedmq(
        "publish", "-c", config, "--exchange", "", "--routing-key", "x", "--body", "not json",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "not valid JSON" in one_line(result)


def test_get_prints_json_lines_and_acks(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    ids = broker.publish(queue_name, [{"n": 1}, {"n": 2}, {"n": 3}], headers={"h": "v"})
    config = config_file(tmp_path, broker.url)
    result = fedmq("get", "-c", config, "--queue", queue_name, "--count", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["body"] for r in records] == [{"n": 1}, {"n": 2}]
    assert [r["properties"]["message_id"] for r in records] == ids[:2]
    assert records[0]["headers"] == {"h": "v"}
    assert records[0]["queue"] == queue_name
    assert broker.counts(queue_name) == (1, 0)


def test_get_with_requeue_leaves_the_messages_in_order(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}, {"n": 2}])
    config = config_file(tmp_path, broker.url)
    result = fedmq("get", "-c", config, "-q", queue_name, "-n", "5", "--requeue", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert broker.drain(queue_name) == [{"n": 1}, {"n": 2}]


def test_get_from_an_empty_queue_says_so_and_exits_0(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    config = config_file(tmp_path, broker.url)
    result = fedmq("get", "-c", config, "-q", queue_name, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout == ""
    assert "is empty" in result.stderr


def test_get_from_a_missing_queue_exits_3_naming_it(broker, tmp_path, queue_name):
    config = config_file(tmp_path, broker.url)
    result = fedmq("get", "-c", config, "-q", queue_name, cwd=tmp_path)
    assert result.returncode == 3
    line = one_line(result)
    assert queue_name in line and "404" in line


# --- record and replay ----------------------------------------------------------


def test_record_then_publish_file_replays_topics_headers_properties_and_bodies(
    broker, tmp_path, queue_name
):
    """What record --format fedmq writes, publish sends again: same topics,
    headers, message ids and bodies, JSON, text and binary alike.
    """
    config = config_file(tmp_path, broker.url)
    recording = tmp_path / "recorded.jsonl"
    topic = f"{queue_name}.orders"
    process = start(
        [*RUNNERS["fedmq consume"][:-1], "record", str(recording), "-c", config,
         "--format", "fedmq", "--queue-name", queue_name, "--routing-key", f"{queue_name}.#",
         "--replace-topology", "--limit", "3"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: _exists(broker, queue_name), "record to declare its queue", process)
        ids = broker.publish(topic, [{"n": 1}], exchange="amq.topic", headers={"k": "v"})
        ids += broker.publish(
            topic, [b"plain text"], exchange="amq.topic", content_type="text/plain"
        )
        ids += broker.publish(
            topic,
            [b"\x00\xff binary"],
            exchange="amq.topic",
            content_type="application/octet-stream",
        )
        status, _out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    assert "recorded 3 messages" in err
    lines = recording.read_text().splitlines()
    assert len(lines) == 3
    assert broker.counts(queue_name) == (0, 0)

    replayed = fedmq(
        "publish", "-c", config, "--file", str(recording), "--exchange", "", "--routing-key",
        queue_name,
        cwd=tmp_path,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    assert "Published 3 messages" in replayed.stdout
    got = fedmq("get", "-c", config, "-q", queue_name, "-n", "5", cwd=tmp_path)
    records = [json.loads(line) for line in got.stdout.splitlines()]
    assert [r["properties"]["message_id"] for r in records] == ids
    assert records[0]["body"] == {"n": 1}
    # A JSON object body goes out with what fedora-messaging consumers need, too.
    headers = records[0]["headers"]
    assert headers.pop("fedora_messaging_schema") == "base.message"
    assert headers.pop("fedora_messaging_severity") == 20
    assert headers.pop("sent-at")
    assert headers == {"k": "v"}
    assert records[1]["body"] == "plain text"
    assert records[2]["body_base64"] == "AP8gYmluYXJ5"

    # Without --exchange and --routing-key, each record goes where it came
    # from: amq.topic, with its topic, which the recorded queue is bound to.
    again = fedmq("publish", "-c", config, str(recording), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert broker.counts(queue_name) == (3, 0)


def _exists(broker, queue):
    try:
        broker.ready(queue)
    except Exception:
        return False
    return True


def test_publish_file_with_a_bad_line_names_the_line_and_publishes_nothing(
    broker, tmp_path, queue_name
):
    broker.declare_queue(queue_name)
    records = tmp_path / "records.jsonl"
    records.write_text('{"topic": "a", "body": {}}\n{"topic": "b", "bdy": {}}\n')
    config = config_file(tmp_path, broker.url)
    result = fedmq(
        "publish", "-c", config, "--file", str(records), "--exchange", "", "--routing-key",
        queue_name,
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"{records}:2" in one_line(result) and "bdy" in result.stderr
    assert broker.counts(queue_name) == (0, 0)


# --- consume's own options -------------------------------------------------------


def test_consume_replace_topology_consumes_the_named_queue_instead_of_the_configured_ones(
    broker, tmp_path, queue_name
):
    log = tmp_path / "events.log"
    config = config_file(
        tmp_path,
        broker.url,
        callback=f"{CALLBACKS}:Halt",
        consumer_config={"log": str(log), "exit_code": 0},
        queues={"not-this-one": {}},
    )
    process = start(
        [*RUNNERS["fedmq consume"], "-c", config, "--queue-name", queue_name,
         "--routing-key", "cli.#", "--app-name", "cli-test", "--replace-topology"],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        wait_until(lambda: _exists(broker, queue_name), "the queue", process)
        assert not _exists(broker, "not-this-one")
        broker.publish("cli.hello", [{"n": 1}], exchange="amq.topic")
        status, _out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    assert log.read_text().startswith("done ")


def test_consume_without_a_queue_name_uses_a_server_named_queue_that_goes_away(
    broker, rabbit_node, tmp_path
):
    """The queue is the broker's server-named one, bound with the routing key; the message
    is printed; and once the process exits the queue no longer exists.
    """
    routing_key = f"anon-{uuid.uuid4().hex[:8]}"
    config = config_file(tmp_path, broker.url, callback="fedmq.example:printer")
    process = start(
        [*RUNNERS["fedmq consume"], "-c", config, "--routing-key", f"{routing_key}.#"],
        cwd=tmp_path,
    )

    def bound_queue():
        listing = rabbit_node.ctl(
            "list_bindings", "--quiet", "--no-table-headers", "destination_name", "routing_key"
        )
        for line in listing.splitlines():
            destination, _, key = line.rpartition("\t")
            if key == f"{routing_key}.#":
                return destination
        return None

    try:
        queue = wait_until(bound_queue, "a queue bound with the routing key", process)
        assert queue.startswith("amq.gen-")
        broker.publish(f"{routing_key}.x", [{"hello": "anonymous"}], exchange="amq.topic")
        wait_until(
            lambda: broker.counts(queue) == (0, 0) and broker.consumers(queue), "the ack", process
        )
        process.send_signal(signal.SIGINT)
        status, out, err = finish(process)
    finally:
        terminate(process)
    assert status == 0, err
    assert "anonymous" in out
    with pytest.raises(LookupError):
        broker.counts(queue)


def test_consume_with_an_empty_queues_table_exits_2(broker, tmp_path):
    config = config_file(tmp_path, broker.url, callback="fedmq.example:printer", queues={})
    result = fedmq("consume", "-c", config, cwd=tmp_path)
    assert result.returncode == 2
    assert "the queues table is empty, so there is nothing to consume" in one_line(result)


# --- errors every command shares ----------------------------------------------------


COMMANDS = {
    "consume": ["consume", "--queue-name", "q"],
    "publish": ["publish", "--exchange", "", "--routing-key", "q", "--body", "{}"],
    "get": ["get", "--queue", "q"],
    "record": ["record", "out.jsonl", "--queue-name", "q"],
}


def test_every_command_with_a_missing_config_exits_2(tmp_path):
    for name, args in COMMANDS.items():
        result = fedmq(*args, "--config", str(tmp_path / "absent.toml"), cwd=tmp_path)
        assert result.returncode == 2, name
        assert one_line(result) == f"fedmq: config file {tmp_path / 'absent.toml'} does not exist"


def test_every_command_with_an_unknown_key_exits_2(broker, tmp_path):
    config = config_file(tmp_path, broker.url, callback="fedmq.example:printer", colour="blue")
    for name, args in COMMANDS.items():
        result = fedmq(*args, "--config", config, cwd=tmp_path)
        assert result.returncode == 2, name
        assert "unknown key colour" in one_line(result), name


def test_every_command_with_an_unreachable_broker_exits_7(tmp_path):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    config = write_config(
        tmp_path / "config.toml",
        {"amqp_url": url, "callback": "fedmq.example:printer", "reconnect": {"max_attempts": 1}},
    )
    for name, args in COMMANDS.items():
        result = fedmq(*args, "--config", str(config), cwd=tmp_path)
        assert result.returncode == 7, (name, result.stderr)
        assert "connection refused" in result.stderr, name
        assert_no_traceback(result, name)


def test_every_command_with_a_wrong_password_exits_4(broker, tmp_path):
    url = broker.url.replace("guest:guest@", "guest:s3cret-wrong@")
    config = config_file(
        tmp_path, url, callback="fedmq.example:printer", reconnect={"max_attempts": 1}
    )
    for name, args in COMMANDS.items():
        result = fedmq(*args, "--config", config, cwd=tmp_path)
        assert result.returncode == 4, (name, result.stderr)
        assert "refused the credentials" in result.stderr, name
        assert "s3cret" not in result.stdout + result.stderr, name
        assert_no_traceback(result, name)


def test_check_config_accepts_a_good_file_and_names_the_problem_in_a_bad_one(tmp_path):
    good = write_config(tmp_path / "good.toml", {"callback": "fedmq.example:printer"})
    result = fedmq("check-config", str(good), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(good) in result.stdout
    bad = write_config(tmp_path / "bad.toml", {"concurrency": "four"})
    result = fedmq("check-config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "concurrency" in one_line(result) and str(bad) in result.stderr


def test_every_command_has_help(tmp_path):
    for name in ["consume", "publish", "get", "record", "check-config"]:
        result = fedmq(name, "--help", cwd=tmp_path)
        assert result.returncode == 0, name
        assert result.stdout.startswith(f"usage: fedmq {name}"), name
