"""The contenders: what each one runs and how many messages it gets.

This module is plain data, shared by the parent (which fills the queues and
reads the results) and by ``bench.child`` (which runs one contender). It
imports neither Twisted nor pika, so the child can still choose its reactor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Messages the rss-backlog contender consumes out of its backlog.
BACKLOG_CONSUMED = 10_000
#: fedora-messaging runs at about 1,000 msg/s; more messages only take longer.
FEDORA_MESSAGING_CAP = 5_000
#: Above this many messages the 1 ms-sleep contender gets a fifth of them.
SLEEP_SCALE_FROM = 10_000
#: In the slow-message contender, one message in this many sleeps SLOW_SLEEP seconds.
SLOW_EVERY = 100
SLOW_SLEEP = 0.050
#: Prefetch for every contender, so that they differ only in the client.
PREFETCH = 100
#: A publisher waiting for each confirm manages about 1,000 msg/s; more only take longer.
BLOCKING_PUBLISH_CAP = 5_000
#: The batched raw contender acks with ``multiple=True`` this often.
ACK_BATCH = 50


@dataclass(frozen=True)
class Contender:
    """One consumer under test.

    Attributes:
        name: what ``--only`` and the table call it.
        summary: one line for the table's notes and the JSON.
        sizes: given ``--messages`` and ``--backlog``, returns (messages put in
            the queue, messages the consumer takes before it stops).
        schema: the fedora-messaging schema its messages name; None for the
            base schema.
        kind: ``"consume"``, or ``"publish"`` for a contender that publishes
            its messages into an empty queue (``bench.publish_child``).

    """

    name: str
    summary: str
    sizes: Callable[[int, int], tuple[int, int]]
    schema: str | None = None
    kind: str = "consume"

    @property
    def publishes(self) -> bool:
        return self.kind == "publish"


def _all(messages: int, _backlog: int) -> tuple[int, int]:
    return messages, messages


def _fifth_if_large(messages: int, _backlog: int) -> tuple[int, int]:
    count = messages // 5 if messages >= SLEEP_SCALE_FROM else messages
    return count, count


def _fedora_messaging_cap(messages: int, _backlog: int) -> tuple[int, int]:
    count = min(messages, FEDORA_MESSAGING_CAP)
    return count, count


def _publish_all(messages: int, _backlog: int) -> tuple[int, int]:
    return 0, messages


def _publish_one_by_one(messages: int, _backlog: int) -> tuple[int, int]:
    return 0, min(messages, BLOCKING_PUBLISH_CAP)


def _backlog(_messages: int, backlog: int) -> tuple[int, int]:
    return backlog, min(BACKLOG_CONSUMED, backlog)


RAW = "pika-twisted-raw"
NO_OTEL = "fedmq-sync-no-otel"
OTEL_SDK = "fedmq-sync-otel-sdk"
FEDORA_MESSAGING = "fedora-messaging"
FEDMQ_SCHEMA = "fedmq-schema"
FEDORA_MESSAGING_SCHEMA = "fedora-messaging-schema"
#: The registered message class (with a real body schema) both schema contenders
#: validate every message against; ``tests/fedora_schemas`` provides it.
SCHEMA = "fedmqtest.build.finished.v1"
SCHEMA_PACKAGE = "fedmq_test_schemas"
PUBLISH_RAW = "publish-pika-twisted-raw"
PUBLISH_FEDMQ_TWISTED = "publish-fedmq-twisted"
PUBLISH_FEDMQ_POST = "publish-fedmq-post-flush"
PUBLISH_FEDMQ_BLOCKING = "publish-fedmq-blocking"
PUBLISH_RAW_BLOCKING = "publish-pika-blocking-raw"
PUBLISH_FEDORA_MESSAGING = "publish-fedora-messaging"

CONTENDERS: tuple[Contender, ...] = (
    Contender(
        "fedmq-sync",
        "fedmq, sync no-op callback, serial dispatch (concurrency 1)",
        _all,
    ),
    Contender(
        NO_OTEL,
        "fedmq-sync with OpenTelemetry kept from import (no otel extra)",
        _all,
    ),
    Contender(
        OTEL_SDK,
        "fedmq-sync with the OpenTelemetry SDK tracing and metering, to no-op exporters",
        _all,
    ),
    Contender(
        "fedmq-async",
        "fedmq, async no-op callback, Twisted's asyncio reactor",
        _all,
    ),
    Contender(
        "fedmq-async-default",
        "fedmq, async no-op callback, default reactor (fedmq's own loop thread)",
        _all,
    ),
    Contender(
        "fedmq-c16-sleep1ms",
        "fedmq, sync callback sleeping 1 ms, concurrency 16",
        _fifth_if_large,
    ),
    Contender(
        "fedmq-sync-c16",
        "fedmq, sync no-op callback, concurrency 16 (the pair of fedmq-sync-c16-slow1pct)",
        _all,
    ),
    Contender(
        "fedmq-sync-c16-slow1pct",
        f"fedmq, sync callback, concurrency 16, one message in {SLOW_EVERY} sleeping "
        f"{SLOW_SLEEP * 1000:g} ms",
        _all,
    ),
    Contender(
        RAW,
        "raw pika TwistedProtocolConnection, one ack per message on the reactor thread",
        _all,
    ),
    Contender(
        "pika-twisted-raw-batched",
        f"raw pika TwistedProtocolConnection, ack multiple=True every {ACK_BATCH} messages",
        _all,
    ),
    Contender(
        FEDORA_MESSAGING,
        "fedora-messaging's twisted_consume, sync no-op callback",
        _fedora_messaging_cap,
    ),
    Contender(
        FEDMQ_SCHEMA,
        f"fedmq, sync no-op callback given {SCHEMA} instances, each validated",
        _all,
        SCHEMA,
    ),
    Contender(
        FEDORA_MESSAGING_SCHEMA,
        f"fedora-messaging's twisted_consume, sync no-op callback, {SCHEMA} messages",
        _fedora_messaging_cap,
        SCHEMA,
    ),
    Contender(
        "rss-backlog",
        f"fedmq-sync consuming {BACKLOG_CONSUMED:,} messages of a large backlog (RSS)",
        _backlog,
    ),
    Contender(
        PUBLISH_RAW,
        "raw pika TwistedProtocolConnection, confirms on, every message issued at once",
        _publish_all,
        kind="publish",
    ),
    Contender(
        PUBLISH_FEDMQ_TWISTED,
        "fedmq.Publisher.post() with on_ack from Twisted (waiting when the bound is full), "
        "then flush()",
        _publish_all,
        kind="publish",
    ),
    Contender(
        PUBLISH_FEDMQ_POST,
        "fedmq.Publisher.post() with on_ack from a script's thread, then flush()",
        _publish_all,
        kind="publish",
    ),
    Contender(
        PUBLISH_FEDMQ_BLOCKING,
        "blocking fedmq.publish() in a script's loop, one confirm at a time",
        _publish_one_by_one,
        kind="publish",
    ),
    Contender(
        PUBLISH_RAW_BLOCKING,
        "raw pika BlockingConnection in a script's loop, one confirm at a time (the ceiling)",
        _publish_one_by_one,
        kind="publish",
    ),
    Contender(
        PUBLISH_FEDORA_MESSAGING,
        "blocking fedora_messaging.api.publish() in a script's loop",
        _publish_one_by_one,
        kind="publish",
    ),
)

BY_NAME: dict[str, Contender] = {contender.name: contender for contender in CONTENDERS}
