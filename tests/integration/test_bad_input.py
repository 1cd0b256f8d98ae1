"""Bad and unusual message input against a real broker.

Each message that cannot be decoded is parked in ``<queue>.dead`` (or, with
retries turned off, rejected to the queue's dead-letter exchange) without
reaching the callback; valid but unusual messages are processed. Either
way the consumer keeps running, and the messages published just before and
after are processed.
"""

from __future__ import annotations

import bz2
import datetime
import decimal
import gzip
import importlib.util
import zlib
from typing import Any

import pytest
import pytest_twisted

import fedmq
from fedmq.message import DEFAULT_MAX_BODY_SIZE
from tests.integration.conftest import wait_for

needs_msgpack = pytest.mark.skipif(
    importlib.util.find_spec("msgpack") is None, reason="msgpack is not installed"
)
needs_yaml = pytest.mark.skipif(
    importlib.util.find_spec("yaml") is None, reason="PyYAML is not installed"
)


def gzip_bomb(inflated_size: int) -> bytes:
    """A gzip body of zeros that inflates to ``inflated_size`` bytes, built in 1 MiB steps."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    step = b"\0" * (1 << 20)
    whole, rest = divmod(inflated_size, len(step))
    parts = [compressor.compress(step) for _ in range(whole)]
    parts.append(compressor.compress(step[:rest]))
    parts.append(compressor.flush())
    return b"".join(parts)


def dead_lettered_config(make_config: Any, queue_name: str, **keys: Any) -> tuple[Any, str]:
    """A config whose queue dead-letters to ``<queue>.dead``, and that queue's name."""
    dead = queue_name + ".dead"
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead}
    return make_config(queues={queue_name: {"arguments": arguments}}, **keys), dead


def msgpack_value() -> bytes:
    import msgpack

    packed: bytes = msgpack.packb({"k": [1, "two", b"\x03"]}, use_bin_type=True)
    return packed


# (id, body, publish properties): each cannot be decoded.
UNDECODABLE = [
    pytest.param(
        gzip.compress(b'{"whole": "message"}' * 50)[:-20],
        {"content_encoding": "gzip"},
        id="truncated-gzip",
    ),
    pytest.param(
        "café".encode("latin-1"),
        {"content_type": "text/plain; charset=utf-8"},
        id="wrong-charset",
    ),
    pytest.param(
        b"caf\xe9",
        {"content_type": "text/plain; charset=klingon"},
        id="unknown-charset",
    ),
    pytest.param(b'{"unterminated": ', {}, id="invalid-json"),
    pytest.param(b'{"a": 1}', {"content_encoding": "br"}, id="unknown-content-encoding"),
    pytest.param(
        gzip.compress(b"{not json"), {"content_encoding": "gzip"}, id="gzip-of-invalid-json"
    ),
    pytest.param(b"\x00garbage", {"content_encoding": "deflate"}, id="corrupt-deflate"),
    pytest.param(bz2.compress(b"[1]")[:-4], {"content_encoding": "bzip2"}, id="truncated-bzip2"),
    pytest.param(
        b"\xc1",
        {"content_type": "application/msgpack"},
        id="invalid-msgpack",
        marks=needs_msgpack,
    ),
    pytest.param(
        b"!!python/object/apply:os.system ['touch /tmp/fedmq-owned']\n",
        {"content_type": "application/x-yaml"},
        id="yaml-python-tag",
        marks=needs_yaml,
    ),
]

# (id, body, publish properties, what the callback sees as message.body)
UNUSUAL_BUT_VALID = [
    pytest.param(b"", {}, None, id="empty-json-body"),
    pytest.param(b"", {"content_type": "text/plain"}, "", id="empty-text-body"),
    pytest.param(b"", {"content_type": "application/octet-stream"}, b"", id="empty-bytes-body"),
    pytest.param(
        gzip.compress(b'{"zipped": true}'),
        {"content_encoding": "gzip"},
        {"zipped": True},
        id="gzip",
    ),
    pytest.param(
        zlib.compress(b'{"zipped": true}'),
        {"content_encoding": "deflate"},
        {"zipped": True},
        id="deflate",
    ),
    pytest.param(
        bz2.compress("naïve".encode("utf-16")),
        {"content_type": "text/plain; charset=utf-16", "content_encoding": "bzip2"},
        "naïve",
        id="bzip2-utf16-text",
    ),
    pytest.param(
        "café".encode("latin-1"),
        {"content_type": "text/plain; charset=latin-1"},
        "café",
        id="latin-1-text",
    ),
    pytest.param(
        b"\x80\x04\x95",
        {"content_type": "application/x-python-pickle"},
        b"\x80\x04\x95",
        id="pickle-stays-bytes",
    ),
]


