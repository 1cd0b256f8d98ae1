"""Message bodies: decoding what is received and encoding what is published.

:func:`decode_body` undoes a body's content encoding (gzip, deflate, bzip2,
inflating at most ``max_body_size`` bytes) and then decodes it by content
type: JSON, text in its charset, msgpack or YAML, else bytes.
:func:`encode_body` does the reverse for publishing. A consumer decodes every
delivery with :func:`decode_body`, so it is kept cheap. The public names are
re-exported by :mod:`fedmq.message`, where users import them from.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import gzip
import importlib
import json
import zlib
from typing import Any

from fedmq.exceptions import DecodeError

# --- content types ----------------------------------------------------------

#: The default ``max_body_size``: how far a compressed body may inflate (64 MiB).
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024

_JSON, _TEXT, _BYTES, _MSGPACK, _YAML = range(5)
_JSON_TYPE = "application/json"
_BYTES_TYPE = "application/octet-stream"
_MSGPACK_TYPES = frozenset(
    ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
)
_YAML_TYPES = frozenset(("application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml"))
_EXTRA = {_MSGPACK: "msgpack", _YAML: "yaml"}  # kind -> the fedmq extra that installs it

# Deliveries nearly always repeat a handful of content types, so their parses
# are kept; the size cap stops a producer inventing new ones from growing it.
_PARSED: dict[str | None, tuple[int, str | None]] = {None: (_JSON, None), "": (_JSON, None)}
_PARSED_MAX = 64
# json.loads re-checks its arguments on every call and sniffs bytes for
# UTF-16/32; neither is worth paying for per message (RFC 8259 JSON is UTF-8).
_decode_json = json.JSONDecoder().decode
#: json.dumps() with these options builds an encoder per call; one does for all.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _parse_content_type(content_type: str | None) -> tuple[int, str | None]:
    """Return the kind of body a content type names and its charset, if any."""
    try:
        return _PARSED[content_type]
    except KeyError:
        if content_type is None:  # never: None is always in the cache
            raise
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type == _JSON_TYPE or media_type.endswith("+json"):
        kind = _JSON
    elif media_type in _MSGPACK_TYPES:
        kind = _MSGPACK
    elif media_type in _YAML_TYPES:
        kind = _YAML
    elif media_type.startswith("text/"):
        kind = _TEXT
    else:
        kind = _BYTES  # pickle included: it is never unpickled
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower() or None
    if charset is not None:
        # An unknown charset is reported as a DecodeError or ValueError when it is used.
        with contextlib.suppress(LookupError):
            charset = codecs.lookup(charset).name
    if len(_PARSED) < _PARSED_MAX:
        _PARSED[content_type] = (kind, charset)
    return kind, charset


# kind -> the imported module, or None when it is not installed: imported on
# first use, so that fedmq starts without them, and tried only once.
_MODULES: dict[int, Any] = {}


def _optional_module(kind: int) -> Any:
    """Import the package that handles ``kind``; None when it is not installed."""
    try:
        return _MODULES[kind]
    except KeyError:
        pass
    try:
        module = importlib.import_module(_EXTRA[kind])
    except ImportError:
        module = None
    _MODULES[kind] = module
    return module


def _missing(kind: int, content_type: str | None) -> str:
    extra = _EXTRA[kind]
    return (
        f"A message body with content type {content_type!r} needs the {extra} package,"
        f" which is not installed: install fedmq[{extra}]."
    )


def _decode_optional(data: bytes, kind: int, charset: str | None, content_type: str | None) -> Any:
    """Decode a msgpack or YAML body; None for an empty one, as for JSON."""
    module = _optional_module(kind)
    if module is None:
        raise DecodeError(_missing(kind, content_type), content_type)
    if not data:
        return None
    try:
        if kind == _MSGPACK:
            return module.unpackb(data, raw=False)
        # The C loader when PyYAML has it; either way the safe one, which builds
        # only plain Python values and never calls constructors named in the text.
        loader = getattr(module, "CSafeLoader", module.SafeLoader)
        return module.load(data.decode(charset or "utf-8"), Loader=loader)
    except LookupError:
        problem = f"names the charset {charset!r}, which Python cannot decode text with"
    except UnicodeDecodeError as exc:
        problem = f"is not valid {exc.encoding} text ({exc.reason} at byte {exc.start})"
    except RecursionError:
        problem = "nests too deeply to decode"
    except Exception as exc:  # msgpack and PyYAML raise many types for bad input
        what = "msgpack" if kind == _MSGPACK else "YAML"
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        problem = f"is not valid {what} ({detail})"
    raise DecodeError(f"A message body with content type {content_type!r} {problem}.", content_type)


# --- content encodings ------------------------------------------------------

_GZIP, _DEFLATE, _BZIP2 = range(3)
_ENCODINGS: dict[str, int] = {
    "gzip": _GZIP,
    "x-gzip": _GZIP,
    "deflate": _DEFLATE,
    "zlib": _DEFLATE,
    "bzip2": _BZIP2,
    "x-bzip2": _BZIP2,
}
_IDENTITY = frozenset(("", "identity"))
_KNOWN_ENCODINGS = "gzip, deflate, bzip2 and identity"


@functools.lru_cache(maxsize=64)
def _charset_in_encoding(content_encoding: str) -> str | None:
    """The charset a content encoding names instead of a compression, or None.

    Some publishers (fedora-messaging among them) put the body's charset,
    ``utf-8``, in ``content_encoding``; such a body is not compressed.
    """
    name = content_encoding.strip().lower()
    if name in _IDENTITY or name in _ENCODINGS:
        return None
    try:
        info = codecs.lookup(name)
    except LookupError:
        return None
    return name if getattr(info, "_is_text_encoding", True) else None


def _encoding_kind(content_encoding: str) -> int | None:
    """Return the compression a content encoding names; None for identity."""
    name = content_encoding.strip().lower()
    if name in _IDENTITY:
        return None
    try:
        return _ENCODINGS[name]
    except KeyError:
        raise DecodeError(
            f"A message body has the content encoding {content_encoding!r}, which fedmq"
            f" cannot decode (it knows {_KNOWN_ENCODINGS}).",
            content_encoding=content_encoding,
        ) from None


def _decompressor(kind: int, data: bytes) -> Any:
    if kind == _GZIP:
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == _DEFLATE:
        # "deflate" is RFC 1950 zlib data (as in HTTP), but some producers send
        # raw RFC 1951 deflate: tell them apart by the zlib header's checksum.
        zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
    import bz2  # here, not at the top: some Python builds lack it

    return bz2.BZ2Decompressor()


def _decompress(data: bytes, content_encoding: str, max_body_size: int) -> bytes:
    """Undo ``content_encoding``, producing at most ``max_body_size`` bytes.

    Each stream is asked for one byte more than the room left, so a body that
    inflates too far stops there: a bomb costs ``max_body_size`` bytes, not
    its full size. gzip and bzip2 may hold several streams back to back.
    """
    kind = _encoding_kind(content_encoding)
    if kind is None:
        return data
    parts: list[bytes] = []
    room = max_body_size
    while True:
        decompressor = _decompressor(kind, data)
        try:
            part = decompressor.decompress(data, room + 1)
        except (zlib.error, OSError, EOFError, ValueError) as exc:
            problem = f"is not valid {content_encoding} data ({exc})"
            break
        if len(part) > room:
            problem = f"inflates past max_body_size ({max_body_size} bytes)"
            break
        if not decompressor.eof:
            problem = f"is truncated: its {content_encoding} data ends early"
            break
        parts.append(part)
        room -= len(part)
        data = decompressor.unused_data
        if not data:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if kind == _DEFLATE:
            problem = f"has {len(data)} bytes after the end of its {content_encoding} data"
            break
    raise DecodeError(
        f"A message body with content encoding {content_encoding!r} {problem}.",
        content_encoding=content_encoding,
    )


def _compress(data: bytes, content_encoding: str) -> bytes:
    """Apply ``content_encoding`` to ``data``."""
    try:
        kind = _encoding_kind(content_encoding)
    except DecodeError:
        raise ValueError(
            f"fedmq cannot encode a body with the content encoding {content_encoding!r}"
            f" (it knows {_KNOWN_ENCODINGS})."
        ) from None
    if kind is None:
        return data
    if kind == _GZIP:
        # mtime=0: the same body always compresses to the same bytes.
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == _DEFLATE:
        return zlib.compress(data)
    import bz2

    return bz2.compress(data)


# --- bodies -----------------------------------------------------------------


def decode_body(
    data: bytes,
    content_type: str | None,
    content_encoding: str | None = None,
    *,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
) -> Any:
    """Decode a message body according to its content encoding and content type.

    First the ``content_encoding`` is undone: ``gzip`` (RFC 1952), ``deflate``
    (zlib, or raw deflate) or ``bzip2``; ``identity`` or none leaves the bytes
    as they are. Then, by content type, ``application/json``, any ``+json``
    type and a missing content type give the decoded JSON value;
    ``text/*`` gives a ``str`` decoded with the ``charset`` parameter, UTF-8
    when absent; ``application/msgpack`` (and ``application/x-msgpack``) gives
    the unpacked value and ``application/x-yaml`` (and ``text/yaml``) the
    value PyYAML's safe loader builds, when those packages are installed. An
    empty JSON, msgpack or YAML body gives None. Any other content type,
    pickle included, gives the (decompressed) bytes.

    Args:
        data: the body as received.
        content_type: the message's content type, parameters included.
        content_encoding: the message's content encoding.
        max_body_size: the most bytes a compressed body may inflate to.

    Returns:
        The decoded body.

    Raises:
        DecodeError: the body is not valid for its content type or encoding,
            it inflates past ``max_body_size``, its content encoding is
            unknown, its charset is one Python cannot decode text with, or
            it needs msgpack or PyYAML and that is not installed.

    """
    charset_hint = None
    if content_encoding:
        charset_hint = _charset_in_encoding(content_encoding)
        if charset_hint is None:
            data = _decompress(data, content_encoding, max_body_size)
    kind, charset = _parse_content_type(content_type)
    charset = charset or charset_hint
    if kind > _TEXT:
        return data if kind == _BYTES else _decode_optional(data, kind, charset, content_type)
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


def encode_body(body: Any, content_type: str, content_encoding: str | None = None) -> bytes:
    """Serialize a body according to the content type and encoding it will be sent with.

    ``bytes``, ``bytearray`` and ``memoryview`` bodies are taken as they are.
    Otherwise a JSON content type gives compact UTF-8 JSON, ``text/*``
    encodes a ``str`` with the ``charset`` parameter (UTF-8 when absent), a
    msgpack content type packs the value and a YAML one dumps it with
    PyYAML's safe dumper. Then ``content_encoding``, when given, compresses
    the result.

    Returns:
        The body as bytes.

    Raises:
        TypeError: the body cannot be sent as that content type.
        ValueError: the body holds NaN or infinity, which JSON cannot carry,
            or text the charset cannot encode, or the charset or content
            encoding is unknown.
        ModuleNotFoundError: the content type needs msgpack or PyYAML, and it
            is not installed.

    """
    data = _serialize(body, content_type)
    return _compress(data, content_encoding) if content_encoding else data


def _serialize(body: Any, content_type: str) -> bytes:
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
    if kind == _MSGPACK:
        return _pack(body, content_type)
    if kind == _JSON:
        body = _encode_json(body)
    elif kind == _YAML:
        body = _dump_yaml(body, content_type)
    text: str = body
    try:
        return text.encode(charset or "utf-8")
    except LookupError:
        raise ValueError(
            f"The content type {content_type!r} names the charset {charset!r},"
            " which Python does not know."
        ) from None


def _pack(body: Any, content_type: str) -> bytes:
    msgpack = _optional_module(_MSGPACK)
    if msgpack is None:
        raise ModuleNotFoundError(_missing(_MSGPACK, content_type), name="msgpack")
    try:
        packed: bytes = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(
            f"A body with content type {content_type!r} cannot be packed as msgpack ({exc})."
        ) from None
    return packed


def _dump_yaml(body: Any, content_type: str) -> str:
    yaml = _optional_module(_YAML)
    if yaml is None:
        raise ModuleNotFoundError(_missing(_YAML, content_type), name="yaml")
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    try:
        text: str = yaml.dump(body, Dumper=dumper, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError as exc:
        raise TypeError(
            f"A body with content type {content_type!r} cannot be written as YAML ({exc})."
        ) from None
    return text
