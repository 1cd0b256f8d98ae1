"""Messages: what a callback receives and what a publisher sends.

A consumer builds one :class:`Message` per delivery, so that is kept cheap:
the body is decoded once, eagerly, and the AMQP properties are copied into a
:class:`Properties` only when first asked for. pika's properties are read by
attribute name, like any other object's; this module does not import pika.
"""

from __future__ import annotations

import codecs
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fedmq.exceptions import FedmqError

__all__ = ["DecodeError", "Message", "Properties", "decode_body", "encode_body"]

# The AMQP 0-9-1 basic properties, in the order the spec lists them.
_FIELDS = tuple(
    "content_type content_encoding headers delivery_mode priority correlation_id reply_to"
    " expiration message_id timestamp type user_id app_id cluster_id".split()
)
_FIELD_NAMES = frozenset(_FIELDS)


class DecodeError(FedmqError):
    """A message body is not valid for its content type.

    Attributes:
        content_type: the content type the message carried, or None.
    """

    def __init__(self, text: str, content_type: str | None = None):
        super().__init__(text)
        self.content_type = content_type


class Properties:
    """The AMQP 0-9-1 basic properties of a message; every one defaults to None.

    ``timestamp`` is in whole seconds since the epoch, as AMQP carries it.

    Raises:
        TypeError: a keyword argument names no AMQP property.
    """

    __slots__ = _FIELDS

    content_type: str | None
    content_encoding: str | None
    headers: dict[str, Any] | None
    delivery_mode: int | None
    priority: int | None
    correlation_id: str | None
    reply_to: str | None
    expiration: str | None
    message_id: str | None
    timestamp: int | None
    type: str | None
    user_id: str | None
    app_id: str | None
    cluster_id: str | None

    def __init__(self, **kwargs: Any):
        for name in kwargs:
            if name not in _FIELD_NAMES:
                raise TypeError(f"Properties() got an unexpected keyword argument {name!r}")
        for name in _FIELDS:
            setattr(self, name, kwargs.get(name))

    @classmethod
    def from_object(cls, obj: object) -> Properties:
        """Copy the AMQP properties from any object with those attribute names.

        pika's ``BasicProperties`` is one. Missing attributes become None; the
        copy is shallow (``headers`` is the same dict).
        """
        props = cls.__new__(cls)
        for name in _FIELDS:
            setattr(props, name, getattr(obj, name, None))
        return props

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in _FIELDS if getattr(self, name) is not None
        )
        return f"Properties({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable


# --- content types ----------------------------------------------------------

_JSON, _TEXT, _BYTES = 0, 1, 2
_JSON_TYPE = "application/json"
_BYTES_TYPE = "application/octet-stream"

# Deliveries nearly always repeat a handful of content types, so their parses
# are kept; the size cap stops a producer inventing new ones from growing it.
_PARSED: dict[str | None, tuple[int, str | None]] = {None: (_JSON, None), "": (_JSON, None)}
_PARSED_MAX = 64
# json.loads re-checks its arguments on every call and sniffs bytes for
# UTF-16/32; neither is worth paying for per message (RFC 8259 JSON is UTF-8).
_decode_json = json.JSONDecoder().decode


def _parse_content_type(content_type: str | None) -> tuple[int, str | None]:
    """Return the kind of body a content type names and its charset, if any."""
    try:
        return _PARSED[content_type]
    except KeyError:
        pass
    assert content_type is not None  # None is always in the cache
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type == _JSON_TYPE or media_type.endswith("+json"):
        kind = _JSON
    elif media_type.startswith("text/"):
        kind = _TEXT
    else:
        kind = _BYTES
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    if charset is not None:
        try:
            charset = codecs.lookup(charset).name
        except LookupError:
            pass  # reported as a DecodeError or ValueError when it is used
    if len(_PARSED) < _PARSED_MAX:
        _PARSED[content_type] = (kind, charset)
    return kind, charset


