"""Tests for fedmq._codecs: decoding received bodies and encoding bodies to publish.

The names are public as fedmq.message's; what a delivered or built Message
does with them is in test_message.py.
"""

from __future__ import annotations

import gzip
import importlib.util
import tracemalloc
import zlib

import pytest

import fedmq.message
from fedmq._codecs import (
    DEFAULT_MAX_BODY_SIZE,
    DecodeError,
    decode_body,
    encode_body,
)

DATA = b'{"n":1,"s":"' + b"x" * 1000 + b'"}'
VALUE = {"n": 1, "s": "x" * 1000}

# The extras are in the test extra; skip (not fail) only where a packager left them out.
needs_msgpack = pytest.mark.skipif(
    importlib.util.find_spec("msgpack") is None, reason="msgpack is not installed"
)
needs_yaml = pytest.mark.skipif(
    importlib.util.find_spec("yaml") is None, reason="PyYAML is not installed"
)


def test_fedmq_message_exports_the_codecs_public_names():
    """decode_body, encode_body, DecodeError and DEFAULT_MAX_BODY_SIZE import from fedmq.message."""
    assert fedmq.message.decode_body is decode_body
    assert fedmq.message.encode_body is encode_body
    assert fedmq.message.DecodeError is DecodeError
    assert fedmq.message.DEFAULT_MAX_BODY_SIZE == DEFAULT_MAX_BODY_SIZE


# --- encode_body and decode_body --------------------------------------------


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


def test_encoding_with_an_unknown_charset_raises_value_error():
    """Encoding text in a charset Python does not know raises ValueError naming it."""
    with pytest.raises(ValueError, match="'no-such-charset'"):
        encode_body("hi", "text/plain; charset=no-such-charset")


# --- content encodings ------------------------------------------------------


def test_a_gzip_body_from_the_gzip_command_is_rfc_1952_gzip():
    """A gzip body carries the RFC 1952 header (not bare zlib) and decodes."""
    data = gzip.compress(b"[1]")
    assert data[:2] == b"\x1f\x8b"
    assert decode_body(data, None, "gzip") == [1]


def test_a_gzip_body_of_several_members_decodes_to_all_of_them():
    """Concatenated gzip members (as `cat a.gz b.gz` makes) decode as one body."""
    data = gzip.compress(b"[1,") + gzip.compress(b"2]")
    assert decode_body(data, "application/json", "gzip") == [1, 2]


def test_raw_deflate_without_a_zlib_header_decodes_too():
    """Some producers send raw deflate as "deflate"; it decodes like zlib data."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    data = compressor.compress(DATA) + compressor.flush()
    assert decode_body(data, None, "deflate") == VALUE


def test_trailing_bytes_after_deflate_data_raise_decode_error():
    """Bytes after the end of a zlib stream mean the body is not what it claims."""
    with pytest.raises(DecodeError, match="3 bytes after the end"):
        decode_body(zlib.compress(b"[1]") + b"xyz", None, "deflate")


def test_gzip_members_together_may_not_pass_max_body_size():
    """The limit holds for the whole body, not for each gzip member."""
    data = gzip.compress(b"\0" * 600) * 2
    with pytest.raises(DecodeError, match="inflates past max_body_size"):
        decode_body(data, "application/octet-stream", "gzip", max_body_size=1000)


def test_a_gzip_bomb_is_stopped_without_inflating_it_all():
    """A 1 GiB gzip bomb fails at the limit: fedmq never holds more than a few times
    max_body_size in memory, instead of inflating the whole gibibyte.
    """
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(1024)) + compressor.flush()
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match="inflates past max_body_size"):
            decode_body(bomb, None, "gzip", max_body_size=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak:,} bytes at the peak"


def test_the_default_max_body_size_is_64_mib():
    """max_body_size is 64 MiB unless configured."""
    assert DEFAULT_MAX_BODY_SIZE == 64 * 1024 * 1024


def test_a_charset_in_content_encoding_is_not_taken_for_a_compression():
    """fedora-messaging publishes content_encoding "utf-8": such bodies decode as usual."""
    assert decode_body('{"a": "é"}'.encode(), "application/json", "utf-8") == {"a": "é"}
    assert decode_body("café".encode("latin-1"), "text/plain", "latin-1") == "café"
    assert decode_body(b"raw", "application/octet-stream", "UTF8") == b"raw"


def test_an_encoding_that_is_neither_a_compression_nor_a_charset_is_undecodable():
    with pytest.raises(DecodeError, match="content encoding 'zstd'"):
        decode_body(b"x", "application/json", "zstd")


# --- msgpack and YAML -------------------------------------------------------


@needs_msgpack
@needs_yaml
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ({"a": [1, "é", None, True]}, "application/msgpack"),
        ({"a": [1, "é", None, True]}, "application/x-yaml"),
        ("ünïcode", "text/yaml"),
    ],
)
def test_msgpack_and_yaml_bodies_round_trip(body, content_type):
    """A msgpack or YAML body encodes and decodes back to itself."""
    for encoding in (None, "gzip"):
        data = encode_body(body, content_type, encoding)
        assert decode_body(data, content_type, encoding) == body


@needs_msgpack
@needs_yaml
@pytest.mark.parametrize("content_type", ["application/msgpack", "application/x-yaml"])
def test_a_value_msgpack_or_yaml_cannot_carry_raises_type_error(content_type):
    """Encoding an object the format has no representation for raises TypeError."""
    with pytest.raises(TypeError, match=repr(content_type)):
        encode_body(object(), content_type)
