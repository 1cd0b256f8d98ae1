"""Filling a queue with the backlog a contender consumes, and removing it after.

Every contender gets the same messages: small JSON bodies published the way
fedora-messaging publishes them (``application/json``, UTF-8, persistent, a
``message_id`` and fedora-messaging's schema, severity and ``sent-at``
headers), so that fedora-messaging's consumer accepts them and every
contender decodes (or skips) the same bytes.
"""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pika

#: fedora-messaging's ``INFO`` severity.
SEVERITY_INFO = 20
#: Seconds a publish may stay blocked by a broker alarm before giving up.
BLOCKED_TIMEOUT = 60
#: How often to look at the queue while waiting for it to hold the backlog.
POLL_INTERVAL = 0.1


def _parameters(url: str) -> pika.URLParameters:
    parameters = pika.URLParameters(url)
    # A memory or disk alarm blocks publishers; fail instead of hanging.
    parameters.blocked_connection_timeout = BLOCKED_TIMEOUT
    return parameters


def message_body(sequence: int, schema: str | None = None) -> bytes:
    """The JSON body of message number ``sequence`` (about 60 bytes).

    With ``schema`` (the build-finished test schema), a body that schema accepts.
    """
    if schema is not None:
        body = {"build_id": sequence + 1, "package": "bench", "owner": "fedmq", "succeeded": True}
        return json.dumps(body).encode()
    return json.dumps({"sequence": sequence, "text": "a message from fedmq's benchmark"}).encode()


def fill(url: str, queue: str, count: int, timeout: float, schema: str | None = None) -> float:
    """Declare a fresh durable ``queue`` and put ``count`` messages in it.

    Publishes as fast as pika's BlockingConnection goes, without publisher
    confirms, then waits (by passive declares) until the queue holds all of
    them.

    Args:
        url: the broker's AMQP URL.
        queue: the queue's name; it must not exist yet.
        count: how many messages.
        timeout: seconds to wait, after publishing, for the queue to hold them.
        schema: the schema name the messages carry; None for the base schema.

    Returns:
        Seconds taken, publishing and waiting together.

    Raises:
        TimeoutError: the queue did not reach ``count`` messages in time.
        pika.exceptions.AMQPError: the broker refused or the connection failed.

    """
    began = time.monotonic()
    sent_at = datetime.datetime.now(tz=datetime.timezone.utc).replace(microsecond=0).isoformat()
    headers = {
        "fedora_messaging_schema": schema or "base.message",
        "fedora_messaging_severity": SEVERITY_INFO,
        "sent-at": sent_at,
        "priority": 0,
    }
    connection = pika.BlockingConnection(_parameters(url))
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        publish = channel.basic_publish
        for sequence in range(count):
            properties = pika.BasicProperties(
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=pika.DeliveryMode.Persistent,
                headers=headers,
                message_id=str(uuid.uuid4()),
            )
            publish("", queue, message_body(sequence, schema), properties)
        deadline = time.monotonic() + timeout
        held = 0
        while True:
            held = channel.queue_declare(queue, passive=True).method.message_count
            if held >= count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"queue {queue!r} held {held:,} of {count:,} messages "
                    f"{timeout:g} s after publishing"
                )
            # Lets pika answer heartbeats while it waits.
            connection.sleep(POLL_INTERVAL)
    finally:
        if connection.is_open:
            connection.close()
    return time.monotonic() - began


def delete(url: str, queue: str) -> None:
    """Delete ``queue`` and whatever is left in it."""
    connection = pika.BlockingConnection(_parameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        if connection.is_open:
            connection.close()
