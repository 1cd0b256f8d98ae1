"""The JSON-lines format of messages: what ``fedmq record`` and ``get`` write and
``fedmq publish --file`` reads.

One line is one JSON object::

    {"topic": "orders.new", "exchange": "amq.topic", "headers": {"k": "v"},
     "properties": {"content_type": "application/json", "message_id": "..."},
     "body": {"order": 42}}

``body`` holds the decoded body of a JSON or text message; any other body
(and one that does not decode) is in ``body_base64`` instead.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any

from fedmq.exceptions import FedmqError
from fedmq.message import DecodeError, Message, Properties, decode_body

_PROPERTY_NAMES = tuple(name for name in Properties.__slots__ if name != "headers")
_RECORD_KEYS = frozenset(
    {"topic", "exchange", "headers", "properties", "body", "body_base64", "queue", "redelivered"}
)


class UsageError(FedmqError):
    """A command line, file or value the user gave is not usable (exit status 2)."""


def _json_default(value: Any) -> Any:
    # AMQP header tables carry a few types JSON has no word for.
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return base64.b64encode(value).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def message_record(
    topic: str, exchange: str | None, properties: Any, data: bytes, **extra: Any
) -> dict[str, Any]:
    """The JSON-lines record of one message, as ``publish --file`` reads it.

    Args:
        topic: the routing key.
        exchange: the exchange it was published to, if known.
        properties: a :class:`~fedmq.Properties` or anything with its attribute names.
        data: the body as received.
        **extra: more keys (``queue``, ``redelivered``), written after the others.

    Returns:
        A dict ready for :func:`json.dumps` with :func:`dump_record`.
    """
    props = Properties.from_object(properties)
    record: dict[str, Any] = {"topic": topic}
    if exchange is not None:
        record["exchange"] = exchange
    record["headers"] = dict(props.headers or {})
    record["properties"] = {
        name: getattr(props, name) for name in _PROPERTY_NAMES if getattr(props, name) is not None
    }
    body: Any = data
    if data:
        try:
            body = decode_body(data, props.content_type)
        except DecodeError:
            body = data
    if isinstance(body, bytes):
        record["body_base64"] = base64.b64encode(body).decode("ascii")
    else:
        record["body"] = body
    record.update(extra)
    return record


def dump_record(record: dict[str, Any]) -> str:
    """One JSON line (without the newline) for a record."""
    return json.dumps(record, ensure_ascii=False, default=_json_default)


def message_from_record(line: str, where: str) -> tuple[Message, str | None, str | None]:
    """Read one JSON-lines record.

    Args:
        line: the line.
        where: ``FILE:LINE``, for error messages.

    Returns:
        The message (its ``message_id`` and ``timestamp`` kept), the exchange
        the record names (or None) and its topic (or None).

    Raises:
        UsageError: the line is not a valid record; the message says why.
    """
    try:
        record = json.loads(line)
    except ValueError as error:
        raise UsageError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - _RECORD_KEYS)
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; a record has {', '.join(sorted(_RECORD_KEYS))}"
        )
    for key in ("topic", "exchange"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise UsageError(f"{where}: {key} must be a string")
    headers = record.get("headers") or {}
    properties = record.get("properties") or {}
    for key, value in (("headers", headers), ("properties", properties)):
        if not isinstance(value, dict):
            raise UsageError(f"{where}: {key} must be an object")
    if "headers" in properties:
        raise UsageError(f"{where}: headers go in the record's own 'headers' key")
    try:
        props = Properties(**properties)
    except TypeError:
        unknown = sorted(set(properties) - set(_PROPERTY_NAMES))
        raise UsageError(f"{where}: {unknown[0]!r} is not an AMQP message property") from None
    if "body" in record and "body_base64" in record:
        raise UsageError(f"{where}: has body and body_base64; keep one")
    body: Any = record.get("body")
    if "body_base64" in record:
        try:
            body = base64.b64decode(record["body_base64"], validate=True)
        except (ValueError, TypeError):
            raise UsageError(f"{where}: body_base64 is not valid base64") from None
    topic = record.get("topic")
    try:
        message = Message(body, topic or "", headers, properties=props)
    except (TypeError, ValueError, DecodeError) as error:
        raise UsageError(f"{where}: {error}") from None
    return message, record.get("exchange"), topic
