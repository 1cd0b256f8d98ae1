"""The two file formats of ``fedmq record`` and ``fedmq publish``: fedmq's own,
and fedora-messaging's, checked against fedora-messaging's own reader and writer.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

import pytest
from fedora_messaging import message as fm_message

from fedmq._records import (
    FEDMQ_FORMAT,
    FEDORA_FORMAT,
    UsageError,
    detect_format,
    dump_record,
    fedora_record,
    message_from_fedora_record,
    message_from_record,
    message_record,
    parse_lines,
)
from fedmq.message import Message, Properties

# --- fedmq's format ------------------------------------------------------------------


def record_of(body: bytes, content_type: str | None, **props: Any) -> dict[str, Any]:
    properties = Properties(content_type=content_type, **props)
    return json.loads(dump_record(message_record("a.b", "amq.topic", properties, body)))


def test_a_json_body_is_recorded_decoded_and_replays_to_the_same_message():
    record = record_of(b'{"n": 1}', "application/json", message_id="m1", timestamp=7)
    assert record == {
        "topic": "a.b",
        "exchange": "amq.topic",
        "headers": {},
        "properties": {"content_type": "application/json", "message_id": "m1", "timestamp": 7},
        "body": {"n": 1},
    }
    message, exchange, topic = message_from_record(json.dumps(record), "f:1")
    assert (exchange, topic) == ("amq.topic", "a.b")
    assert message.body == {"n": 1}
    assert (message.id, message.properties.timestamp) == ("m1", 7)


def test_a_text_body_is_recorded_as_a_string():
    record = record_of("grüß".encode(), "text/plain; charset=utf-8")
    assert record["body"] == "grüß"
    message, _, _ = message_from_record(json.dumps(record), "f:1")
    assert message.data == "grüß".encode()


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"\x00\xff", "application/octet-stream"), (b"{broken", "application/json"), (b"", None)],
)
def test_other_bodies_are_recorded_in_base64_and_replay_byte_for_byte(data, content_type):
    record = record_of(data, content_type)
    assert "body" not in record
    assert base64.b64decode(record["body_base64"]) == data
    if content_type != "application/json":  # an invalid JSON body cannot be sent as JSON
        message, _, _ = message_from_record(json.dumps(record), "f:1")
        assert message.data == data


def test_header_values_json_has_no_type_for_are_written_as_strings():
    props = Properties(
        content_type="application/json",
        headers={
            "when": datetime.datetime(2024, 5, 1, 12, 0),  # noqa: DTZ001 - naive, as recorded
            "price": decimal.Decimal("1.50"),
            "raw": b"\xff\x00",
            "text": b"plain",
        },
    )
    record = json.loads(dump_record(message_record("t", None, props, b"1")))
    assert record["headers"] == {
        "when": "2024-05-01T12:00:00",
        "price": "1.50",
        "raw": "/wA=",
        "text": "plain",
    }
    assert "exchange" not in record


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("{not json", "f:3: not valid JSON"),
        ("[1, 2]", "f:3: expected a JSON object, got list"),
        ('{"topic": "t", "bdy": 1}', "f:3: unknown key 'bdy'"),
        ('{"topic": 5}', "f:3: topic must be a string"),
        ('{"headers": [1]}', "f:3: headers must be an object"),
        ('{"properties": {"colour": "red"}}', "f:3: 'colour' is not an AMQP message property"),
        ('{"properties": {"headers": {}}}', "f:3: headers go in the record's own"),
        ('{"body": 1, "body_base64": "AA=="}', "f:3: has body and body_base64"),
        ('{"body_base64": "!!"}', "f:3: body_base64 is not valid base64"),
        (
            '{"properties": {"content_type": "application/octet-stream"}, "body": "x"}',
            "f:3: A body with content type 'application/octet-stream' must be bytes",
        ),
    ],
)
def test_a_bad_record_names_its_line_and_what_is_wrong(line, says):
    with pytest.raises(UsageError) as raised:
        message_from_record(line, "f:3")
    assert str(raised.value).startswith(says)


# --- fedora-messaging's format ----------------------------------------------------

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=datetime.timezone.utc)


def built(body: Any, **properties: Any) -> Message:
    return Message(body, "org.example.build.done", properties=Properties(**properties))


def test_a_recorded_message_is_a_line_fedora_messaging_loads_with_its_id_headers_and_priority():
    headers = {"fedora_messaging_schema": "base.message", "fedora_messaging_severity": 30, "k": "v"}
    message = built({"build": 42}, headers=headers, priority=3, message_id="id-1")
    line = fedora_record(message)
    (loaded,) = fm_message.loads(line)
    assert (loaded.id, loaded.topic, loaded.body) == (
        "id-1",
        "org.example.build.done",
        {"build": 42},
    )
    assert loaded.priority == 3 and loaded.severity == 30
    assert loaded._headers["k"] == "v"


def test_a_recorded_line_is_what_fedora_messaging_writes_for_the_same_message():
    message = built({"b": "ä"}, headers={"sent-at": "2026-01-02T03:04:05+00:00"}, message_id="i")
    theirs = fm_message.Message(body={"b": "ä"}, topic="org.example.build.done")
    theirs._properties.headers = {"sent-at": "2026-01-02T03:04:05+00:00"}
    theirs.id = "i"
    assert fedora_record(message) + "\n" == fm_message.dumps(theirs)


@pytest.mark.parametrize(
    ("body", "kind", "content_type"),
    [([1, 2], "list", None), ("text", "str", "text/plain"), (b"\x00\xff", "bytes", None)],
)
def test_a_body_that_is_not_a_json_object_is_refused_naming_the_other_format(
    body, kind, content_type
):
    message = built(body, content_type=content_type)
    with pytest.raises(UsageError) as raised:
        fedora_record(message)
    assert f"not a JSON object ({kind})" in str(raised.value)
    assert "--format fedmq" in str(raised.value)


def test_a_line_fedora_messaging_wrote_becomes_the_message_its_publish_would_send():
    theirs = fm_message.Message(body={"n": 1}, topic="a.b", headers={"k": "v"})
    theirs.id, theirs.priority = "id-7", 4
    (record,) = [json.loads(line) for line in fm_message.dumps(theirs).splitlines()]
    message = message_from_fedora_record(record, "f:1")
    assert (message.topic, message.body, message.id) == ("a.b", {"n": 1}, "id-7")
    props = message.properties
    assert (props.content_type, props.content_encoding, props.priority) == (
        "application/json",
        "utf-8",
        4,
    )
    assert message.headers == {**theirs._headers, "priority": 4}
    assert json.loads(message.data) == {"n": 1}


def test_headers_fedora_messaging_adds_on_publish_are_added_when_missing():
    message = message_from_fedora_record({"topic": "t", "body": {}}, "f:1", now=NOW)
    assert message.headers == {
        "fedora_messaging_schema": "base.message",
        "fedora_messaging_schema_package": "fedora_messaging",
        "fedora_messaging_severity": 20,
        "sent-at": "2026-01-02T03:04:05+00:00",
        "priority": 0,
    }
    assert message.id  # a new one


def test_recorded_headers_are_kept_as_they_are():
    headers = {"fedora_messaging_schema": "bodhi.update.comment.v1", "sent-at": "then", "x": [1]}
    message = message_from_fedora_record({"topic": "t", "body": {}, "headers": headers}, "f:1")
    assert {key: message.headers[key] for key in headers} == headers


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ({"body": {}}, "f:2: the record has no 'topic'"),
        ({"topic": "t"}, "f:2: the record has no 'body'"),
        ({"topic": "t", "body": [1]}, "f:2: body must be a JSON object in fedora-messaging's"),
        ({"topic": 1, "body": {}}, "f:2: topic must be a string"),
        ({"topic": "t", "body": {}, "bdy": 1}, "f:2: unknown key 'bdy'"),
        ({"topic": "t", "body": {}, "headers": []}, "f:2: headers must be an object"),
        ({"topic": "t", "body": {}, "id": 5}, "f:2: id must be a string"),
        ({"topic": "t", "body": {}, "priority": "high"}, "f:2: priority must be a whole number"),
        (
            {"topic": "t", "body": {}, "headers": {"fedora_messaging_severity": 25}},
            "f:2: the fedora_messaging_severity header must be one of 10, 20, 30, 40",
        ),
    ],
)
def test_a_bad_fedora_messaging_record_names_its_line_and_what_is_wrong(record, says):
    with pytest.raises(UsageError) as raised:
        message_from_fedora_record(record, "f:2")
    assert str(raised.value).startswith(says)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"topic": "t", "body": {}, "id": "x"}'], FEDORA_FORMAT),
        (['{"topic": "t", "body": {}}'], FEDORA_FORMAT),
        (
            ['{"topic": "t", "body": {}}', '{"topic": "t", "properties": {}, "body": 1}'],
            FEDMQ_FORMAT,
        ),
        (['{"topic": "t", "body_base64": "AA=="}'], FEDMQ_FORMAT),
    ],
)
def test_a_files_format_is_told_by_the_keys_only_one_format_has(lines, expected):
    assert detect_format(parse_lines(lines, "f")) == expected


def test_a_file_mixing_the_formats_is_refused_naming_a_line_of_each():
    lines = ['{"topic": "t", "body": {}, "id": "x"}', "", '{"topic": "t", "exchange": "e"}']
    with pytest.raises(UsageError) as raised:
        detect_format(parse_lines(lines, "f"))
    assert str(raised.value).startswith("f:3 is in fedmq's format and f:1 in fedora-messaging's")