async def run_between_good_messages(
    broker: Any, queue_name: str, config: Any, body: bytes, properties: dict[str, Any]
) -> tuple[fedmq.Consumer, list[Any], str]:
    """Publish "before", the message under test, then "after"; wait for both good ones."""
    seen: list[Any] = []
    consumer = await fedmq.consume(lambda message: seen.append(message.body), config=config)
    broker.publish(queue_name, ["before"])
    broker.publish(queue_name, [body], **properties)
    broker.publish(queue_name, ["after"])
    await wait_for(lambda: "after" in seen, what="the message after the one under test")
    return consumer, seen, "after"


@pytest.mark.parametrize(("body", "properties"), UNDECODABLE)
@pytest_twisted.ensureDeferred
async def test_an_undecodable_message_is_parked_between_processed_ones(
    broker, queue_name, make_config, body, properties
):
    """The bad message is parked in <queue>.dead as sent, saying why; its neighbours run."""
    dead = queue_name + ".dead"
    consumer, seen, _ = await run_between_good_messages(
        broker, queue_name, make_config(), body, properties
    )
    await wait_for(lambda: broker.ready(dead) == 1, what="the parked message")
    assert consumer.state == "consuming"
    await consumer.cancel()
    assert seen == ["before", "after"]
    [(parked_properties, parked_body)] = broker.take_all(dead)
    assert parked_body == body
    assert parked_properties.headers["X-Dropped-Reason"].startswith("undecodable message ")
    assert parked_properties.headers["X-Original-Queue"] == queue_name
    assert broker.counts(queue_name) == (0, 0)
    assert consumer.counts["parked"] == 1
    assert consumer.counts["acked"] == 2


@pytest_twisted.ensureDeferred
async def test_with_retries_off_an_undecodable_message_goes_to_the_dead_letter_exchange(
    broker, queue_name, make_config
):
    """With retry.enabled = false there is no dead queue: the message is rejected to the DLX."""
    config, dead = dead_lettered_config(make_config, queue_name, retry={"enabled": False})
    broker.declare_queue(dead)
    consumer, seen, _ = await run_between_good_messages(broker, queue_name, config, b"{bad", {})
    await wait_for(lambda: broker.ready(dead) == 1, what="the dead-lettered message")
    await consumer.cancel()
    assert seen == ["before", "after"]
    assert broker.drain(dead, raw=True) == [b"{bad"]
    assert consumer.counts["dropped"] == 1


@pytest_twisted.ensureDeferred
async def test_a_gzip_bomb_past_max_body_size_is_parked(broker, queue_name, make_config):
    """A ~65 KB gzip body that inflates past the 64 MiB default is parked, not inflated."""
    bomb = gzip_bomb(DEFAULT_MAX_BODY_SIZE + (1 << 20))
    assert len(bomb) < 100_000
    dead = queue_name + ".dead"
    consumer, seen, _ = await run_between_good_messages(
        broker, queue_name, make_config(), bomb, {"content_encoding": "gzip"}
    )
    await wait_for(lambda: broker.ready(dead) == 1, what="the parked bomb")
    await consumer.cancel()
    assert seen == ["before", "after"]
    assert broker.drain(dead, raw=True) == [bomb]
    assert consumer.counts["parked"] == 1


@pytest.mark.parametrize(("body", "properties", "expected"), UNUSUAL_BUT_VALID)
@pytest_twisted.ensureDeferred
async def test_an_unusual_but_valid_message_is_processed(
    broker, queue_name, make_config, body, properties, expected
):
    """Empty, compressed, non-UTF-8 and opaque bodies reach the callback decoded."""
    config, dead = dead_lettered_config(make_config, queue_name)
    broker.declare_queue(dead)
    consumer, seen, _ = await run_between_good_messages(
        broker, queue_name, config, body, properties
    )
    await consumer.cancel()
    assert seen == ["before", expected, "after"]
    assert broker.ready(dead) == 0
    assert consumer.counts["acked"] == 3


@needs_msgpack
@needs_yaml
@pytest_twisted.ensureDeferred
async def test_msgpack_and_yaml_messages_are_decoded(broker, queue_name, make_config):
    """Msgpack and YAML bodies, from the optional extras, reach the callback decoded."""
    seen: list[Any] = []
    consumer = await fedmq.consume(lambda m: seen.append(m.body), config=make_config())
    broker.publish(queue_name, [msgpack_value()], content_type="application/msgpack")
    broker.publish(queue_name, [b"k: [1, two]\n"], content_type="text/yaml")
    await wait_for(lambda: len(seen) == 2)
    await consumer.cancel()
    assert seen == [{"k": [1, "two", b"\x03"]}, {"k": [1, "two"]}]


