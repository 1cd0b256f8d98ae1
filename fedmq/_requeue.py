"""``fedmq requeue-dead``: move the messages parked in ``<queue>.dead`` back to their queue.

A message is parked in ``<queue>.dead`` when it has failed ``retry.max_attempts``
runs, or when its body does not decode. Once a person has fixed the cause,
this moves the messages back, one at a time and in order: each is republished
to the default exchange with the queue's name as routing key (mandatory, and
confirmed by the broker), and only then is the parked copy acknowledged. If
the process dies between the two, the parked copy stays parked: a duplicate
is possible, a loss is not.

The verdict headers (``X-Dropped-*``, ``X-Processing-Exception(s)``) are left
behind, so a moved message gets a fresh set of runs; the ``X-Original-*``
headers, and the body bytes (compressed or not), travel unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from fedmq import _headers
from fedmq._amqp import AMQPChannel, translate_error
from fedmq._connector import connect_any
from fedmq._policy import dead_queue_name
from fedmq.config import Config
from fedmq.exceptions import (
    BrokerError,
    DeclarationError,
    FedmqError,
    PublishError,
    PublishTimeout,
)
from fedmq.message import Properties

#: The headers that record one consumer's verdict on a message, not the
#: message itself: a message moved back to its queue leaves them behind.
VERDICT_HEADERS = frozenset(_headers.VERDICT_HEADERS)

#: How long to wait for the broker to confirm each republished message.
CONFIRM_TIMEOUT = 30.0


def without_verdict_headers(headers: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A parked message's headers, less the ones that describe why it was parked.

    Args:
        headers: the parked message's application headers (None: it has none).

    Returns:
        A new dict without :data:`VERDICT_HEADERS` (every other header, the
        ``X-Original-*`` ones included, is kept), or None for None.

    """
    if headers is None:
        return None
    return {name: value for name, value in headers.items() if name not in VERDICT_HEADERS}


def requeued_properties(properties: Any) -> Properties:
    """The properties to republish a parked message with: its own, minus the verdict headers."""
    props = Properties.from_object(properties)
    props.headers = without_verdict_headers(props.headers)
    return props


async def _check_queue(channel: AMQPChannel, queue: str) -> None:
    """Check with a passive declare that ``queue`` exists.

    Raises:
        DeclarationError: it does not (or the broker refused to say), in the broker's words.

    """
    try:
        await channel.queue_counts(queue)
    except Exception as error:
        code = getattr(error, "reply_code", None)
        if code is None:
            raise
        text = getattr(error, "reply_text", "")
        raise DeclarationError(
            f"The broker refused checking queue {queue!r}: {code} {text}", code, text
        ) from None


def _plural(count: int) -> str:
    return f"{count} message{'' if count == 1 else 's'}"


async def requeue_dead(
    config: Config, reactor: IReactorTime, queue: str, limit: int | None = None
) -> int:
    """Move the messages parked in ``<queue>.dead`` back to ``queue``, oldest first.

    Args:
        config: where the broker is, and how to connect.
        reactor: the reactor to run on.
        queue: the queue whose parked messages to move back.
        limit: move at most this many; None for every parked message.

    Returns:
        How many messages moved.

    Raises:
        DeclarationError: ``queue`` or ``<queue>.dead`` does not exist.
        PublishError: the broker nacked, could not route, or did not confirm a
            republished message, or closed the channel meanwhile. That
            message stays parked; the error says how many moved before it.
        ConnectionFailed: fedmq could not connect to the broker.

    """
    dead = dead_queue_name(queue)
    moved = 0
    connection = await connect_any(config, reactor)
    try:
        channel = await connection.channel()
        await _check_queue(channel, queue)
        await _check_queue(channel, dead)
        await channel.confirm_select()
        while limit is None or moved < limit:
            try:
                delivery = await channel.get(dead)
            except FedmqError:
                raise
            except Exception as error:
                raise translate_error(error, connection.address) from None
            if delivery is None:
                break
            tag, _redelivered, _exchange, _routing_key, properties, data, _left = delivery
            try:
                await _publish_confirmed(
                    channel, reactor, queue, data, requeued_properties(properties)
                )
            except (PublishError, BrokerError) as error:
                if channel.is_open:
                    channel.nack(tag, requeue=True)  # it stays parked
                raise PublishError(
                    f"{error}; {_plural(moved)} moved to {queue!r} before it, and it stays "
                    f"in {dead!r}"
                ) from None
            channel.ack(tag, False)
            moved += 1
        await channel.close()
    finally:
        await connection.close()
    return moved


def _publish_confirmed(
    channel: AMQPChannel, reactor: IReactorTime, queue: str, data: bytes, properties: Properties
) -> defer.Deferred[None]:
    d = channel.publish("", queue, data, properties, mandatory=True)

    def timed_out(failure: Failure) -> Failure:
        failure.trap(defer.TimeoutError)
        return Failure(
            PublishTimeout(
                f"The broker did not confirm the message republished to queue {queue!r} "
                f"within {CONFIRM_TIMEOUT:g} s"
            )
        )

    d.addTimeout(CONFIRM_TIMEOUT, reactor)
    d.addErrback(timed_out)
    return d


__all__ = [
    "VERDICT_HEADERS",
    "requeue_dead",
    "requeued_properties",
    "without_verdict_headers",
]
