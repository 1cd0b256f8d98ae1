"""Tests for fedmq.message: building, encoding and decoding messages.

The codecs on their own (decode_body, encode_body) are tested in test_codecs.py.
"""

from __future__ import annotations

import bz2
import gzip
import importlib.util
import pickle
import sys
import time
import uuid
import zlib
from types import SimpleNamespace
from typing import Any

import pytest

import fedmq
from fedmq import _codecs
from fedmq.exceptions import FedmqError
from fedmq.message import (
    DecodeError,
    Message,
    Properties,
    decode_body,
)


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


def test_properties_copied_from_properties_carry_every_property():
    """A copy of Properties has each of their values, and is a new object."""
    values = {name: f"value of {name}" for name in Properties.__slots__}
    original = Properties(**values)
    copy = Properties.from_object(original)
    assert copy == original
    assert copy is not original


def test_a_new_message_has_no_property_but_those_it_is_given_or_gets():
    """A message built from a body sets its type, id, timestamp and delivery mode, and no other."""
    props = Message({"n": 1}).properties
    assert {name for name in Properties.__slots__ if getattr(props, name) is not None} == {
        "content_type",
        "headers",
        "delivery_mode",
        "message_id",
        "timestamp",
    }
    assert props.headers == {}


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
    caller's object is left as it was.
    """
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


# --- bodies that cannot be encoded -------------------------------------------


def test_encoding_a_non_json_value_raises_type_error():
    """A body JSON cannot represent is refused when the message is built."""
    with pytest.raises(TypeError, match="set"):
        Message({1, 2})


def test_encoding_nan_as_json_raises_value_error():
    """NaN is refused rather than sent as JSON other consumers cannot parse."""
    with pytest.raises(ValueError, match="not JSON compliant"):
        Message(float("nan"))


def test_a_text_content_type_needs_a_str_body():
    """A text content type with a non-str body raises TypeError naming both."""
    with pytest.raises(TypeError, match="'text/plain' must be str, not int"):
        Message(42, content_type="text/plain")


def test_an_opaque_content_type_needs_a_bytes_body():
    """A non-JSON, non-text content type with a non-bytes body raises TypeError."""
    with pytest.raises(TypeError, match="must be bytes, not dict"):
        Message({}, content_type="image/png")


# --- content encodings --------------------------------------------------------

DATA = b'{"n":1,"s":"' + b"x" * 1000 + b'"}'
VALUE = {"n": 1, "s": "x" * 1000}


def compressed(encoding: str, data: bytes = DATA) -> bytes:
    if encoding in ("gzip", "x-gzip"):
        return gzip.compress(data)
    if encoding in ("deflate", "zlib"):
        return zlib.compress(data)
    return bz2.compress(data)


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", "x-gzip", "deflate", "zlib", "bzip2"])
def test_a_compressed_body_is_decompressed_and_data_stays_compressed(encoding):
    """A gzip, deflate or bzip2 body is decoded; message.data is the bytes as received."""
    data = compressed(encoding.lower())
    props = Properties(content_type="application/json", content_encoding=encoding)
    message = deliver(data, props)
    assert message.body == VALUE
    assert message.data == data


@pytest.mark.parametrize("encoding", [None, "", "identity", " Identity "])
def test_identity_and_no_content_encoding_leave_the_body_as_it_is(encoding):
    """No content encoding, or identity, means the body is not compressed."""
    assert deliver(b"[1]", Properties(content_encoding=encoding)).body == [1]


def test_an_unknown_content_encoding_raises_decode_error_naming_it():
    """A content encoding fedmq does not know cannot be decoded, and the error names it."""
    with pytest.raises(DecodeError, match=r"content encoding 'br'.*gzip, deflate, bzip2") as info:
        deliver(b"[1]", Properties(content_encoding="br"))
    assert info.value.content_encoding == "br"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "bzip2"])
def test_a_truncated_compressed_body_raises_decode_error(encoding):
    """A compressed body cut short is reported as truncated, not decoded in part."""
    data = compressed(encoding)[:-10]
    with pytest.raises(DecodeError, match=rf"'{encoding}' is (truncated|not valid)"):
        deliver(data, Properties(content_encoding=encoding))


@pytest.mark.parametrize("encoding", ["gzip", "bzip2"])
def test_a_corrupt_compressed_body_raises_decode_error(encoding):
    """Bytes that are not data of the encoding raise DecodeError, not zlib.error or OSError."""
    with pytest.raises(DecodeError, match=rf"'{encoding}' is not valid {encoding} data"):
        deliver(b"this is not compressed at all", Properties(content_encoding=encoding))


def test_an_empty_gzip_body_is_truncated():
    """An empty body cannot be gzip data."""
    with pytest.raises(DecodeError, match="truncated"):
        deliver(b"", Properties(content_encoding="gzip"))


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "bzip2"])
def test_a_body_that_inflates_past_max_body_size_raises_decode_error(encoding):
    """A decompression bomb fails with DecodeError once it passes max_body_size."""
    data = compressed(encoding, b"\0" * 100_001)
    with pytest.raises(DecodeError, match=r"inflates past max_body_size \(100000 bytes\)"):
        deliver(data, Properties(content_encoding=encoding), max_body_size=100_000)
    assert (
        deliver(
            data, Properties(content_encoding=encoding, content_type="x/y"), max_body_size=100_001
        ).body
        == b"\0" * 100_001
    )


def test_an_uncompressed_body_is_not_limited_by_max_body_size():
    """max_body_size limits inflation only: the broker already limits what it delivers."""
    assert deliver(b"[1,2,3]", Properties(), max_body_size=1).body == [1, 2, 3]


def test_with_decoding_off_the_body_is_the_raw_bytes():
    """With decode=False neither the encoding nor the content type is applied."""
    data = gzip.compress(b"{not json")
    message = deliver(data, Properties(content_encoding="gzip"), decode=False)
    assert message.body == data
    assert message.data == data
    message = deliver(b"{not json", Properties(content_encoding="br"), decode=False)
    assert message.body == b"{not json"


# --- msgpack and YAML --------------------------------------------------------

# The extras are in the test extra; skip (not fail) only where a packager left them out.
needs_msgpack = pytest.mark.skipif(
    importlib.util.find_spec("msgpack") is None, reason="msgpack is not installed"
)
needs_yaml = pytest.mark.skipif(
    importlib.util.find_spec("yaml") is None, reason="PyYAML is not installed"
)


@needs_msgpack
@pytest.mark.parametrize("content_type", ["application/msgpack", "application/x-msgpack"])
def test_a_msgpack_body_is_unpacked(content_type):
    """A msgpack body decodes to the value packed; strings are str, binary is bytes."""
    import msgpack

    data = msgpack.packb({"a": [1, 2.5, None], "b": b"\x00"}, use_bin_type=True)
    assert deliver(data, Properties(content_type=content_type)).body == {
        "a": [1, 2.5, None],
        "b": b"\x00",
    }


@needs_msgpack
def test_invalid_msgpack_raises_decode_error():
    """Bytes that are not one msgpack value raise DecodeError naming the content type."""
    with pytest.raises(DecodeError, match=r"'application/msgpack' is not valid msgpack"):
        deliver(b"\xc1", Properties(content_type="application/msgpack"))
    with pytest.raises(DecodeError, match="is not valid msgpack"):
        deliver(b"\x01\x01", Properties(content_type="application/msgpack"))


@needs_yaml
@pytest.mark.parametrize("content_type", ["application/x-yaml", "text/yaml", "application/yaml"])
def test_a_yaml_body_is_loaded_safely(content_type):
    """A YAML body decodes to plain values."""
    assert deliver(b"a: [1, two]\n", Properties(content_type=content_type)).body == {
        "a": [1, "two"]
    }


@needs_yaml
def test_yaml_never_builds_python_objects():
    """A YAML tag naming a Python object is refused: only the safe loader is used."""
    data = b"!!python/object/apply:os.system ['echo owned']\n"
    with pytest.raises(DecodeError, match=r"'text/yaml' is not valid YAML"):
        deliver(data, Properties(content_type="text/yaml"))


@needs_yaml
def test_invalid_yaml_raises_decode_error():
    """YAML that does not parse raises DecodeError."""
    with pytest.raises(DecodeError, match="is not valid YAML"):
        deliver(b"a: [1, 2\n", Properties(content_type="application/x-yaml"))


@needs_msgpack
@needs_yaml
@pytest.mark.parametrize("content_type", ["application/msgpack", "text/yaml"])
def test_an_empty_msgpack_or_yaml_body_is_none(content_type):
    """As with JSON, an empty body holds no value and decodes to None."""
    assert deliver(b"", Properties(content_type=content_type)).body is None


@pytest.mark.parametrize(
    ("content_type", "extra"), [("application/msgpack", "msgpack"), ("text/yaml", "yaml")]
)
def test_without_the_optional_package_decoding_says_which_extra_to_install(
    monkeypatch, content_type, extra
):
    """Without msgpack or PyYAML, such a body is a DecodeError saying to install the extra."""
    monkeypatch.setattr(_codecs, "_MODULES", {0: None, 1: None, 2: None, 3: None, 4: None})
    with pytest.raises(DecodeError, match=rf"install fedmq\[{extra}\]"):
        deliver(b"\x01", Properties(content_type=content_type))
    with pytest.raises(ModuleNotFoundError, match=rf"install fedmq\[{extra}\]"):
        Message({"a": 1}, content_type=content_type)


@pytest.mark.parametrize(
    "content_type", ["application/x-python-pickle", "application/python-pickle"]
)
def test_pickle_is_never_unpickled(content_type):
    """A pickle body is handed over as bytes: unpickling runs the sender's code."""
    data = pickle.dumps({"a": 1})
    assert deliver(data, Properties(content_type=content_type)).body == data