@pytest_twisted.ensureDeferred
async def test_headers_of_every_amqp_field_type_reach_the_callback(broker, queue_name, make_config):
    """Timestamps, decimals, nested tables, byte arrays and the rest arrive as Python values.

    (pika cannot publish a float header, so none is sent.)
    """
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    headers = {
        "timestamp": when,
        "decimal": decimal.Decimal("12.345"),
        "nested": {"table": {"deeper": [1, "two", {"three": 3}]}},
        "bytes": b"\x00\x01\xff",
        "array": [1, "two", decimal.Decimal("3.5"), True, None],
        "big": 2**62,
        "negative": -(2**31),
        "bool": False,
        "void": None,
        "unicode": "snowman ☃",
    }
    seen: list[fedmq.Message] = []
    consumer = await fedmq.consume(seen.append, config=make_config())
    broker.publish(queue_name, ["before"])
    broker.publish(queue_name, [{"with": "headers"}], headers=headers)
    broker.publish(queue_name, ["after"])
    await wait_for(lambda: len(seen) == 3)
    await consumer.cancel()
    assert [message.body for message in seen] == ["before", {"with": "headers"}, "after"]
    received = seen[1].headers
    assert received["timestamp"] == when
    assert received["decimal"] == decimal.Decimal("12.345")
    assert received["nested"] == {"table": {"deeper": [1, "two", {"three": 3}]}}
    assert received["bytes"] == b"\x00\x01\xff"
    assert received["array"] == [1, "two", decimal.Decimal("3.5"), True, None]
    assert received["big"] == 2**62 and received["negative"] == -(2**31)
    assert received["bool"] is False
    assert received["void"] is None
    assert received["unicode"] == "snowman ☃"
    assert consumer.counts["acked"] == 3


@pytest_twisted.ensureDeferred
async def test_a_16_mib_body_is_processed_plain_and_gzipped(broker, queue_name, make_config):
    """A 16 MiB JSON body, sent plain and gzipped, reaches the callback whole both times."""
    text = "x" * (16 * 1024 * 1024)
    data = b'"' + text.encode() + b'"'
    seen: list[fedmq.Message] = []
    consumer = await fedmq.consume(seen.append, config=make_config())
    broker.publish(queue_name, ["before"])
    broker.publish(queue_name, [data])
    broker.publish(queue_name, [gzip.compress(data, 1)], content_encoding="gzip")
    broker.publish(queue_name, ["after"])
    await wait_for(lambda: len(seen) == 4, timeout=60, what="four messages")
    await consumer.cancel()
    assert seen[0].body == "before" and seen[3].body == "after"
    assert seen[1].body == text and seen[2].body == text
    assert len(seen[2].data) < len(data) // 100
    assert consumer.counts["acked"] == 4


@pytest_twisted.ensureDeferred
async def test_a_stream_of_bad_input_leaves_only_the_bad_messages_parked(
    broker, queue_name, make_config
):
    """Bad messages interleaved with good ones: every good one is processed, in order."""
    dead = queue_name + ".dead"
    seen: list[Any] = []
    consumer = await fedmq.consume(lambda m: seen.append(m.body), config=make_config())
    bad = [
        (b"{oops", {}),
        (gzip.compress(b"[1]")[:-3], {"content_encoding": "gzip"}),
        (b"[1]", {"content_encoding": "compress"}),
        (b"\xff\xfe", {"content_type": "text/plain"}),
    ]
    for number, (body, properties) in enumerate(bad):
        broker.publish(queue_name, [number])
        broker.publish(queue_name, [body], **properties)
    broker.publish(queue_name, [len(bad)])
    await wait_for(lambda: len(seen) == len(bad) + 1, what="every good message")
    await wait_for(lambda: broker.ready(dead) == len(bad), what="every bad message")
    await consumer.cancel()
    assert seen == list(range(len(bad) + 1))
    assert broker.drain(dead, raw=True) == [body for body, _ in bad]
    assert consumer.counts["parked"] == len(bad)


@pytest_twisted.ensureDeferred
async def test_a_configured_max_body_size_parks_a_smaller_bomb(broker, queue_name, make_config):
    """With max_body_size = 1 MiB, valid JSON inflating to 2 MiB is parked."""
    config = make_config(max_body_size=1 << 20)
    dead = queue_name + ".dead"
    bomb = gzip.compress(b'"' + b"x" * (2 << 20) + b'"')
    consumer, seen, _ = await run_between_good_messages(
        broker, queue_name, config, bomb, {"content_encoding": "gzip"}
    )
    await wait_for(lambda: broker.ready(dead) == 1, timeout=5, what="the parked bomb")
    await consumer.cancel()
    assert seen == ["before", "after"]


@pytest_twisted.ensureDeferred
async def test_with_decode_off_the_callback_gets_every_body_as_bytes(
    broker, queue_name, make_config
):
    """Decode = false: bodies, even ones that would not decode, reach the callback as bytes."""
    config = make_config(decode=False)
    seen: list[Any] = []
    consumer = await fedmq.consume(lambda m: seen.append(m.body), config=config)
    zipped = gzip.compress(b"[1]")
    broker.publish(queue_name, [b"{not json"])
    broker.publish(queue_name, [zipped], content_encoding="gzip")
    broker.publish(queue_name, [b"[2]"], content_encoding="br")
    await wait_for(lambda: len(seen) == 3, timeout=5, what="three messages")
    await consumer.cancel()
    assert seen == [b"{not json", zipped, b"[2]"]
