"""The application headers fedmq writes, and the check every message's headers pass.

The headers are those of messages it retries, parks or drops.
"""

from __future__ import annotations

import datetime
import decimal
from collections.abc import Mapping
from typing import Any

from fedmq.exceptions import PublishFormatError

#: The text of the exception behind the latest failed run.
PROCESSING_EXCEPTION = "X-Processing-Exception"
#: How many runs of the callback have failed so far.
PROCESSING_EXCEPTIONS = "X-Processing-Exceptions"
#: Where the message was first published, and the queue it was first consumed from.
ORIGINAL_EXCHANGE = "X-Original-Exchange"
ORIGINAL_ROUTING_KEY = "X-Original-Routing-Key"
ORIGINAL_QUEUE = "X-Original-Queue"
#: Who dropped or parked the message, why, and when (ISO-8601, UTC).
DROPPED_BY = "X-Dropped-By"
DROPPED_REASON = "X-Dropped-Reason"
DROPPED_TIMESTAMP = "X-Dropped-Timestamp"

#: Headers that describe one consumer's verdict, not the message itself.
VERDICT_HEADERS = (
    DROPPED_BY,
    DROPPED_REASON,
    DROPPED_TIMESTAMP,
    PROCESSING_EXCEPTION,
    PROCESSING_EXCEPTIONS,
)

#: The headers fedora-messaging's publishers write and its consumers read:
#: the message's schema name, its severity, and when it was sent (ISO-8601).
FEDORA_SCHEMA = "fedora_messaging_schema"
FEDORA_SEVERITY = "fedora_messaging_severity"
SENT_AT = "sent-at"


def checked_headers(headers: Mapping[str, Any]) -> dict[str, Any]:
    """``headers`` as AMQP carries them, or an error naming the header that cannot go.

    AMQP field tables carry strings, bytes, booleans, integers (64-bit),
    :class:`decimal.Decimal`, :class:`datetime.datetime`, None, and tables
    and arrays of these; a tuple is sent as an array.

    Raises:
        PublishFormatError: a header name is not a string, or a value is of
            another type (a float, say); the text names the header and the type.

    """
    return {_checked_name(name): _checked(value, name) for name, value in headers.items()}


def _checked_name(name: Any) -> str:
    if not isinstance(name, str):
        raise PublishFormatError(
            f"Header name {name!r} is a {type(name).__name__}; header names must be strings"
        )
    return name


def _checked(value: Any, where: str) -> Any:
    if value is None or isinstance(value, _SCALARS):
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not _INT64[0] <= value <= _INT64[1]
        ):
            raise PublishFormatError(
                f"Header {where!r} is an integer too large for AMQP (64 bits at most): {value}"
            )
        return value
    if isinstance(value, Mapping):
        return {
            _checked_name(name): _checked(item, f"{where}.{name}") for name, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_checked(item, f"{where}[{index}]") for index, item in enumerate(value)]
    hint = " (send it as a string, or as a decimal.Decimal)" if isinstance(value, float) else ""
    raise PublishFormatError(
        f"Header {where!r} is a {type(value).__name__}, which AMQP headers cannot carry{hint}"
    )


_SCALARS = (str, bytes, bool, int, decimal.Decimal, datetime.datetime)
_INT64 = (-(2**63), 2**63 - 1)
