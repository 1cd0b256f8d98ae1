"""What became of a published message: an :class:`Ack` with an :class:`AckStatus`.

:meth:`fedmq.Publisher.post` reports each message's fate this way, once,
whatever happened to it: confirmed, refused, returned, timed out, lost
with the connection, or canceled by closing the publisher.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import NamedTuple

from fedmq.exceptions import (
    PublishCanceled,
    PublishConnectionLost,
    PublishError,
    PublishNacked,
    PublishReturned,
    PublishTimeout,
)


class AckStatus(enum.Enum):
    """What became of a posted message."""

    #: The broker took responsibility for it.
    SUCCESS = "success"
    #: The broker refused it: basic.nack (a full queue with ``reject-publish``,
    #: say), or a channel closed over it (no such exchange: the error is then
    #: a :class:`~fedmq.PublishRefused` with the reply code).
    NACKED = "nacked"
    #: Mandatory, and no queue matched its routing key: the broker returned it.
    RETURNED = "returned"
    #: The broker did not confirm it within its timeout; it may still arrive.
    TIMEOUT = "timeout"
    #: There was no connection to send it on, or the connection was lost before its confirm.
    NOT_CONNECTED = "not_connected"
    #: The publisher closed before the broker confirmed it.
    CANCELED = "canceled"


#: The exception class behind each status but SUCCESS.
ERRORS: dict[AckStatus, type[PublishError]] = {
    AckStatus.NACKED: PublishNacked,
    AckStatus.RETURNED: PublishReturned,
    AckStatus.TIMEOUT: PublishTimeout,
    AckStatus.NOT_CONNECTED: PublishConnectionLost,
    AckStatus.CANCELED: PublishCanceled,
}


class Ack(NamedTuple):
    """The fate of one posted message, as ``on_ack`` receives it.

    Attributes:
        message_id: the message's ``message_id`` property.
        status: what became of it.
        error: None for SUCCESS; else the :class:`~fedmq.PublishError` that
            :meth:`fedmq.Publisher.publish` would raise.

    """

    message_id: str | None
    status: AckStatus
    error: PublishError | None = None


#: Called once per message with its Ack; on the reactor thread.
OnAck = Callable[[Ack], None]


__all__ = ["ERRORS", "Ack", "AckStatus", "OnAck"]
