"""Messages: what a callback receives and what a publisher sends.

A consumer builds one :class:`Message` per delivery, so that is kept cheap:
the body is decoded once, eagerly, and the AMQP properties are copied into a
:class:`Properties` only when first asked for. pika's properties are read by
attribute name, like any other object's; this module does not import pika.
Bodies are encoded and decoded in :mod:`fedmq._codecs`; its public names
(:func:`decode_body`, :func:`encode_body`, :class:`DecodeError`) are
importable from here. :class:`Message` keeps its body, topic and properties
itself; its delivery side (queue, exchange, delivery tag, attempt, and
``settle_later()``) is :class:`fedmq._message_delivery.DeliveryAttributes`,
and what fedora-messaging callbacks read is
:class:`fedmq._message_fedora.FedoraAttributes`.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fedmq._codecs import (
    _BYTES_TYPE,
    _JSON_TYPE,
    DEFAULT_MAX_BODY_SIZE,
    _compress,
    _serialize,
    decode_body,
    encode_body,
)
from fedmq._headers import (
    ORIGINAL_EXCHANGE,
    ORIGINAL_ROUTING_KEY,
    checked_headers,
)
from fedmq._message_delivery import DeliveryAttributes
from fedmq._message_fedora import FedoraAttributes
from fedmq.exceptions import DecodeError

if TYPE_CHECKING:
    from fedmq._delivery import Delivery

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DecodeError",
    "Message",
    "Properties",
    "decode_body",
    "encode_body",
]

#: The AMQP 0-9-1 basic properties, in the order the spec lists them.
PROPERTY_NAMES = (
    "content_type",
    "content_encoding",
    "headers",
    "delivery_mode",
    "priority",
    "correlation_id",
    "reply_to",
    "expiration",
    "message_id",
    "timestamp",
    "type",
    "user_id",
    "app_id",
    "cluster_id",
)
_FIELD_NAMES = frozenset(PROPERTY_NAMES)


class Properties:
    """The AMQP 0-9-1 basic properties of a message; every one defaults to None.

    ``timestamp`` is in whole seconds since the epoch, as AMQP carries it.

    Raises:
        TypeError: a keyword argument names no AMQP property.

    """

    __slots__ = PROPERTY_NAMES

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

    def __init__(self, **kwargs: Any) -> None:
        for name in kwargs:
            if name not in _FIELD_NAMES:
                raise TypeError(f"Properties() got an unexpected keyword argument {name!r}")
        for name in PROPERTY_NAMES:
            setattr(self, name, kwargs.get(name))

    @classmethod
    def _blank(cls) -> Properties:
        """``Properties()``, without checking keyword arguments there are none of."""
        props = cls.__new__(cls)
        props.content_type = props.content_encoding = props.headers = None
        props.delivery_mode = props.priority = props.correlation_id = props.reply_to = None
        props.expiration = props.message_id = props.timestamp = props.type = None
        props.user_id = props.app_id = props.cluster_id = None
        return props

    @classmethod
    def from_object(cls, obj: object) -> Properties:
        """Copy the AMQP properties from any object with those attribute names.

        pika's ``BasicProperties`` is one. Missing attributes become None; the
        copy is shallow (``headers`` is the same dict).
        """
        props = cls.__new__(cls)
        if type(obj) is Properties:  # the common case when publishing: no getattr() loop
            props.content_type = obj.content_type
            props.content_encoding = obj.content_encoding
            props.headers = obj.headers
            props.delivery_mode = obj.delivery_mode
            props.priority = obj.priority
            props.correlation_id = obj.correlation_id
            props.reply_to = obj.reply_to
            props.expiration = obj.expiration
            props.message_id = obj.message_id
            props.timestamp = obj.timestamp
            props.type = obj.type
            props.user_id = obj.user_id
            props.app_id = obj.app_id
            props.cluster_id = obj.cluster_id
            return props
        for name in PROPERTY_NAMES:
            setattr(props, name, getattr(obj, name, None))
        return props

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{name}={getattr(self, name)!r}"
            for name in PROPERTY_NAMES
            if getattr(self, name) is not None
        )
        return f"Properties({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Properties):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in PROPERTY_NAMES)

    __hash__ = None  # type: ignore[assignment]  # mutable, so unhashable


# --- messages ---------------------------------------------------------------


#: Message ids come from the ``random`` module's generator, seeded from the OS
#: at start and again in a forked child: ``uuid.uuid4()`` reads ``os.urandom``
#: for each id, a system call that lets go of the GIL, and a script posting
#: from one thread while the reactor runs in another then waits to get it back
#: at every message.
def _new_message_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as ``uuid.uuid4().hex`` gives."""
    # The bits uuid.UUID(int=..., version=4) sets, without building the object.
    number = random.getrandbits(128) & _UUID_KEEP | _UUID_V4
    return f"{number:032x}"


