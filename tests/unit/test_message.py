"""Tests for fedmq.message: building, encoding and decoding messages."""

from __future__ import annotations

import sys
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from fedmq.exceptions import FedmqError
from fedmq.message import DecodeError, Message, Properties, decode_body, encode_body


def deliver(data: bytes, properties: Any = None, **overrides: Any) -> Message:
    """Build a message the way the consumer does for one delivery."""
    kwargs: dict[str, Any] = {
        "topic": "org.example.thing",
        "exchange": "amq.topic",
        "delivery_tag": 7,
        "redelivered": False,
        "queue": "things",
    }
    kwargs.update(overrides)
    return Message._from_delivery(data, properties, **kwargs)


# --- Properties -------------------------------------------------------------


def test_properties_default_to_none():
    """Every property a Properties is not given is None."""
    props = Properties(message_id="abc")
    assert props.message_id == "abc"
    assert all(
        getattr(props, name) is None for name in Properties.__slots__ if name != "message_id"
    )


def test_properties_reject_an_unknown_name():
    """A misspelt property name is a TypeError, not a silently ignored argument."""
    with pytest.raises(TypeError, match="'mesage_id'"):
        Properties(mesage_id="abc")


def test_properties_from_object_copies_every_property():
    """from_object copies each AMQP property from a duck-typed object."""
    values = {name: f"value of {name}" for name in Properties.__slots__}
    props = Properties.from_object(SimpleNamespace(**values))
    assert props == Properties(**values)


def test_properties_from_object_leaves_missing_attributes_none():
    """An object lacking some properties gives None for them."""
    props = Properties.from_object(SimpleNamespace(content_type="text/plain"))
    assert props == Properties(content_type="text/plain")


def test_properties_compare_by_value():
    """Two Properties with the same values are equal; a different value makes them differ."""
    assert Properties(priority=3, headers={"a": 1}) == Properties(priority=3, headers={"a": 1})
    assert Properties(priority=3) != Properties(priority=4)
    assert Properties() != object()


def test_properties_repr_shows_only_set_properties():
    """A Properties' repr lists the properties that are set, and no others."""
    assert repr(Properties(message_id="abc", priority=2)) == (
        "Properties(priority=2, message_id='abc')"
    )


# --- a message built for publishing -----------------------------------------


def test_a_new_message_has_a_uuid4_hex_id():
    """A message built for publishing gets a fresh uuid4 id, different each time."""
    first, second = Message({"a": 1}), Message({"a": 1})
    assert uuid.UUID(hex=first.id).version == 4
    assert first.id == first.properties.message_id == uuid.UUID(hex=first.id).hex
    assert first.id != second.id


def test_a_new_message_is_timestamped_now():
    """A message built for publishing carries the current time in whole seconds."""
    before = int(time.time())
    message = Message("hello")
    assert before <= message.properties.timestamp <= int(time.time())
    assert isinstance(message.properties.timestamp, int)


def test_a_new_message_is_persistent_unless_asked_not_to_be():
    """delivery_mode is 2 by default and 1 when persistent=False."""
    assert Message({}).properties.delivery_mode == 2
    assert Message({}, persistent=False).properties.delivery_mode == 1


def test_a_new_message_serializes_its_body_as_compact_json():
    """A body is sent as compact UTF-8 JSON, non-ASCII characters kept as they are."""
    message = Message({"name": "café", "n": [1, 2]}, topic="org.example.thing")
    assert message.data == '{"name":"café","n":[1,2]}'.encode()
    assert message.body == {"name": "café", "n": [1, 2]}
    assert message.topic == "org.example.thing"
    assert message.properties.content_type == "application/json"


def test_a_new_message_carries_its_headers():
    """Headers given to a message are its headers, copied from the caller's mapping."""
    headers = {"sent-by": "tests"}
    message = Message({}, headers=headers)
    headers["sent-by"] = "changed later"
    assert message.headers == {"sent-by": "tests"}
    assert message.properties.headers is message.headers


def test_a_new_message_without_headers_has_an_empty_dict():
    """A message given no headers has an empty headers dict."""
    assert Message({}).headers == {}


def test_a_new_message_takes_its_amqp_properties_as_arguments():
    """Keyword arguments set the matching AMQP properties."""
    message = Message(
        {},
        message_id="my-id",
        priority=5,
        expiration="60000",
        correlation_id="corr",
        reply_to="replies",
        type="thing.created",
        app_id="tests",
    )
    assert message.id == "my-id"
    assert message.properties == Properties(
        content_type="application/json",
        message_id="my-id",
        priority=5,
        expiration="60000",
        correlation_id="corr",
        reply_to="replies",
        type="thing.created",
        app_id="tests",
        timestamp=message.properties.timestamp,
        delivery_mode=2,
        headers={},
    )


