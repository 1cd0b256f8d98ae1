"""What a valid configuration is: the type of every key, and the rules a Config obeys.

:mod:`fedmq.config` checks each raw value against the tables of kinds here
(with :func:`_expect`, :func:`_fields` and friends), and each
:class:`~fedmq.config.Config` it builds with :func:`_check_config`. Every
error names the file, the key and what was expected, and never shows the
AMQP password: URLs are shown through :func:`redact_url`, which
:mod:`fedmq.config` re-exports.
"""

from __future__ import annotations

import difflib
import json
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedmq.exceptions import ConfigurationError

if TYPE_CHECKING:
    from fedmq.config import Config

# (accepted Python types, how an error message describes them)
_Kind = tuple[tuple[type, ...], str]
_STR: _Kind = ((str,), "a string")
_BOOL: _Kind = ((bool,), "a boolean (true or false)")
_INT: _Kind = ((int,), "an integer")
_NUMBER: _Kind = ((int, float), "a number")
_TABLE: _Kind = ((Mapping,), "a table")
_KEYS: _Kind = ((str, list, tuple), "a string or an array of strings")
_PROPERTY: _Kind = ((str, int, float, bool, list, tuple), "a string, number, boolean or array")

# Config fields of a plain type, checked on every construction (so by replace() too).
_PLAIN_FIELDS: dict[str, _Kind] = {
    "amqp_url": _STR,
    "passive_declares": _BOOL,
    "publish_exchange": _STR,
    "topic_prefix": _STR,
    "callback": _STR,
    "concurrency": _INT,
    "heartbeat": _INT,
    "connect_timeout": _NUMBER,
    "drain_timeout": _NUMBER,
    "log_format": _STR,
    "decode": _BOOL,
    "max_body_size": _INT,
    "name": _STR,
    "drop_invalid_messages": _BOOL,
    "drop_exchange": _STR,
    "max_errors": _INT,
    "error_window": _NUMBER,
    "client_properties": _TABLE,
    "consumer_config": _TABLE,
    "log_config": _TABLE,
    "publish_priority": _INT,
    "publish_format": _STR,
    "publish_max_unconfirmed": _INT,
    "publish_max_unconfirmed_bytes": _INT,
    "health_check": _STR,
    "health_interval": _NUMBER,
    "health_timeout": _NUMBER,
    "fail_publish_when_suspended": _BOOL,
    "slow_consumer_high": _INT,
    "slow_consumer_low": _INT,
    "slow_consumer_interval": _NUMBER,
}