def decode_body(data: bytes, content_type: str | None) -> Any:
    """Decode a message body according to its content type.

    ``application/json``, any ``+json`` type and a missing content type give
    the decoded JSON value, and an empty body gives None (it holds no JSON
    value). ``text/*`` gives a ``str`` decoded with the ``charset`` parameter,
    UTF-8 when absent. Any other content type gives ``data`` itself.

    Args:
        data: the body as received.
        content_type: the message's content type, parameters included.

    Returns:
        The decoded body.

    Raises:
        DecodeError: the body is not valid for its content type, or the charset
            is one Python cannot decode text with.
    """
    kind, charset = _parse_content_type(content_type)
    if kind == _BYTES:
        return data
    try:
        text = data.decode(charset or "utf-8")
        if kind == _TEXT:
            return text
        return _decode_json(text) if text else None
    except LookupError:
        problem = f"names the charset {charset!r}, which Python cannot decode text with"
    except UnicodeDecodeError as exc:
        problem = f"is not valid {exc.encoding} text ({exc.reason} at byte {exc.start})"
    except ValueError as exc:  # json.JSONDecodeError
        problem = f"is not valid JSON ({exc})"
    except RecursionError:
        problem = "nests JSON too deeply to decode"
    text = f"A message body with content type {content_type!r} {problem}."
    raise DecodeError(text, content_type) from None


def encode_body(body: Any, content_type: str) -> bytes:
    """Serialize a body according to the content type it will be sent with.

    ``bytes``, ``bytearray`` and ``memoryview`` bodies are sent as they are.
    Otherwise a JSON content type gives compact UTF-8 JSON, and ``text/*``
    encodes a ``str`` with the ``charset`` parameter, UTF-8 when absent.

    Returns:
        The body as bytes.

    Raises:
        TypeError: the body cannot be sent as that content type.
        ValueError: the body holds NaN or infinity, which JSON cannot carry,
            or text the charset cannot encode, or the charset is unknown.
    """
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    kind, charset = _parse_content_type(content_type)
    if kind == _BYTES:
        raise TypeError(
            f"A body with content type {content_type!r} must be bytes, not {type(body).__name__}."
        )
    if kind == _TEXT and not isinstance(body, str):
        raise TypeError(
            f"A body with content type {content_type!r} must be str, not {type(body).__name__}."
        )
    if kind == _JSON:
        body = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text: str = body
    try:
        return text.encode(charset or "utf-8")
    except LookupError:
        raise ValueError(
            f"The content type {content_type!r} names the charset {charset!r},"
            " which Python does not know."
        ) from None


# --- messages ---------------------------------------------------------------