def test_a_new_message_starts_from_given_properties_without_changing_them():
    """Properties passed in are the starting point, arguments override them, and the
    caller's object is left as it was."""
    template = Properties(app_id="template", delivery_mode=1, headers={"a": 1})
    message = Message({}, headers={"b": 2}, properties=template, priority=9)
    assert message.properties.app_id == "template"
    assert message.properties.delivery_mode == 1
    assert message.properties.priority == 9
    assert message.headers == {"a": 1, "b": 2}
    assert template == Properties(app_id="template", delivery_mode=1, headers={"a": 1})


def test_a_new_message_is_not_a_delivery():
    """A message built for publishing has no queue, exchange or delivery tag."""
    message = Message({})
    assert message.queue is None
    assert message.exchange is None
    assert message.delivery_tag is None
    assert message.redelivered is False


def test_a_bytes_body_is_sent_as_is_as_octet_stream():
    """A bytes body is sent unchanged, as application/octet-stream by default."""
    message = Message(b"\x00\xffraw")
    assert message.data == b"\x00\xffraw"
    assert message.body == b"\x00\xffraw"
    assert message.properties.content_type == "application/octet-stream"


def test_a_bytes_body_keeps_an_explicit_content_type():
    """Pre-serialized JSON bytes are sent unchanged under the content type given."""
    message = Message(bytearray(b'{"a":1}'), content_type="application/json")
    assert message.data == b'{"a":1}'
    assert message.body == {"a": 1}
    assert message.properties.content_type == "application/json"


def test_a_text_body_is_encoded_with_its_charset():
    """A str body with a text content type is encoded with the charset it names."""
    message = Message("café", content_type="text/plain; charset=latin-1")
    assert message.data == "café".encode("latin-1")
    assert message.body == "café"
    assert message.properties.content_encoding is None


def test_a_message_repr_is_short_and_leaves_out_the_body():
    """A message's repr names its id, topic and queue, never its body."""
    message = Message({"secret": "s3cr3t" * 100}, topic="org.example", message_id="the-id")
    text = repr(message)
    assert "the-id" in text and "org.example" in text
    assert "s3cr3t" not in text
    assert len(text) < 100


# --- a message delivered to a consumer --------------------------------------


def test_a_json_message_body_is_the_decoded_object():
    """A delivered JSON message's body is the decoded object; data is the raw bytes."""
    message = deliver(b'{"a":[1,2]}', Properties(content_type="application/json"))
    assert message.body == {"a": [1, 2]}
    assert message.data == b'{"a":[1,2]}'


@pytest.mark.parametrize(
    "content_type",
    [None, "", "application/json", "APPLICATION/JSON; charset=UTF-8", "application/vnd.x+json"],
)
def test_json_content_types_and_a_missing_one_decode_as_json(content_type):
    """application/json in any case, +json types and no content type all decode as JSON."""
    assert deliver(b"[1]", Properties(content_type=content_type)).body == [1]


def test_an_empty_json_body_is_none():
    """An empty body with a JSON content type decodes to None."""
    assert deliver(b"", Properties(content_type="application/json")).body is None


def test_a_message_from_duck_typed_properties_exposes_them():
    """Properties given as any object with the attribute names (as pika's are) are read."""
    raw = SimpleNamespace(
        content_type="application/json",
        message_id="abc",
        headers={"sent-by": "tests"},
        priority=4,
    )
    message = deliver(b'"hi"', raw, queue="q", exchange="ex", delivery_tag=9, redelivered=True)
    assert message.id == "abc"
    assert message.body == "hi"
    assert message.headers == {"sent-by": "tests"}
    assert message.properties == Properties(
        content_type="application/json", message_id="abc", headers={"sent-by": "tests"}, priority=4
    )
    assert (message.topic, message.exchange, message.queue) == ("org.example.thing", "ex", "q")
    assert (message.delivery_tag, message.redelivered) == (9, True)


def test_a_delivered_message_without_headers_has_an_empty_dict():
    """A delivered message whose properties carry no headers has an empty headers dict."""
    message = deliver(b"{}", SimpleNamespace(content_type="application/json", headers=None))
    assert message.headers == {}
    assert message.headers is message.headers


def test_a_delivered_message_repr_names_its_queue_and_not_its_body():
    """A delivered message's repr names its id, topic and queue, never its body."""
    message = deliver(b'{"secret":"s3cr3t"}', SimpleNamespace(message_id="m1"))
    assert repr(message) == "<Message id='m1' topic='org.example.thing' queue='things'>"


