"""The two JSON-lines formats of messages that ``fedmq record`` writes and ``fedmq publish`` reads.

**fedora-messaging's format** (the default of ``record`` and ``publish``), as
``fedora-messaging record`` writes it and ``fedora-messaging publish`` reads
it: one JSON object per line, keys sorted, with ``topic``, ``headers``,
``id``, ``body`` (a JSON object), ``queue`` and ``priority``::

    {"body": {"order": 42}, "headers": {"k": "v"}, "id": "...", "priority": 0,
     "queue": "orders", "topic": "orders.new"}

A message read from it is published as fedora-messaging publishes it: a JSON
body, ``content_encoding`` utf-8, the recorded id and priority, and the
headers fedora-messaging adds when they are missing.

**fedmq's own format** (``--format fedmq``, and what ``fedmq get`` prints)
keeps every AMQP property, the exchange, and bodies of any type. One line is
one JSON object::

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
from collections.abc import Mapping, Sequence
from typing import Any

from fedmq.exceptions import FedmqError
from fedmq.message import PROPERTY_NAMES, DecodeError, Message, Properties, decode_body

_PROPERTY_NAMES = tuple(name for name in PROPERTY_NAMES if name != "headers")
_RECORD_KEYS = frozenset(
    {"topic", "exchange", "headers", "properties", "body", "body_base64", "queue", "redelivered"}
)

#: The names of the two formats, as ``--format`` takes them.
FEDORA_FORMAT = "fedora-messaging"
FEDMQ_FORMAT = "fedmq"

_FEDORA_KEYS = frozenset({"topic", "headers", "id", "body", "queue", "priority"})
# Keys that only one of the formats has: a file holding one of them is in that format.
_ONLY_FEDMQ = _RECORD_KEYS - _FEDORA_KEYS
_ONLY_FEDORA = _FEDORA_KEYS - _RECORD_KEYS
# What fedora-messaging's messages carry, and what its publish adds when missing.
_SCHEMA_HEADER = "fedora_messaging_schema"
_SEVERITY_HEADER = "fedora_messaging_severity"
_SENT_AT_HEADER = "sent-at"
_BASE_SCHEMA = "base.message"
_PACKAGE_HEADER = "fedora_messaging_schema_package"
_BASE_PACKAGE = "fedora_messaging"  # the package fedora-messaging names for base.message
_SEVERITIES = (10, 20, 30, 40)  # DEBUG, INFO, WARNING, ERROR
_INFO = 20


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
    """Read one record of fedmq's format.

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
    return message_from_fedmq_record(record, where)


def message_from_fedmq_record(
    record: Mapping[str, Any], where: str
) -> tuple[Message, str | None, str | None]:
    """Like :func:`message_from_record`, for a line already decoded."""
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


# --- fedora-messaging's format ---------------------------------------------------


def fedora_record(message: Message) -> str:
    """One line (without the newline) of fedora-messaging's format for a message.

    The keys are sorted and the text is not escaped to ASCII, as
    fedora-messaging writes them. ``priority`` is the message's, or 0.

    Raises:
        UsageError: the body is not a JSON object, which is all that format holds.

    """
    body = message.body
    if not isinstance(body, Mapping):
        kind = "bytes" if isinstance(body, bytes | bytearray) else type(body).__name__
        raise UsageError(
            f"message {message.id} (topic {message.topic!r}) has a body that is not a JSON "
            f"object ({kind}), which fedora-messaging's format cannot hold; use --format fedmq"
        )
    record: dict[str, Any] = {
        "topic": message.topic,
        "headers": dict(message.headers),
        "body": dict(body),
        "queue": message.queue,
        "priority": message.properties.priority or 0,
    }
    if message.id is not None:
        record["id"] = message.id
    try:
        json.dumps(body)  # strictly: header values may be converted, body values not
    except (TypeError, ValueError) as error:
        raise UsageError(
            f"message {message.id} (topic {message.topic!r}) has a body JSON cannot hold "
            f"({error}); use --format fedmq"
        ) from None
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=_json_default)


