"""fedora-messaging's message classes, exceptions and global config, as a callback meets them.

Each test runs fedora-messaging itself (installed with the ``test`` extra)
and the schema classes of ``tests/fedora_schemas``, registered through a
``fedora.messages`` entry point.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import jsonschema
import jsonschema.exceptions
import pytest
import pytest_twisted
from fedmq_test_schemas import BuildFinishedV1, ReviewCommentV1
from fedora_messaging import config as fm_config
from fedora_messaging import exceptions as fm_exceptions
from fedora_messaging import message as fm_message
from twisted.internet import reactor

import fedmq
from fedmq._callback import load_callback
from fedmq._delivery import DROP, HALT, NACK, Delivery
from fedmq._executors import ThreadExecutor, run_async, run_sync
from fedmq.config import Config, config_from_mapping
from fedmq.message import Properties
from tests.unit.test_executors import Results

BUILD = {"build_id": 7, "package": "kernel", "owner": "alice", "succeeded": False}


def delivery(
    body: Any,
    headers: dict[str, Any] | None = None,
    topic: str = "fedmqtest.build.finished",
    tag: int = 1,
) -> Delivery:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    properties = Properties(
        content_type="application/json",
        content_encoding="utf-8",
        message_id=f"id-{tag}",
        headers=headers,
    )
    return Delivery(tag, True, "amq.topic", topic, properties, data, "builds")


def schema_headers(name: str = "fedmqtest.build.finished.v1", **more: Any) -> dict[str, Any]:
    return {"fedora_messaging_schema": name, "fedora_messaging_severity": 20, **more}


def deliver(item: tuple[Any, ...]) -> tuple[list[Any], tuple[Any, ...]]:
    """Run a recording callback on ``item`` as a worker thread does; (seen, result)."""
    seen: list[Any] = []
    result = run_sync(seen.append, item, schemas=True)  # type: ignore[arg-type]
    return seen, result


# --- schema classes ---------------------------------------------------------


def test_a_delivery_naming_a_registered_schema_reaches_the_callback_as_that_class():
    seen, result = deliver(delivery(BUILD, schema_headers()))
    [message] = seen
    assert isinstance(message, BuildFinishedV1)
    assert isinstance(message, fm_message.Message)
    assert message.summary == "alice's build 7 of kernel failed"
    assert message.usernames == ["alice"]
    assert message.packages == ["kernel"]
    assert message.agent_name == "alice"
    assert message.severity == 20
    assert message.containers == []
    assert str(message) == "Build 7 of kernel: alice's build 7 of kernel failed"
    assert message.body == BUILD
    assert result[1] == 0  # acked


def test_a_schema_class_instance_keeps_fedmqs_delivery_details():
    [message], _ = deliver(delivery(BUILD, schema_headers(**{"X-Processing-Exceptions": 2})))
    assert message.id == "id-1"
    assert message.topic == "fedmqtest.build.finished"
    assert message.queue == "builds"
    assert message.exchange == "amq.topic"
    assert message.delivery_tag == 1
    assert message.redelivered is True
    assert message.attempt == 3
    assert message.headers["fedora_messaging_schema"] == "fedmqtest.build.finished.v1"
    assert message.properties.content_encoding == "utf-8"
    assert message.data == json.dumps(BUILD).encode()
    assert isinstance(message.fedmq_message, fedmq.Message)


def test_an_async_callback_gets_the_schema_class_too():
    import asyncio

    seen: list[Any] = []

    async def record(message: Any) -> None:
        seen.append(message)

    item = delivery(BUILD, schema_headers())
    asyncio.run(run_async(record, item, schemas=True))  # type: ignore[arg-type]
    assert isinstance(seen[0], BuildFinishedV1)


@pytest.mark.parametrize(
    ("body", "headers", "reason"),
    [
        ({**BUILD, "build_id": "seven"}, schema_headers(), "'seven' is not of type 'integer'"),
        ({"build_id": 7}, schema_headers(), "'package' is a required property"),
        (["not", "an", "object"], schema_headers(), "is not of type 'object'"),
        (
            {"review": 1, "author": "bob", "text": "LGTM"},
            schema_headers("fedmqtest.review.comment.v1", fedora_messaging_severity=40),
            "40 is not one of [10, 20]",
        ),
    ],
    ids=["wrong-type", "missing-key", "not-an-object", "header-schema"],
)
def test_a_delivery_failing_its_schema_is_dropped_with_the_reason_before_the_callback(
    body: Any, headers: dict[str, Any], reason: str
):
    seen, result = deliver(delivery(body, headers))
    assert seen == []
    assert result[1] == DROP
    assert reason in str(result[2])
    # fedora-messaging refuses the same message: the verdicts agree.
    cls = fm_message.get_class(headers["fedora_messaging_schema"])
    properties = Properties(headers=headers, message_id="id-1")
    with pytest.raises(jsonschema.exceptions.ValidationError):
        cls(body=body, topic="t", properties=properties).validate()


def test_a_schema_the_registry_lacks_reaches_the_callback_as_a_plain_message_with_one_warning(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.WARNING, logger="fedmq")
    headers = schema_headers("nobody.registered.this.v1")
    first, _ = deliver(delivery({"a": 1}, headers))
    second, _ = deliver(delivery({"a": 2}, headers, tag=2))
    assert type(first[0]) is fedmq.Message and type(second[0]) is fedmq.Message
    warnings = [r for r in caplog.records if "nobody.registered.this.v1" in r.getMessage()]
    assert len(warnings) == 1


def test_a_message_of_the_base_schema_reaches_the_callback_as_a_plain_message():
    [message], _ = deliver(delivery({"a": 1}, schema_headers("base.message")))
    assert type(message) is fedmq.Message
    assert message.summary == message.topic


def test_a_plain_message_answers_every_base_class_attribute_as_fedora_messaging_does():
    headers = {"fedora_messaging_severity": 30, "k": "v"}
    [message], _ = deliver(delivery({"x": [1, 2]}, headers, topic="some.topic"))
    theirs = fm_message.Message(
        body={"x": [1, 2]},
        topic="some.topic",
        properties=Properties(headers=headers, message_id="id-1"),
        severity=30,
    )
    for name in (
        "summary",
        "severity",
        "url",
        "app_name",
        "app_icon",
        "agent_name",
        "agent_avatar",
        "usernames",
        "groups",
        "packages",
        "containers",
        "modules",
        "flatpaks",
    ):
        assert getattr(message, name) == getattr(theirs, name), name
    assert str(message) == str(theirs)


def test_a_plain_message_without_a_severity_header_has_info():
    [message], _ = deliver(delivery({"x": 1}))
    assert message.severity == fm_message.INFO


# --- exceptions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "outcome", "fedmq_type"),
    [
        (fm_exceptions.Nack(), NACK, fedmq.Nack),
        (fm_exceptions.Drop(), DROP, fedmq.Drop),
        (fm_exceptions.ValidationError("bad"), DROP, fedmq.Drop),
        (fm_exceptions.HaltConsumer(3, "disk full", True), HALT, fedmq.HaltConsumer),
    ],
    ids=["Nack", "Drop", "ValidationError", "HaltConsumer"],
)
def test_fedora_messaging_exceptions_raised_by_a_callback_are_fedmq_outcomes(
    raised: Exception, outcome: int, fedmq_type: type[Exception]
):
    def callback(message: Any) -> None:
        raise raised

    result = run_sync(callback, delivery({"a": 1}), schemas=True)
    assert result[1] == outcome
    assert isinstance(result[2], fedmq_type)
    assert result[2].__cause__ is raised


def test_fedora_messaging_halt_consumer_keeps_its_exit_code_reason_and_requeue():
    def callback(message: Any) -> None:
        raise fm_exceptions.HaltConsumer(exit_code=3, reason="disk full", requeue=True)

    halt = run_sync(callback, delivery({"a": 1}))[2]
    assert isinstance(halt, fedmq.HaltConsumer)
    assert (halt.exit_code, halt.reason, halt.requeue) == (3, "disk full", True)


# --- the global configuration -----------------------------------------------


class ReadsTheGlobalConfig:
    """A callback class as written for fedora-messaging: no argument, reads the global."""

    def __init__(self) -> None:
        self.directory = fm_config.conf["consumer_config"]["directory"]
        self.prefix = fm_config.conf["topic_prefix"]

    def __call__(self, message: Any) -> None:
        pass


def test_a_class_reading_fedora_messagings_global_config_finds_fedmqs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, fm_global_conf: Any
):
    # fedora-messaging's own file, if it read one, would say otherwise.
    own = tmp_path / "fm.toml"
    own.write_text('topic_prefix = "wrong"\n[consumer_config]\ndirectory = "/wrong"\n')
    monkeypatch.setenv("FEDORA_MESSAGING_CONF", str(own))
    monkeypatch.setattr(fm_config.conf, "loaded", False)
    config = config_from_mapping(
        {
            "topic_prefix": "org.example",
            "publish_priority": 4,
            "consumer_config": {"directory": "/srv/archive", "nested": {"a": [1]}},
            "queues": {"q": {"durable": False}},
            "bindings": [{"queue": "q", "exchange": "amq.topic", "routing_keys": ["a.#"]}],
        }
    )
    callback, _ = load_callback(ReadsTheGlobalConfig, config.consumer_config, config=config)
    assert callback.directory == "/srv/archive"  # type: ignore[attr-defined]
    assert callback.prefix == "org.example"  # type: ignore[attr-defined]
    assert fm_config.conf["publish_priority"] == 4
    assert fm_config.conf["consumer_config"]["nested"] == {"a": [1]}
    assert fm_config.conf["queues"]["q"]["durable"] is False
    assert fm_config.conf["bindings"] == [
        {"queue": "q", "exchange": "amq.topic", "routing_keys": ["a.#"]}
    ]
    fm_config.conf._validate()  # fedora-messaging's own check of its config accepts it


def test_a_deprecated_class_is_warned_about_once_not_per_message(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.WARNING, logger="fedmq")
    headers = schema_headers("fedmqtest.build.finished.v0")
    for tag in range(1, 4):
        [message], _ = deliver(delivery({"build_id": tag}, headers, tag=tag))
        assert type(message).__name__ == "BuildFinishedV0"
    warnings = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    assert len(warnings) == 1
    assert "fedmqtest.build.finished.v0" in warnings[0]


def test_a_message_without_schema_or_severity_headers_is_handed_over_without_a_log_line(
    caplog: pytest.LogCaptureFixture,
):
    caplog.set_level(logging.DEBUG)
    [message], result = deliver(delivery({"a": 1}))
    assert result[1] == 0 and message.body == {"a": 1}
    assert caplog.records == []


def test_a_class_schemas_are_compiled_once_not_for_each_message(monkeypatch: pytest.MonkeyPatch):
    compiled: list[Any] = []
    check_schema = jsonschema.Draft4Validator.check_schema  # compiling starts with this check

    def counting(cls: Any, schema: Any, *args: Any, **kwargs: Any) -> Any:
        compiled.append(schema)
        return check_schema(schema, *args, **kwargs)

    monkeypatch.setattr(jsonschema.Draft4Validator, "check_schema", classmethod(counting))
    headers = schema_headers("fedmqtest.review.comment.v1")
    deliver(delivery(COMMENT, headers))  # the first message of the class may compile
    compiled.clear()
    for tag in range(2, 52):
        [message], _ = deliver(delivery(COMMENT, headers, tag=tag))
        assert isinstance(message, ReviewCommentV1)
    assert compiled == []


COMMENT = {"review": 4, "author": "bob", "text": "LGTM", "reviewers": ["dave"]}


@pytest.mark.parametrize(
    ("decode", "delivered_as"), [(True, "BuildFinishedV1"), (False, "Message")]
)
@pytest_twisted.ensureDeferred
async def test_a_consumers_executor_hands_over_classes_only_with_decoding_on(
    decode: bool, delivered_as: str
):
    seen: list[Any] = []
    results = Results()
    executor = ThreadExecutor(seen.append, 1, reactor, results, decode=Config(decode=decode).decode)
    executor.submit(delivery(BUILD, schema_headers()))  # type: ignore[arg-type]
    await results.when(1)
    await executor.stop_intake()
    await executor.join()
    assert type(seen[0]).__name__ == delivered_as


WITHOUT_FEDORA_MESSAGING = """
import json, sys
sys.modules["fedora_messaging"] = None  # as if it were not installed: importing it fails
import fedmq
from fedmq import _fedora
from fedmq._callback import load_callback
from fedmq._delivery import DROP, Delivery
from fedmq._executors import run_sync
from fedmq._publisher import wire_form
from fedmq.config import config_from_mapping
from fedmq.message import Properties

config = config_from_mapping({"topic_prefix": "p", "consumer_config": {"a": 1}})

class Callback:
    def __init__(self, consumer_config):
        self.settings = consumer_config
    def __call__(self, message):
        raise fedmq.Drop("no")

callback, _ = load_callback(Callback, config.consumer_config, config=config)
headers = {"fedora_messaging_schema": "fedmqtest.build.finished.v1"}
properties = Properties(content_type="application/json", headers=headers, message_id="m")
item = Delivery(1, False, "", "t", properties, json.dumps({"build_id": "x"}).encode(), "q")
seen = []
run_sync(seen.append, item, schemas=False)
result = run_sync(callback, item)
key, _, sent = wire_form(fedmq.Message({"a": 1}, topic="t"), config)
print(json.dumps([
    type(seen[0]).__name__, seen[0].summary, result[1] == DROP, callback.settings,
    key, sent.headers["fedora_messaging_schema"], _fedora.installed(),
]))
"""


def test_fedmq_consumes_and_publishes_without_fedora_messaging_installed():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_FEDORA_MESSAGING],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ["Message", "t", True, {"a": 1}, "p.t", "base.message", False]