class Message:
    """A message: one delivered to a callback, or one built to publish.

    Built directly, it is a message to publish: :func:`encode_body` serializes
    ``body`` into :attr:`data`, and the message gets a uuid4 hex
    ``message_id``, the current ``timestamp`` and ``delivery_mode`` 2 (or 1).
    The keyword-only arguments set the AMQP properties of the same names.

    Args:
        body: the body; ``bytes`` are sent as they are.
        topic: the routing key.
        headers: application headers, copied.
        properties: properties to start from, copied: arguments that are given
            override them, and ``headers`` are merged over theirs.
        content_type: ``application/json`` when not given, or
            ``application/octet-stream`` for a bytes body.
        persistent: delivery_mode 2 rather than 1, unless ``properties`` sets it.

    Raises:
        TypeError, ValueError: as :func:`encode_body` does.
        DecodeError: a bytes body is not valid for its JSON or text content
            type (it is decoded so that :attr:`body` is what consumers see).
    """

    __slots__ = (
        "_body",
        "_data",
        "_delivery_tag",
        "_exchange",
        "_properties",
        "_queue",
        "_raw_properties",
        "_redelivered",
        "_topic",
    )

    _body: Any
    _data: bytes
    _delivery_tag: int | None
    _exchange: str | None
    _properties: Properties | None  # on a delivery, None until first asked for
    _queue: str | None
    _raw_properties: Any
    _redelivered: bool
    _topic: str

    def __init__(
        self,
        body: Any = None,
        topic: str = "",
        headers: Mapping[str, Any] | None = None,
        *,
        properties: Properties | None = None,
        content_type: str | None = None,
        message_id: str | None = None,
        priority: int | None = None,
        expiration: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        type: str | None = None,
        app_id: str | None = None,
        persistent: bool = True,
    ):
        props = Properties() if properties is None else Properties.from_object(properties)
        is_bytes = isinstance(body, (bytes, bytearray, memoryview))
        if content_type is not None:
            props.content_type = content_type
        elif props.content_type is None:
            props.content_type = _BYTES_TYPE if is_bytes else _JSON_TYPE
        for name, value in (
            ("message_id", message_id),
            ("priority", priority),
            ("expiration", expiration),
            ("correlation_id", correlation_id),
            ("reply_to", reply_to),
            ("type", type),
            ("app_id", app_id),
        ):
            if value is not None:
                setattr(props, name, value)
        if props.message_id is None:
            props.message_id = uuid.uuid4().hex
        if props.timestamp is None:
            props.timestamp = int(time.time())
        if props.delivery_mode is None:
            props.delivery_mode = 2 if persistent else 1
        props.headers = {**(props.headers or {}), **(headers or {})}

        self._data = encode_body(body, props.content_type)
        self._body = decode_body(self._data, props.content_type) if is_bytes else body
        self._topic = topic
        self._properties = self._raw_properties = props
        self._exchange = self._queue = self._delivery_tag = None
        self._redelivered = False

    @classmethod
    def _from_delivery(
        cls,
        data: bytes,
        properties: Properties | Any,
        *,
        topic: str,
        exchange: str,
        delivery_tag: int,
        redelivered: bool,
        queue: str | None,
    ) -> Message:
        """Build the message for one delivery, decoding its body now.

        ``properties`` is a :class:`Properties` or any object with its attribute
        names, such as pika's ``BasicProperties``.

        Raises:
            DecodeError: the body is not valid for its content type.
        """
        message = cls.__new__(cls)
        message._body = decode_body(data, getattr(properties, "content_type", None))
        message._data = data
        message._topic = topic
        message._exchange = exchange
        message._queue = queue
        message._delivery_tag = delivery_tag
        message._redelivered = redelivered
        message._raw_properties = properties
        message._properties = properties if isinstance(properties, Properties) else None
        return message

    @property
    def body(self) -> Any:
        """The decoded body: a JSON value, a ``str`` for text, else ``bytes``."""
        return self._body

    @property
    def data(self) -> bytes:
        """The body as bytes, exactly as sent or received."""
        return self._data

    @property
    def topic(self) -> str:
        """The routing key."""
        return self._topic

    @property
    def properties(self) -> Properties:
        """The message's AMQP properties."""
        props = self._properties
        if props is None:
            props = self._properties = Properties.from_object(self._raw_properties)
        return props

    @property
    def headers(self) -> dict[str, Any]:
        """The application headers; an empty dict when the message has none."""
        props = self.properties
        if props.headers is None:
            props.headers = {}
        return props.headers

    @property
    def id(self) -> str | None:
        """The message's ``message_id`` property."""
        props = self._properties
        if props is None:
            return getattr(self._raw_properties, "message_id", None)
        return props.message_id

    @property
    def queue(self) -> str | None:
        """The queue it was consumed from; None for a message to publish."""
        return self._queue

    @property
    def exchange(self) -> str | None:
        """The exchange it was published to; None for a message to publish."""
        return self._exchange

    @property
    def redelivered(self) -> bool:
        """Whether the broker delivered it before; False for a message to publish."""
        return self._redelivered

    @property
    def delivery_tag(self) -> int | None:
        """The channel's tag for this delivery; None for a message to publish."""
        return self._delivery_tag

    def __repr__(self) -> str:
        return f"<Message id={self.id!r} topic={self._topic!r} queue={self._queue!r}>"
