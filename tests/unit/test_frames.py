"""The frames of a basic.publish, encoded in one go, are those pika writes."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pika.data
import pika.frame
import pika.spec
import pytest

from fedmq._frames import ConstantHeaders, PublishEncoder
from fedmq.message import PROPERTY_NAMES, Properties

CHANNEL = 3
BODY_MAX = 131072 - 8


def pika_frames(
    exchange: str, routing_key: str, body: bytes, properties: Properties, mandatory: bool
) -> bytes:
    props = pika.spec.BasicProperties(
        **{name: getattr(properties, name) for name in PROPERTY_NAMES}
    )
    publish = pika.spec.Basic.Publish(
        exchange=exchange, routing_key=routing_key, mandatory=mandatory
    )
    frames = [
        pika.frame.Method(CHANNEL, publish).marshal(),
        pika.frame.Header(CHANNEL, len(body), props).marshal(),
    ]
    frames.extend(
        pika.frame.Body(CHANNEL, body[start : start + BODY_MAX]).marshal()
        for start in range(0, len(body), BODY_MAX)
    )
    return b"".join(frames)


def encoder() -> PublishEncoder:
    return PublishEncoder(CHANNEL, BODY_MAX, pika.data.encode_table)


EVERY_PROPERTY: dict[str, Any] = {
    "content_type": "application/json",
    "content_encoding": "utf-8",
    "headers": {
        "text": "été",
        "n": 2**40,
        "small": -3,
        "yes": True,
        "none": None,
        "raw": b"\x00\x01",
        "when": datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc),
        "price": decimal.Decimal("1.25"),
        "nested": {"list": [1, "two"]},
    },
    "delivery_mode": 2,
    "priority": 5,
    "correlation_id": "req-1",
    "reply_to": "replies",
    "expiration": "60000",
    "message_id": "0123456789abcdef0123456789abcdef",
    "timestamp": 1_796_000_000,
    "type": "kind",
    "user_id": "guest",
    "app_id": "builder",
    "cluster_id": "c1",
}


@pytest.mark.parametrize(
    ("properties", "body", "mandatory"),
    [
        (Properties(), b"", False),
        (Properties(**EVERY_PROPERTY), b'{"n": 1}', True),
        (Properties(message_id="m", delivery_mode=1, headers={}), b"x", False),
        (Properties(content_type="text/plain"), bytes(range(256)) * 1200, False),
    ],
    ids=["nothing", "every-property", "empty-headers", "several-body-frames"],
)
def test_a_publish_is_encoded_as_pika_encodes_it(
    properties: Properties, body: bytes, mandatory: bool
) -> None:
    expected = pika_frames("amq.topic", "org.example.ünïcode", body, properties, mandatory)
    frames = encoder().encode("amq.topic", "org.example.ünïcode", body, properties, mandatory)
    assert frames == expected


def test_constant_headers_are_encoded_once_and_stay_right() -> None:
    publish = encoder()
    first = ConstantHeaders({"fedora_messaging_schema": "base.message", "sent-at": "then"})
    second = ConstantHeaders({"fedora_messaging_schema": "base.message", "sent-at": "now"})
    for headers in (first, first, second, first):
        properties = Properties(headers=headers, message_id="m")
        frames = publish.encode("", "q", b"{}", properties, False)
        assert frames == pika_frames("", "q", b"{}", properties, False)


def test_constant_headers_cannot_be_changed() -> None:
    headers = ConstantHeaders({"a": 1})
    with pytest.raises(TypeError):
        headers["a"] = 2
    with pytest.raises(TypeError):
        headers.update(b=2)
    assert headers == {"a": 1}


@pytest.mark.parametrize(
    "properties",
    [
        Properties(message_id="x" * 256),
        Properties(priority=256),
        Properties(app_id=42),  # type: ignore[arg-type]
        Properties(headers={"f": 1.5}),
    ],
    ids=["long-string", "priority-out-of-range", "not-a-string", "float-header"],
)
def test_what_pika_would_refuse_is_left_to_pika(properties: Properties) -> None:
    assert encoder().encode("", "q", b"{}", properties, False) is None


def test_a_routing_key_over_255_bytes_is_left_to_pika() -> None:
    assert encoder().encode("", "k" * 256, b"{}", Properties(), False) is None
