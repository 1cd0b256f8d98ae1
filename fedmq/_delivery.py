"""The records on a delivery's path: a delivery, its outcome, its result, a route.

The dispatcher builds a :class:`Delivery` for each message the broker
delivers, an executor reports a :class:`Result` with an :class:`Outcome`,
and a message that is republished (retried, parked, dropped to the drop
exchange) goes along a :class:`Route`. They are named tuples: as cheap as
the bare tuples they replaced, and read by name.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

from typing_extensions import Self

from fedmq._error_window import ErrorCount
from fedmq.message import Message, Properties


class Outcome(IntEnum):
    """What became of a delivery; each counts in the queue's statistic :attr:`stat`."""

    ACK = 0, "acked"
    NACK = 1, "requeued"
    DROP = 2, "dropped"
    #: A body that cannot be decoded (parked, or rejected without a dead queue).
    UNDECODABLE = 3, "dropped"
    #: Taken by a worker after the consumer decided to stop, and not run.
    RETURNED = 4, "requeued"
    RETRY = 5, "retried"
    #: A type the callback does not accept.
    INVALID = 6, "dropped"
    #: Only as the dispatcher counts a message moved to its dead queue.
    PARKED = 7, "parked"
    CONSUMER_ERROR = 8, "failed"
    ERROR = 9, "failed"
    HALT = 10, "acked"
    #: The callback called ``settle_later()`` and returned: its Settlement
    #: settles the message, and that outcome is the one counted.
    DEFERRED = 11, "received"

    stat: str

    def __new__(cls, value: int, stat: str) -> Self:
        member = int.__new__(cls, value)
        member._value_ = value
        member.stat = stat
        return member


class Delivery(NamedTuple):
    """One message as the broker delivered it, and the queue it came from."""

    delivery_tag: int
    redelivered: bool
    exchange: str
    routing_key: str
    #: pika's ``BasicProperties`` (or anything with the same attributes).
    properties: Any
    body: bytes
    queue: str


class Result(NamedTuple):
    """What became of one delivery, as an executor reports it to the dispatcher."""

    delivery_tag: int
    outcome: Outcome
    #: What the callback raised (or why the delivery was refused), or None.
    error: BaseException | None
    #: The message the callback was given, or None when there was none.
    message: Message | None
    #: Seconds in the callback.
    duration: float
    delivery: Delivery
    #: How the error window counted a consumer error, once it was counted.
    errors: ErrorCount | None = None


class Route(NamedTuple):
    """Where a copy of a delivery is republished, and why."""

    exchange: str
    routing_key: str
    properties: Properties
    #: "retried", "parked" or "dropped".
    what: str


#: The outcomes as module constants, for quick lookups on the per-delivery path.
(
    ACK,
    NACK,
    DROP,
    UNDECODABLE,
    RETURNED,
    RETRY,
    INVALID,
    PARKED,
    CONSUMER_ERROR,
    ERROR,
    HALT,
    DEFERRED,
) = Outcome

__all__ = [
    "ACK",
    "CONSUMER_ERROR",
    "DEFERRED",
    "DROP",
    "ERROR",
    "HALT",
    "INVALID",
    "NACK",
    "PARKED",
    "RETRY",
    "RETURNED",
    "UNDECODABLE",
    "Delivery",
    "Outcome",
    "Result",
    "Route",
]
