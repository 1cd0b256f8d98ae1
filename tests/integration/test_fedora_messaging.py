"""fedmq and fedora-messaging exchanging messages on the real broker, both ways.

fedora-messaging runs as itself: its ``fedora-messaging consume`` command and
its ``api.publish``, in subprocesses configured through
``FEDORA_MESSAGING_CONF``, against a vhost made for the test.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pika
import pytest
import pytest_twisted
from fedmq_test_schemas import BuildFinishedV1, ReviewCommentV1
from twisted.internet import threads

import fedmq
from fedmq.config import config_from_mapping
from tests.integration.conftest import wait_for
from tests.integration.processes import RUNNERS, environment, finish, start, write_config

BIN = Path(sys.executable).parent
BUILD = {"build_id": 12, "package": "kernel", "owner": "alice", "succeeded": False}
COMMENT = {"review": 4, "author": "bob", "text": "LGTM", "reviewers": ["dave"]}
QUEUE = "fm-compat"

#: fedora-messaging's log, one "LEVEL logger: message" line each, to standard error.
LOG_CONFIG = """
[log_config]
version = 1
disable_existing_loggers = false
[log_config.formatters.plain]
format = "%(levelname)s %(name)s: %(message)s"
[log_config.handlers.console]
class = "logging.StreamHandler"
formatter = "plain"
stream = "ext://sys.stderr"
[log_config.root]
level = "DEBUG"
handlers = ["console"]
"""


def fedora_messaging_config(path: Path, url: str, routing_key: str, **consumer: Any) -> Path:
    """A fedora-messaging config.toml: one queue bound to amq.topic, and its log config."""
    consumer_config = "".join(f"{key} = {json.dumps(value)}\n" for key, value in consumer.items())
    path.write_text(
        f"amqp_url = {json.dumps(url)}\n"
        'topic_prefix = "org.example"\n'
        'callback = "tests.integration.fedora_callbacks:Recorder"\n'
        f'[[bindings]]\nqueue = {json.dumps(QUEUE)}\nexchange = "amq.topic"\n'
        f"routing_keys = [{json.dumps(routing_key)}]\n"
        f"[queues.{json.dumps(QUEUE)}]\n"
        "durable = true\nauto_delete = false\nexclusive = false\narguments = {}\n"
        f"[consumer_config]\n{consumer_config}" + LOG_CONFIG
    )
    return path


def complaints(log: str) -> list[str]:
    """fedora-messaging's log lines at WARNING or above."""
    return [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR", "CRITICAL"))]


def run_fedora_messaging(
    args: list[str], conf: Path, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        env=environment(FEDORA_MESSAGING_CONF=str(conf)),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        **kwargs,
    )


def declare_bound_queue(url: str, routing_key: str) -> None:
    """The queue fedora-messaging's config declares, declared the same way beforehand."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True, arguments={})
    channel.queue_bind(QUEUE, "amq.topic", routing_key)
    connection.close()


# --- fedmq publishes, fedora-messaging consumes ---------------------------------


@pytest_twisted.ensureDeferred
async def test_fedora_messagings_consumer_takes_every_message_fedmq_publishes_without_complaint(
    vhost: str, tmp_path: Path
):
    declare_bound_queue(vhost, "org.example.#")
    config = config_from_mapping({"amqp_url": vhost, "topic_prefix": "org.example"})
    published = [
        fedmq.Message({"plain": "dict"}, topic="plain.dict"),
        fedmq.Message({"nested": {"list": [1, 2]}, "n": 1.5}, topic="plain.nested"),
        fedmq.Message(
            {"severe": True}, topic="plain.severe", headers={"fedora_messaging_severity": 40}
        ),
        BuildFinishedV1(body=BUILD),
        ReviewCommentV1(body=COMMENT, severity=10),
    ]
    for message in published:
        await fedmq.publish(message, config=config)
    output = tmp_path / "seen.jsonl"
    conf = fedora_messaging_config(
        tmp_path / "fm.toml", vhost, "org.example.#", output=str(output), count=len(published)
    )
    done = await threads.deferToThread(
        run_fedora_messaging, [str(BIN / "fedora-messaging"), "consume"], conf
    )
    assert done.returncode == 0, done.stderr
    # Its log was captured (one line per message at INFO), with nothing above INFO.
    assert done.stderr.count("Consuming message from topic") == len(published)
    assert complaints(done.stderr) == []
    seen = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["class"] for record in seen] == [
        "Message",
        "Message",
        "Message",
        "BuildFinishedV1",
        "ReviewCommentV1",
    ]
    assert [record["topic"] for record in seen] == [
        "org.example.plain.dict",
        "org.example.plain.nested",
        "org.example.plain.severe",
        "org.example.fedmqtest.build.finished",
        "org.example.fedmqtest.review.comment",
    ]
    assert [record["body"] for record in seen[:3]] == [m.body for m in published[:3]]
    assert [record["severity"] for record in seen] == [20, 20, 40, 20, 10]
    assert seen[3]["summary"] == "alice's build 12 of kernel failed"
    assert seen[3]["usernames"] == ["alice"] and seen[3]["packages"] == ["kernel"]
    assert seen[4]["usernames"] == ["bob", "dave"]
    assert [record["id"] for record in seen[3:]] == [published[3].id, published[4].id]


@pytest_twisted.ensureDeferred
async def test_a_topic_prefix_is_joined_with_a_dot_on_the_broker(broker, queue_name):
    broker.declare_queue(queue_name)
    broker.bind(queue_name, "amq.topic", "org.fedoraproject.prod.bodhi.update")
    config = config_from_mapping({"amqp_url": broker.url, "topic_prefix": "org.fedoraproject.prod"})
    await fedmq.publish(fedmq.Message({"n": 1}, topic="bodhi.update"), config=config)
    assert broker.drain(queue_name) == [{"n": 1}]


# --- fedora-messaging publishes, fedmq consumes ---------------------------------

PUBLISHER = """
from fedora_messaging import api, message
from fedmq_test_schemas import BuildFinishedV1, ReviewCommentV1

api.publish(BuildFinishedV1(body={build!r}))
api.publish(ReviewCommentV1(body={comment!r}, severity=message.DEBUG))
api.publish(message.Message(body={{"free": "form"}}, topic="misc.thing"))
"""


@pytest_twisted.ensureDeferred
async def test_fedmq_hands_messages_fedora_messaging_publishes_to_the_callback_as_their_classes(
    vhost: str, tmp_path: Path
):
    config = config_from_mapping(
        {
            "amqp_url": vhost,
            "queues": {QUEUE: {"durable": True}},
            "bindings": [
                {"queue": QUEUE, "exchange": "amq.topic", "routing_keys": ["org.example.#"]}
            ],
        }
    )
    seen: list[Any] = []
    consumer = await fedmq.consume(seen.append, config=config)
    conf = fedora_messaging_config(tmp_path / "fm.toml", vhost, "org.example.#", output="", count=0)
    script = PUBLISHER.format(build=BUILD, comment=COMMENT)
    done = await threads.deferToThread(run_fedora_messaging, [sys.executable, "-c", script], conf)
    assert done.returncode == 0, done.stderr
    await wait_for(lambda: len(seen) == 3, what="three messages")
    await consumer.cancel()
    build, comment, plain = seen
    assert isinstance(build, BuildFinishedV1)
    assert build.summary == "alice's build 12 of kernel failed"
    assert build.packages == ["kernel"] and build.usernames == ["alice"]
    assert str(build) == "Build 12 of kernel: alice's build 12 of kernel failed"
    assert build.topic == "org.example.fedmqtest.build.finished"
    assert (build.queue, build.exchange, build.attempt, build.redelivered) == (
        QUEUE,
        "amq.topic",
        1,
        False,
    )
    assert isinstance(build.delivery_tag, int)
    assert isinstance(comment, ReviewCommentV1)
    assert comment.severity == 10 and comment.usernames == ["bob", "dave"]
    assert type(plain) is fedmq.Message
    assert plain.body == {"free": "form"} and plain.summary == "org.example.misc.thing"
    assert consumer.counts["acked"] == 3


# --- validation, exceptions and the global config, on fedmq's consumer ----------


def dead_lettered_config(broker: Any, make_config: Any, queue_name: str) -> Any:
    """``queue_name`` and its dead-letter queue, declared; a config consuming it."""
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{queue_name}.dlq"}
    broker.declare_queue(f"{queue_name}.dlq")
    broker.declare_queue(queue_name, **arguments)
    return make_config(queues={queue_name: {"durable": True, "arguments": arguments}})


@pytest_twisted.ensureDeferred
async def test_a_message_failing_its_schema_is_dropped_to_the_dead_letter_queue_and_logged(
    broker, queue_name, make_config, caplog
):
    caplog.set_level(logging.INFO, logger="fedmq")
    config = dead_lettered_config(broker, make_config, queue_name)
    headers = {"fedora_messaging_schema": "fedmqtest.build.finished.v1"}
    [bad_id] = broker.publish(queue_name, [{**BUILD, "build_id": "twelve"}], headers=headers)
    broker.publish(queue_name, [BUILD], headers=headers)
    seen: list[Any] = []
    consumer = await fedmq.consume(seen.append, config=config)
    await wait_for(lambda: seen and consumer.counts["dropped"] == 1, what="one drop, one message")
    await consumer.cancel()
    assert [message.body for message in seen] == [BUILD]
    assert broker.drain(f"{queue_name}.dlq") == [{**BUILD, "build_id": "twelve"}]
    [record] = [r for r in caplog.records if bad_id in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "fails the 'fedmqtest.build.finished.v1' schema at 'build_id'" in record.getMessage()
    assert "'twelve' is not of type 'integer'" in record.getMessage()


@pytest_twisted.ensureDeferred
async def test_fedora_messagings_drop_sends_the_message_to_the_dead_letter_queue(
    broker, queue_name, make_config
):
    from tests.integration.fedora_callbacks import drop_it

    config = dead_lettered_config(broker, make_config, queue_name)
    broker.publish(queue_name, [{"n": 1}])
    consumer = await fedmq.consume(drop_it, config=config)
    await wait_for(lambda: consumer.counts["dropped"] == 1, what="the drop")
    await consumer.cancel()
    assert broker.drain(f"{queue_name}.dlq") == [{"n": 1}]


@pytest_twisted.ensureDeferred
async def test_a_fedora_messaging_callback_class_reads_fedmqs_config_and_halts_with_its_exception(
    broker, queue_name, make_config, tmp_path
):
    from tests.integration.fedora_callbacks import Recorder

    output = tmp_path / "seen.jsonl"
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": n} for n in range(3)])
    config = make_config(consumer_config={"output": str(output), "count": 2})
    consumer = await fedmq.consume(Recorder, config=config)
    await consumer.result  # fedora-messaging's HaltConsumer(exit_code=0) is a normal stop
    seen = [json.loads(line) for line in output.read_text().splitlines()]
    assert [record["body"] for record in seen] == [{"n": 0}, {"n": 1}]
    assert broker.ready(queue_name) == 1  # the third goes back to the queue


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_the_fedmq_service_fills_fedora_messagings_config_for_a_callback_class(
    runner, broker, queue_name, tmp_path
):
    output = tmp_path / "seen.jsonl"
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"n": 1}])
    config = write_config(
        tmp_path / "config.toml",
        {
            "amqp_url": broker.url,
            "callback": "tests.integration.fedora_callbacks:Recorder",
            "queues": {queue_name: {"durable": True}},
            "consumer_config": {"output": str(output), "count": 1},
        },
    )
    # fedora-messaging's own file, were it read, would not have the settings.
    process = start(
        [*RUNNERS[runner], "--config", str(config)],
        cwd=tmp_path,
        FEDORA_MESSAGING_CONF=str(tmp_path / "absent.toml"),
    )
    status, _out, err = finish(process)
    assert status == 0, err
    [record] = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["body"] == {"n": 1} and record["queue"] == queue_name