# The keys of each table, and what each must be.
_EXCHANGE_KEYS = {
    "type": _STR,
    "durable": _BOOL,
    "auto_delete": _BOOL,
    "arguments": _TABLE,
    "passive": _BOOL,
}
_QUEUE_KEYS = {
    "durable": _BOOL,
    "auto_delete": _BOOL,
    "exclusive": _BOOL,
    "arguments": _TABLE,
    "passive": _BOOL,
    "prefetch_count": _INT,
    "consumer_priority": _INT,
    "max_unacked_bytes": _INT,
    "paused": _BOOL,
    "suspend_on_bad_host_health": _BOOL,
}
_BINDING_KEYS = {
    "queue": _STR,
    "exchange": _STR,
    "routing_keys": _KEYS,
    "routing_key": _KEYS,
    "arguments": _TABLE,
}
_QOS_KEYS = {"prefetch_count": _INT, "prefetch_size": _INT}
_TLS_KEYS = {"ca_cert": _STR, "certfile": _STR, "keyfile": _STR}
_RECONNECT_KEYS = {
    "initial_delay": _NUMBER,
    "max_delay": _NUMBER,
    "factor": _NUMBER,
    "jitter": _NUMBER,
    "max_attempts": _INT,
}
_MONITORING_KEYS = {"address": _STR, "port": _INT}
_TRACING_KEYS = {"link_only": _BOOL, "settle_spans": _BOOL}
_CONTROL_KEYS = {"socket": _STR, "http_address": _STR, "http_port": _INT, "token_file": _STR}
# The longest path a UNIX socket can have (sun_path holds 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107
_RETRY_KEYS = {
    "enabled": _BOOL,
    "delays": ((list, tuple), "an array of numbers of seconds"),
    "max_attempts": _INT,
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CALLBACK = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def redact_url(url: str) -> str:
    """Return ``url`` with its password, if it has one, replaced by ``***``.

    A malformed URL is redacted generously: when in doubt, more is hidden.

    Args:
        url: an AMQP URL such as ``amqps://user:secret@host/%2F``.

    Returns:
        The URL with ``***`` for the password; the URL itself when it has none.

    """
    scheme, sep, rest = url.partition("://")
    prefix, rest = (scheme + sep, rest) if sep else ("", url)
    ends = [index for index in (rest.find(char) for char in "/?#") if index != -1]
    netloc_end = min(ends, default=len(rest))
    if "@" in rest[:netloc_end]:
        userinfo, _, host = rest[:netloc_end].rpartition("@")
        host += rest[netloc_end:]
    elif "@" in rest:
        # An unescaped "/", "?" or "#" in the password hides where the host starts.
        userinfo, _, host = rest.rpartition("@")
    else:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{prefix}{user}:***@{host}" if colon else url


def _url_problem(url: str) -> str | None:
    if not url.startswith(("amqp://", "amqps://")):
        return f"must start with amqp:// or amqps://, got {redact_url(url)!r}"
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return f"has a port that is not a number from 0 to 65535: {redact_url(url)!r}"
    return None


def _join(path: str, key: str) -> str:
    shown = key if _BARE_KEY.fullmatch(key) else json.dumps(key)
    return f"{path}.{shown}" if path else shown


def _type_name(value: object) -> str:
    # Numbers are shown to help find the line; strings never, as one might be a secret.
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"{'an integer' if isinstance(value, int) else 'a float'} ({value!r})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return "None" if value is None else f"a {type(value).__name__}"


def _expect(value: object, kind: _Kind, key: str, source: str) -> Any:
    accepted, expected = kind
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise ConfigurationError(f"{source}: {key} must be {expected}, got {_type_name(value)}")
    return value


def _check_range(value: int, key: str, source: str, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise ConfigurationError(f"{source}: {key} must be {bounds}, got {value}")


def _reject_unknown(table: Mapping[str, Any], valid: Sequence[str], path: str, source: str) -> None:
    for unknown in (str(key) for key in table if key not in valid):
        close = difflib.get_close_matches(unknown, valid, n=1)
        hint = f" (did you mean {_join(path, close[0])}?)" if close else ""
        where = f"in {path}" if path else "at the top level"
        raise ConfigurationError(
            f"{source}: unknown key {_join(path, unknown)}{hint}; "
            f"valid keys {where} are: {', '.join(valid)}"
        )


def _fields(data: object, schema: Mapping[str, _Kind], path: str, source: str) -> dict[str, Any]:
    """Check one table against ``schema`` and return its keys, defaults left to the dataclass."""
    table: Mapping[str, Any] = _expect(data, _TABLE, path, source)
    _reject_unknown(table, list(schema), path, source)
    return {
        key: _expect(value, schema[key], _join(path, key), source) for key, value in table.items()
    }


def _named_tables(data: object, path: str, source: str) -> list[tuple[str, str, Any]]:
    table: Mapping[str, Any] = _expect(data, _TABLE, path, source)
    return [(str(name), _join(path, str(name)), entry) for name, entry in table.items()]


def _check_config(config: Config) -> None:
    """Raise a ConfigurationError for the first rule ``config`` breaks.

    Called by ``Config.__post_init__`` once the plain fields' types are checked
    and the fields normalised, so by :meth:`~fedmq.config.Config.replace` too.
    """
    for check in _CHECKS:
        check(config)


def _fail(config: Config, text: str) -> ConfigurationError:
    return ConfigurationError(f"{config.source}: {text}")


def _check_urls(config: Config) -> None:
    problem = _url_problem(config.amqp_url)
    if problem:
        raise _fail(config, f"amqp_url {problem}")
    for index, url in enumerate(config.amqp_urls):
        if not isinstance(url, str):
            raise _fail(config, f"amqp_urls[{index}] must be a string, got {_type_name(url)}")
        problem = _url_problem(url)
        if problem:
            raise _fail(config, f"amqp_urls[{index}] {problem}")
    if not config.drain_timeout > 0:
        raise _fail(
            config, f"drain_timeout must be more than 0 seconds, got {config.drain_timeout}"
        )


def _check_publishing(config: Config) -> None:
    for key in ("publish_max_unconfirmed", "publish_max_unconfirmed_bytes"):
        if getattr(config, key) < 1:
            raise _fail(config, f"{key} must be at least 1, got {getattr(config, key)}")
    if config.publish_format not in ("fedmq", "fedora-messaging"):
        raise _fail(
            config,
            f'publish_format must be "fedmq" or "fedora-messaging", got {config.publish_format!r}',
        )
    if config.publish_priority is not None:
        _check_range(config.publish_priority, "publish_priority", config.source, 0, 255)
    if config.log_format not in ("text", "json"):
        raise _fail(config, f'log_format must be "text" or "json", got {config.log_format!r}')


def _check_reconnect(config: Config) -> None:
    backoff = config.reconnect
    if not 0 < backoff.initial_delay <= backoff.max_delay:
        raise _fail(
            config, "reconnect.initial_delay must be more than 0 and at most reconnect.max_delay"
        )
    if backoff.factor < 1:
        raise _fail(config, f"reconnect.factor must be at least 1, got {backoff.factor}")
    if not 0 <= backoff.jitter < 1:
        raise _fail(
            config,
            f"reconnect.jitter must be from 0 up to (not including) 1, got {backoff.jitter}",
        )
    _check_range(backoff.max_attempts, "reconnect.max_attempts", config.source, 0)
    _check_range(config.max_errors, "max_errors", config.source, 1)
    if not config.error_window > 0:
        raise _fail(config, f"error_window must be more than 0 seconds, got {config.error_window}")


def _check_retry(config: Config) -> None:
    for index, delay in enumerate(config.retry.delays):
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not delay > 0:
            raise _fail(config, f"retry.delays[{index}] must be a number of seconds more than 0")
        if delay * 1000 != int(delay * 1000):
            raise _fail(config, f"retry.delays[{index}] must be a whole number of milliseconds")
    if config.retry.enabled and not config.retry.delays:
        raise _fail(config, "retry.delays must name at least one delay when retry.enabled is true")
    _check_range(config.retry.max_attempts, "retry.max_attempts", config.source, 1)


def _check_consuming(config: Config) -> None:
    for index, message_type in enumerate(config.message_types):
        if not isinstance(message_type, str):
            raise _fail(
                config, f"message_types[{index}] must be a string, got {_type_name(message_type)}"
            )
    if config.monitoring.port is not None:
        _check_range(config.monitoring.port, "monitoring.port", config.source, 0, 65535)
    if config.callback is not None and not _CALLBACK.match(config.callback):
        raise _fail(
            config, f"callback must look like 'package.module:object', got {config.callback!r}"
        )
    _check_range(config.concurrency, "concurrency", config.source, 1)
    _check_range(config.max_body_size, "max_body_size", config.source, 1)
    _check_range(config.heartbeat, "heartbeat", config.source, 0)
    if not config.connect_timeout > 0:
        raise _fail(
            config, f"connect_timeout must be more than 0 seconds, got {config.connect_timeout}"
        )


def _check_qos(config: Config) -> None:
    _check_range(config.qos.prefetch_count, "qos.prefetch_count", config.source, 0, 65535)
    if config.qos.prefetch_size != 0:
        raise _fail(config, "qos.prefetch_size must be 0: RabbitMQ does not implement a size limit")
    if config.qos.prefetch_count and config.concurrency > config.qos.prefetch_count:
        raise _fail(
            config,
            f"concurrency ({config.concurrency}) must not exceed qos.prefetch_count "
            f"({config.qos.prefetch_count}): the extra workers would never get a message",
        )


def _check_queue_options(config: Config) -> None:
    for queue in config.queues:
        path = _join("queues", queue.name)
        if queue.prefetch_count is not None:
            _check_range(queue.prefetch_count, f"{path}.prefetch_count", config.source, 0, 65535)
        if queue.consumer_priority is not None:
            _check_range(
                queue.consumer_priority,
                f"{path}.consumer_priority",
                config.source,
                -(2**31),
                2**31 - 1,
            )
        if queue.max_unacked_bytes is not None:
            _check_range(queue.max_unacked_bytes, f"{path}.max_unacked_bytes", config.source, 1)


def _check_tls(config: Config) -> None:
    if config.tls is None:
        return
    for name in ("ca_cert", "certfile", "keyfile"):
        if getattr(config.tls, name) == "":
            raise _fail(config, f"tls.{name} must be a file path, not an empty string")
    if config.tls.certfile is not None and config.tls.keyfile is None:
        raise _fail(config, "tls.certfile is set but tls.keyfile is not; give both or neither")
    if config.tls.keyfile is not None and config.tls.certfile is None:
        raise _fail(config, "tls.keyfile is set but tls.certfile is not; give both or neither")


def _check_control(config: Config) -> None:
    control = config.control
    if control.socket:
        if not control.socket.startswith("/"):
            raise _fail(config, f"control.socket must be an absolute path, got {control.socket!r}")
        if len(control.socket.encode("utf-8", "surrogateescape")) > _MAX_SOCKET_PATH:
            raise _fail(
                config,
                f"control.socket is longer than a UNIX socket path may be "
                f"({_MAX_SOCKET_PATH} bytes): {control.socket!r}",
            )
    if control.http_port is None:
        if control.token_file is not None:
            raise _fail(config, "control.token_file is set but control.http_port is not")
        return
    _check_range(control.http_port, "control.http_port", config.source, 0, 65535)
    if not control.token_file:
        raise _fail(
            config,
            "control.http_port needs control.token_file: the HTTP control endpoint "
            "accepts only requests that present the token that file holds",
        )
    if control.http_port != 0 and control.http_port == config.monitoring.port:
        raise _fail(
            config,
            f"control.http_port ({control.http_port}) is monitoring.port: control never "
            "shares the unauthenticated monitoring listener; choose another port",
        )


def _check_health(config: Config) -> None:
    if config.health_check is not None and not _CALLBACK.match(config.health_check):
        raise _fail(
            config,
            f"health_check must look like 'package.module:callable', got {config.health_check!r}",
        )
    for key in ("health_interval", "health_timeout", "slow_consumer_interval"):
        if not getattr(config, key) > 0:
            raise _fail(config, f"{key} must be more than 0 seconds, got {getattr(config, key)}")
    _check_range(config.slow_consumer_high, "slow_consumer_high", config.source, 0)
    _check_range(config.slow_consumer_low, "slow_consumer_low", config.source, 0)
    if config.slow_consumer_high and config.slow_consumer_low >= config.slow_consumer_high:
        raise _fail(
            config,
            f"slow_consumer_low ({config.slow_consumer_low}) must be below "
            f"slow_consumer_high ({config.slow_consumer_high})",
        )


# In the order the rules are reported: the first one broken wins.
_CHECKS = (
    _check_urls,
    _check_publishing,
    _check_reconnect,
    _check_retry,
    _check_consuming,
    _check_qos,
    _check_queue_options,
    _check_tls,
    _check_control,
    _check_health,
)


def uses_tls(url: str) -> bool:
    """Whether ``url`` asks for TLS: its scheme is ``amqps`` (a ``[tls]`` table alone does not)."""
    return url.lower().startswith("amqps://")


def check_runnable(config: Config) -> None:
    """Raise a ConfigurationError if ``config`` cannot run a consumer.

    What a Config's own checks cannot see, because it depends on more than
    the file: there must be a queue to consume, and when a broker URL uses
    TLS, every file the ``[tls]`` table names must be readable; with
    ``control.http_port``, ``control.token_file`` must hold a token. ``twistd
    fedmq``, ``fedmq consume`` and ``fedmq check-config`` all call this, so
    they agree on what is an error.
    """
    if not config.queues:
        raise ConfigurationError(
            f"{config.source}: the queues table is empty, so there is nothing to consume; "
            "name a queue in it, or leave it out to consume from a server-named queue"
        )
    if config.control.http_port is not None:
        read_token(config)
    tls_urls = [url for url in config.broker_urls if uses_tls(url)]
    if config.tls is None or not tls_urls:
        return
    for key in ("ca_cert", "certfile", "keyfile"):
        path = getattr(config.tls, key)
        if path is None:
            continue
        problem = _file_problem(path)
        if problem:
            raise ConfigurationError(
                f"{config.source}: tls.{key}: {path} {problem} (needed for the TLS "
                f"connection to {redact_url(tls_urls[0])})"
            )


def read_token(config: Config) -> bytes:
    """The bearer token of the HTTP control endpoint: ``control.token_file``'s content.

    Surrounding whitespace (a final newline) is not part of it. The token is
    a secret: no error shows it.

    Raises:
        ConfigurationError: the file is missing, unreadable or holds no token.

    """
    path = config.control.token_file or ""
    try:
        token = Path(path).read_bytes().strip()
    except FileNotFoundError:
        problem = "does not exist"
    except IsADirectoryError:
        problem = "is a directory, not a file"
    except OSError as error:
        problem = f"cannot be read: {error.strerror}"
    else:
        if token:
            return token
        problem = "is empty"
    raise ConfigurationError(
        f"{config.source}: control.token_file: {path} {problem} (the HTTP control "
        "endpoint needs the token it holds)"
    )


def _file_problem(path: str) -> str | None:
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        return "does not exist"
    except IsADirectoryError:
        return "is a directory, not a file"
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    if b"-----BEGIN " not in text:
        return "is not a PEM file (no -----BEGIN line)"
    return None