# --- encoding for publishing ------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "bzip2"])
def test_a_message_built_with_a_content_encoding_is_compressed(encoding):
    """Message(..., content_encoding=...) compresses the serialized body, and it decodes back."""
    message = Message(VALUE, content_encoding=encoding)
    assert message.properties.content_encoding == encoding
    assert message.body == VALUE
    assert len(message.data) < len(DATA)
    assert decode_body(message.data, "application/json", encoding) == VALUE


def test_a_gzip_message_is_the_same_bytes_each_time():
    """Gzip output carries no timestamp, so equal bodies give equal bytes."""
    assert Message([1], content_encoding="gzip").data == Message([1], content_encoding="gzip").data


def test_a_bytes_body_with_a_content_encoding_argument_is_compressed():
    """Bytes given with content_encoding are compressed; body is the uncompressed bytes."""
    message = Message(b"raw", content_encoding="gzip")
    assert gzip.decompress(message.data) == b"raw"
    assert message.body == b"raw"


def test_a_received_compressed_message_republishes_unchanged():
    """A received message's data and properties republish as they are, not compressed twice."""
    props = Properties(content_type="application/json", content_encoding="gzip")
    received = deliver(gzip.compress(b"[1]"), props)
    copy = Message(received.data, received.topic, properties=received.properties)
    assert copy.data == received.data
    assert copy.body == [1]


def test_an_unknown_content_encoding_cannot_be_published():
    """Publishing with an encoding fedmq cannot apply fails before anything is sent."""
    with pytest.raises(ValueError, match="content encoding 'br'"):
        Message([1], content_encoding="br")


def test_a_float_header_is_refused_when_the_message_is_built_naming_header_and_type():
    """Message(headers={"ratio": 0.5}) fails at once, saying which header and that it is a float."""
    with pytest.raises(fedmq.PublishFormatError, match=r"'ratio' is a float"):
        fedmq.Message({}, topic="t", headers={"ratio": 0.5})


def test_a_nested_header_value_amqp_cannot_carry_is_named_by_its_path():
    """A bad value inside a table header names its path (``outer.inner``)."""
    with pytest.raises(fedmq.PublishFormatError, match=r"'outer\.inner' is a set"):
        fedmq.Message({}, topic="t", headers={"outer": {"inner": {1}}})


def test_a_tuple_header_is_sent_as_an_array():
    """A tuple header becomes a list, which AMQP carries as an array."""
    message = fedmq.Message({}, topic="t", headers={"ids": (1, "two")})
    assert message.headers["ids"] == [1, "two"]