def test_a_text_body_decodes_as_utf8_by_default():
    """A text/* body with no charset decodes as UTF-8."""
    assert deliver("café".encode(), Properties(content_type="text/plain")).body == "café"


def test_a_body_in_latin1_decodes_with_its_charset():
    """A text body decodes with the charset its content type names."""
    props = Properties(content_type='text/plain; charset="ISO-8859-1"')
    assert deliver("café".encode("latin-1"), props).body == "café"


def test_a_json_body_in_a_named_charset_decodes_with_it():
    """A JSON body whose content type names a charset decodes with that charset."""
    props = Properties(content_type="application/json; charset=utf-16")
    assert deliver('{"a":"é"}'.encode("utf-16"), props).body == {"a": "é"}


def test_other_content_types_give_bytes():
    """A body of any other content type is the raw bytes."""
    props = Properties(content_type="application/octet-stream")
    assert deliver(b"\x00\xff", props).body == b"\x00\xff"


# --- bodies that cannot be decoded -------------------------------------------


def test_invalid_json_raises_decode_error_naming_the_content_type():
    """Invalid JSON raises DecodeError saying which content type and what is wrong."""
    with pytest.raises(DecodeError, match=r"'application/json' is not valid JSON") as info:
        deliver(b"{not json", Properties(content_type="application/json"))
    assert info.value.content_type == "application/json"
    assert isinstance(info.value, FedmqError)


def test_json_that_is_not_utf8_raises_decode_error():
    """A JSON body that is not valid UTF-8 raises DecodeError, not UnicodeDecodeError."""
    with pytest.raises(DecodeError, match="not valid utf-8 text"):
        deliver(b'"\xff"', Properties(content_type="application/json"))


def test_deeply_nested_json_raises_decode_error():
    """JSON nested deeper than Python can decode raises DecodeError, not RecursionError."""
    depth = sys.getrecursionlimit() * 10
    with pytest.raises(DecodeError, match="too deeply"):
        deliver(b"[" * depth + b"]" * depth, None)


def test_bad_bytes_for_the_charset_raise_decode_error():
    """Text that is not valid in its charset raises DecodeError naming the content type."""
    with pytest.raises(DecodeError, match=r"'text/plain; charset=ascii' is not valid ascii"):
        deliver(b"caf\xc3\xa9", Properties(content_type="text/plain; charset=ascii"))


@pytest.mark.parametrize("charset", ["no-such-charset", "base64"])
def test_an_unknown_charset_raises_decode_error(charset):
    """A charset Python has no text codec for raises DecodeError naming the charset."""
    with pytest.raises(DecodeError, match=f"charset '{charset}'"):
        deliver(b"hello", Properties(content_type=f"text/plain; charset={charset}"))


# --- encode_body and decode_body ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"a": [1, 2.5, None, True], "b": "ünïcode ☃"}, "application/json"),
        ("plain text ☃", "text/plain"),
        ("latin-1 text é", "text/plain; charset=latin-1"),
        (b"\x00\x01\x02", "application/octet-stream"),
        (None, "application/json"),
    ],
)
def test_a_body_survives_an_encode_decode_round_trip(body, content_type):
    """What encode_body writes, decode_body reads back as the same value."""
    assert decode_body(encode_body(body, content_type), content_type) == body


def test_encoding_a_non_json_value_raises_type_error():
    """A body JSON cannot represent is refused when the message is built."""
    with pytest.raises(TypeError, match="set"):
        Message({1, 2})


def test_encoding_nan_as_json_raises_value_error():
    """NaN is refused rather than sent as JSON other consumers cannot parse."""
    with pytest.raises(ValueError):
        Message(float("nan"))


def test_a_text_content_type_needs_a_str_body():
    """A text content type with a non-str body raises TypeError naming both."""
    with pytest.raises(TypeError, match="'text/plain' must be str, not int"):
        Message(42, content_type="text/plain")


def test_an_opaque_content_type_needs_a_bytes_body():
    """A non-JSON, non-text content type with a non-bytes body raises TypeError."""
    with pytest.raises(TypeError, match="must be bytes, not dict"):
        Message({}, content_type="image/png")


def test_encoding_with_an_unknown_charset_raises_value_error():
    """Encoding text in a charset Python does not know raises ValueError naming it."""
    with pytest.raises(ValueError, match="'no-such-charset'"):
        encode_body("hi", "text/plain; charset=no-such-charset")
