"""A basic.publish, its content header and its body, encoded as the bytes of their frames.

This is the per-message path of publishing, so it does in one function what
the AMQP client does in a method object, a header object, a properties
object and a frame object per message, and hands the transport one write
instead of three. The bytes are those the client would write, byte for byte
(a unit test compares them). Anything out of the ordinary (a string over 255
bytes, a value of an unexpected type) is left to the client, whose errors
are then the ones raised; :meth:`PublishEncoder.encode` returns None for it.

The application headers of most published messages are the same for a
whole second (the ones fedora-messaging consumers need, see
:class:`ConstantHeaders`): their table is encoded once, not per message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

#: AMQP frame types, and the end-of-frame octet.
_METHOD, _HEADER, _BODY = 1, 2, 3
_FRAME_END = b"\xce"
#: basic.publish is method 40 of class 60 (basic); ticket 0 follows.
_PUBLISH = struct.pack(">HHH", 60, 40, 0)
#: Cached method frames (by exchange, routing key, mandatory) before the cache is emptied.
_METHOD_CACHE_SIZE = 256

_frame_head = struct.Struct(">BHI").pack
_content_head = struct.Struct(">HHQH").pack  # class, weight, body size, property flags
_timestamp = struct.Struct(">Q").pack

# The property flags, highest bit first, in the order AMQP 0-9-1 lists the properties.
_CONTENT_TYPE = 1 << 15
_CONTENT_ENCODING = 1 << 14
_HEADERS = 1 << 13
_DELIVERY_MODE = 1 << 12
_PRIORITY = 1 << 11
_CORRELATION_ID = 1 << 10
_REPLY_TO = 1 << 9
_EXPIRATION = 1 << 8
_MESSAGE_ID = 1 << 7
_TIMESTAMP = 1 << 6
_TYPE = 1 << 5
_USER_ID = 1 << 4
_APP_ID = 1 << 3
_CLUSTER_ID = 1 << 2


class _Unusual(Exception):
    """A value this encoder leaves to the client."""


class ConstantHeaders(dict[str, Any]):
    """Application headers that never change once built, so their encoding can be kept.

    fedmq builds these itself, and shares one among the messages of a
    second; changing one in place would change them all, so that raises.
    """

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> Any:
        raise TypeError("these headers are shared among messages and cannot be changed")

    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse


def _short(value: Any) -> bytes:
    if type(value) is str:
        data = value.encode()
    elif type(value) is bytes:
        data = value
    else:
        raise _Unusual
    if len(data) > 255:  # a short string's length is one octet
        raise _Unusual
    return bytes((len(data),)) + data


def _octet(value: Any) -> bytes:
    if type(value) is not int or not 0 <= value <= 255:
        raise _Unusual
    return bytes((value,))


class PublishEncoder:
    """Encodes the frames of one basic.publish, for one channel.

    Args:
        channel_number: the channel the frames are for.
        body_max: the most body bytes one body frame carries (frame_max less 8).
        encode_table: the client's encoder of an AMQP field table, appending
            its pieces to a list (used for headers that are not constant).

    """

    def __init__(
        self,
        channel_number: int,
        body_max: int,
        encode_table: Callable[[list[bytes], Any], int],
    ) -> None:
        self._channel = channel_number
        self._body_max = body_max
        self._encode_table = encode_table
        self._methods: dict[tuple[str, str, bool], bytes] = {}
        # The last ConstantHeaders seen and its encoding: a reference is kept,
        # so the identity check cannot match another dict.
        self._constant: tuple[ConstantHeaders | None, bytes] = (None, b"")

    def encode(
        self, exchange: str, routing_key: str, body: bytes, properties: Any, mandatory: bool
    ) -> bytes | None:
        """The frames' bytes, or None for something the client should encode itself."""
        try:
            method = self._methods.get((exchange, routing_key, mandatory))
            if method is None:
                method = self._method(exchange, routing_key, mandatory)
            header = self._header(len(body), properties)
        except _Unusual:
            return None
        channel = self._channel
        pieces = [method, _frame_head(_HEADER, channel, len(header)), header, _FRAME_END]
        if body:
            step = self._body_max
            for start in range(0, len(body), step):
                chunk = body[start : start + step]
                pieces += (_frame_head(_BODY, channel, len(chunk)), chunk, _FRAME_END)
        return b"".join(pieces)

    def _method(self, exchange: str, routing_key: str, mandatory: bool) -> bytes:
        if type(mandatory) is not bool:
            raise _Unusual
        payload = _PUBLISH + _short(exchange) + _short(routing_key) + bytes((mandatory,))
        frame = _frame_head(_METHOD, self._channel, len(payload)) + payload + _FRAME_END
        if len(self._methods) >= _METHOD_CACHE_SIZE:
            self._methods.clear()
        self._methods[exchange, routing_key, mandatory] = frame
        return frame

    def _header(self, body_size: int, p: Any) -> bytes:  # noqa: C901, PLR0912 - one branch per AMQP property, unrolled on the per-message path
        flags = 0
        pieces: list[bytes] = [b""]
        if p.content_type is not None:
            flags |= _CONTENT_TYPE
            pieces.append(_short(p.content_type))
        if p.content_encoding is not None:
            flags |= _CONTENT_ENCODING
            pieces.append(_short(p.content_encoding))
        headers = p.headers
        if headers is not None:
            flags |= _HEADERS
            pieces.append(self._table(headers))
        if p.delivery_mode is not None:
            flags |= _DELIVERY_MODE
            pieces.append(_octet(p.delivery_mode))
        if p.priority is not None:
            flags |= _PRIORITY
            pieces.append(_octet(p.priority))
        if p.correlation_id is not None:
            flags |= _CORRELATION_ID
            pieces.append(_short(p.correlation_id))
        if p.reply_to is not None:
            flags |= _REPLY_TO
            pieces.append(_short(p.reply_to))
        if p.expiration is not None:
            flags |= _EXPIRATION
            pieces.append(_short(p.expiration))
        if p.message_id is not None:
            flags |= _MESSAGE_ID
            pieces.append(_short(p.message_id))
        timestamp = p.timestamp
        if timestamp is not None:
            if type(timestamp) is not int or not 0 <= timestamp < 2**64:
                raise _Unusual
            flags |= _TIMESTAMP
            pieces.append(_timestamp(timestamp))
        if p.type is not None:
            flags |= _TYPE
            pieces.append(_short(p.type))
        if p.user_id is not None:
            flags |= _USER_ID
            pieces.append(_short(p.user_id))
        if p.app_id is not None:
            flags |= _APP_ID
            pieces.append(_short(p.app_id))
        if p.cluster_id is not None:
            flags |= _CLUSTER_ID
            pieces.append(_short(p.cluster_id))
        pieces[0] = _content_head(60, 0, body_size, flags)
        return b"".join(pieces)

    def _table(self, headers: Any) -> bytes:
        if type(headers) is ConstantHeaders:
            known, encoded = self._constant
            if headers is known:
                return encoded
            encoded = self._encode(headers)
            self._constant = (headers, encoded)
            return encoded
        return self._encode(headers)

    def _encode(self, headers: Any) -> bytes:
        pieces: list[bytes] = []
        try:
            self._encode_table(pieces, headers)
        except Exception:  # the client raises its own error for it
            raise _Unusual from None
        return b"".join(pieces)


__all__ = ["ConstantHeaders", "PublishEncoder"]