#: The variant (RFC 4122) and version (4) bits of a random UUID, and the bits it keeps.
_UUID_V4 = (0x8000 << 48) | (4 << 76)
_UUID_KEEP = ~((0xC000 << 48) | (0xF000 << 64))


class Message(DeliveryAttributes, FedoraAttributes):
    """A message: one delivered to a callback, or one built to publish.

    Built directly, it is a message to publish: :func:`encode_body` serializes
    ``body`` into :attr:`data`, and the message gets a uuid4 hex
    ``message_id``, the current ``timestamp`` and ``delivery_mode`` 2 (or 1).
    The keyword-only arguments set the AMQP properties of the same names.

    Args:
        body: the body; ``bytes`` are sent as they are.
        topic: the routing key.
        headers: application headers, copied: strings, bytes, booleans,
            integers, ``decimal.Decimal``, ``datetime``, None, and dicts and
            lists (or tuples) of these.
        properties: properties to start from, copied: arguments that are given
            override them, and ``headers`` are merged over theirs.
        content_type: ``application/json`` when not given, or
            ``application/octet-stream`` for a bytes body.
        content_encoding: ``gzip``, ``deflate`` or ``bzip2`` compresses the
            serialized body (bytes too). A bytes body whose ``properties``
            already name a content encoding is taken as encoded, and sent as
            it is.
        persistent: delivery_mode 2 rather than 1, unless ``properties`` sets it.

    Raises:
        TypeError, ValueError, ModuleNotFoundError: as :func:`encode_body` does.
        DecodeError: a bytes body is not valid for its content type (it is
            decoded so that :attr:`body` is what consumers see).
        PublishFormatError: a header AMQP cannot carry (a float, say); the
            error names the header and its type.

    """

    __slots__ = ("_body", "_data", "_properties", "_raw_properties", "_topic")

    _body: Any
    _data: bytes
    _properties: Properties | None  # on a delivery, None until first asked for
    _raw_properties: Any
    _topic: str

    def __init__(  # noqa: C901, PLR0912 - one branch per property keyword, no loop per message
        self,
        body: Any = None,
        topic: str = "",
        headers: Mapping[str, Any] | None = None,
        *,
        properties: Properties | None = None,
        content_type: str | None = None,
        content_encoding: str | None = None,
        message_id: str | None = None,
        priority: int | None = None,
        expiration: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        type: str | None = None,  # noqa: A002 - AMQP's name for the property
        app_id: str | None = None,
        persistent: bool = True,
    ) -> None:
        # Every message built to publish comes through here: plain attribute
        # stores, no loops over the property names.
        props = Properties._blank() if properties is None else Properties.from_object(properties)
        is_bytes = isinstance(body, (bytes, bytearray, memoryview))
        if content_type is not None:
            props.content_type = content_type
        elif props.content_type is None:
            props.content_type = _BYTES_TYPE if is_bytes else _JSON_TYPE
        if message_id is not None:
            props.message_id = message_id
        if priority is not None:
            props.priority = priority
        if expiration is not None:
            props.expiration = expiration
        if correlation_id is not None:
            props.correlation_id = correlation_id
        if reply_to is not None:
            props.reply_to = reply_to
        if type is not None:
            props.type = type
        if app_id is not None:
            props.app_id = app_id
        if props.message_id is None:
            props.message_id = _new_message_id()
        if props.timestamp is None:
            props.timestamp = int(time.time())
        if props.delivery_mode is None:
            props.delivery_mode = 2 if persistent else 1
        if props.headers or headers:
            props.headers = checked_headers({**(props.headers or {}), **(headers or {})})
        else:
            props.headers = {}

        if content_encoding is not None:
            props.content_encoding = content_encoding
        if content_encoding is None and is_bytes and props.content_encoding:
            # Bytes with an encoding from ``properties`` (a received message's
            # data, say) are already encoded: compressing them again would
            # send something the encoding does not describe.
            self._data = bytes(body)
            self._body = decode_body(self._data, props.content_type, props.content_encoding)
        else:
            serialized = _serialize(body, props.content_type)
            encoding = props.content_encoding
            self._data = _compress(serialized, encoding) if encoding else serialized
            self._body = decode_body(serialized, props.content_type) if is_bytes else body
        self._topic = topic
        self._properties = self._raw_properties = props
        self._exchange = self._queue = self._delivery_tag = self._deferral = None
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
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        decode: bool = True,
        delivery: Delivery | None = None,
    ) -> Message:
        """Build the message for one delivery, decoding its body now.

        ``properties`` is a :class:`Properties` or any object with its attribute
        names, such as pika's ``BasicProperties``. ``max_body_size`` and
        ``decode`` are the config keys of those names: with ``decode`` false,
        :attr:`body` is ``data`` itself. ``delivery`` is the record a callback
        is about to run on: until the callback ends, :meth:`settle_later` may
        take the message over.

        Raises:
            DecodeError: the body cannot be decoded (see :func:`decode_body`).

        """
        message = cls.__new__(cls)
        if not exchange and topic == queue:
            # Back from a retry queue, or requeued from a dead queue: the
            # broker routed it by queue name; the headers say where it began.
            headers = getattr(properties, "headers", None)
            if headers and isinstance(headers.get(ORIGINAL_ROUTING_KEY), str):
                topic = headers[ORIGINAL_ROUTING_KEY]
                original_exchange = headers.get(ORIGINAL_EXCHANGE)
                if isinstance(original_exchange, str):
                    exchange = original_exchange
        if decode:
            try:  # plain attribute reads are cheaper than getattr() with a default
                content_type = properties.content_type
                encoding = properties.content_encoding
            except AttributeError:
                content_type = getattr(properties, "content_type", None)
                encoding = getattr(properties, "content_encoding", None)
            if encoding:
                message._body = decode_body(
                    data, content_type, encoding, max_body_size=max_body_size
                )
            else:  # the common case: no keyword arguments to pass
                message._body = decode_body(data, content_type)
        else:
            message._body = data
        message._data = data
        message._topic = topic
        message._exchange = exchange
        message._queue = queue
        message._delivery_tag = delivery_tag
        message._redelivered = redelivered
        message._raw_properties = properties
        message._deferral = delivery
        message._properties = properties if isinstance(properties, Properties) else None
        return message

    @property
    def body(self) -> Any:
        """The decoded body: a JSON, msgpack or YAML value, a ``str`` for text, else ``bytes``.

        With decoding turned off (the ``decode`` config key), the raw bytes.
        """
        return self._body

    @property
    def data(self) -> bytes:
        """The body as bytes, exactly as sent or received: still compressed, if it was."""
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

    def __str__(self) -> str:
        """The id, topic, headers and body, one per line; headers and body as indented JSON."""
        return (
            f"Id: {self.id}\nTopic: {self._topic}\n"
            f"Headers: {_pretty_json(self.headers)}\nBody: {_pretty_json(self._body)}"
        )

    def __repr__(self) -> str:
        return f"<Message id={self.id!r} topic={self._topic!r} queue={self._queue!r}>"


def _pretty_json(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return repr(bytes(value))
    return json.dumps(value, sort_keys=True, indent=4, separators=(",", ": "), default=str)