def message_from_fedora_record(
    record: Mapping[str, Any], where: str, *, now: datetime.datetime | None = None
) -> Message:
    """Build the message ``fedora-messaging publish`` would send for one record.

    The body is encoded as fedora-messaging encodes it (JSON, escaped to
    ASCII), with ``content_encoding`` utf-8; the message
    keeps the record's ``id`` (a new one without it) and gets its
    ``priority`` (0 without it), also as the ``priority`` header. Missing
    ``fedora_messaging_schema``, ``fedora_messaging_severity`` and ``sent-at``
    headers become ``base.message``, 20 (INFO) and ``now``, and a
    ``base.message`` gets the ``fedora_messaging_schema_package`` header
    ``fedora_messaging``. Other headers, the schema's included, are kept as
    recorded. ``queue`` is ignored.

    Args:
        record: one decoded line.
        where: ``FILE:LINE``, for error messages.
        now: the time for a missing ``sent-at``; the current time by default.

    Raises:
        UsageError: the record is not valid in that format; the message says why.

    """
    unknown = sorted(set(record) - _FEDORA_KEYS)
    if unknown:
        raise UsageError(
            f"{where}: unknown key {unknown[0]!r}; a fedora-messaging record has "
            f"{', '.join(sorted(_FEDORA_KEYS))}"
        )
    for key in ("topic", "body"):
        if key not in record:
            raise UsageError(f"{where}: the record has no {key!r}")
    topic, body = record["topic"], record["body"]
    if not isinstance(topic, str):
        raise UsageError(f"{where}: topic must be a string")
    if not isinstance(body, dict):
        raise UsageError(
            f"{where}: body must be a JSON object in fedora-messaging's format, got "
            f"{_json_type(body)} (a record in fedmq's format needs --format fedmq)"
        )
    headers = _fedora_record_headers(record, where)
    message_id = record.get("id")
    if message_id is not None and not isinstance(message_id, str):
        raise UsageError(f"{where}: id must be a string")
    priority = record.get("priority")
    if priority is not None and (
        isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 255
    ):
        raise UsageError(f"{where}: priority must be a whole number from 0 to 255")
    queue = record.get("queue")
    if queue is not None and not isinstance(queue, str):
        raise UsageError(f"{where}: queue must be a string")
    sent_at = (now or datetime.datetime.now(datetime.timezone.utc)).replace(microsecond=0)
    headers = {
        _SCHEMA_HEADER: _BASE_SCHEMA,
        _SEVERITY_HEADER: _INFO,
        _SENT_AT_HEADER: sent_at.isoformat(),
        **headers,
        "priority": priority or 0,
    }
    if headers[_SCHEMA_HEADER] == _BASE_SCHEMA:
        headers.setdefault(_PACKAGE_HEADER, _BASE_PACKAGE)
    properties = Properties(
        content_type="application/json",
        content_encoding="utf-8",
        message_id=message_id,
        priority=priority or 0,
    )
    # Encoded as fedora-messaging encodes it, so the bytes are the same too.
    return Message(json.dumps(body).encode("utf-8"), topic, headers, properties=properties)


def _fedora_record_headers(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The record's headers, checked where fedora-messaging gives them a meaning."""
    headers = record.get("headers")
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise UsageError(f"{where}: headers must be an object")
    for key in (_SCHEMA_HEADER, _SENT_AT_HEADER):
        if key in headers and not isinstance(headers[key], str):
            raise UsageError(f"{where}: the {key} header must be a string")
    if _SEVERITY_HEADER in headers and headers[_SEVERITY_HEADER] not in _SEVERITIES:
        raise UsageError(
            f"{where}: the {_SEVERITY_HEADER} header must be one of "
            f"{', '.join(map(str, _SEVERITIES))}"
        )
    return headers


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse_lines(lines: Sequence[str], name: str) -> list[tuple[str, dict[str, Any]]]:
    """Decode each non-blank line of a file as a JSON object.

    Args:
        lines: the file's lines.
        name: the file's name, for error messages.

    Returns:
        ``("FILE:LINE", object)`` for each non-blank line, in order.

    Raises:
        UsageError: a line is not a JSON object; the message names it.

    """
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise UsageError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(record, dict):
            raise UsageError(f"{where}: expected a JSON object, got {type(record).__name__}")
        records.append((where, record))
    return records


def detect_format(records: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Which format a file's records are in: ``"fedmq"`` or ``"fedora-messaging"``.

    fedmq's when one record has a key only fedmq's format has (``exchange``,
    ``properties``, ``body_base64``, ``redelivered``), else fedora-messaging's.

    Raises:
        UsageError: one record has a key only fedmq's format has and another a key
            only fedora-messaging's has (``id``, ``priority``).

    """
    fedmq_at = next((where for where, record in records if _ONLY_FEDMQ & set(record)), None)
    if fedmq_at is None:
        return FEDORA_FORMAT
    fedora_at = next((where for where, record in records if _ONLY_FEDORA & set(record)), None)
    if fedora_at is not None:
        raise UsageError(
            f"{fedmq_at} is in fedmq's format and {fedora_at} in fedora-messaging's; "
            "a file holds one format (choose with --format)"
        )
    return FEDMQ_FORMAT
