"""fedmq's configuration: a TOML file read once into frozen dataclasses.

The keys are fedora-messaging's, so a fedora-messaging ``config.toml`` loads
as it is; fedmq adds ``concurrency``, ``heartbeat`` and ``connect_timeout``.
Every mistake a user can make ends in a :class:`~fedmq.exceptions.ConfigurationError`
whose message names the file, the key and what was expected, and never shows
the AMQP password. Mappings in the result are read-only views of private copies.
Values and rules are checked in :mod:`fedmq._config_checks` (whose
:func:`redact_url` is importable from here), and the file and environment are
read in :mod:`fedmq._config_reader`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedmq._config_checks import (
    _BINDING_KEYS,
    _CONTROL_KEYS,
    _EXCHANGE_KEYS,
    _MONITORING_KEYS,
    _PLAIN_FIELDS,
    _PROPERTY,
    _QOS_KEYS,
    _QUEUE_KEYS,
    _RECONNECT_KEYS,
    _RETRY_KEYS,
    _STR,
    _TABLE,
    _TLS_KEYS,
    _TRACING_KEYS,
    _check_config,
    _expect,
    _fields,
    _join,
    _named_tables,
    _reject_unknown,
    _type_name,
)
from fedmq._config_checks import check_runnable as check_runnable  # public here
from fedmq._config_checks import redact_url as redact_url  # public here, as documented
from fedmq._config_reader import _read_sources
from fedmq._version import __version__
from fedmq.exceptions import ConfigurationError
from fedmq.message import DEFAULT_MAX_BODY_SIZE

# Plain fields whose value may be None (unset).
_OPTIONAL_FIELDS = ("callback", "log_config", "publish_priority", "health_check")

#: The file :func:`load_config` reads when neither a path nor $FEDMQ_CONFIG is given.
DEFAULT_CONFIG_PATH = "/etc/fedmq/config.toml"


def _default_client_properties() -> dict[str, Any]:
    version = __version__
    information = "fedmq, an AMQP 0-9-1 consumer service on Twisted"
    return {"app": "fedmq", "product": "fedmq", "version": version, "information": information}


def _frozen(value: Mapping[str, Any]) -> Mapping[str, Any]:
    # Copy first: a read-only view over the caller's own dict would still change with it.
    return types.MappingProxyType(copy.deepcopy(dict(value)))


def _frozen_field() -> Any:
    return field(default_factory=lambda: types.MappingProxyType({}))


@dataclass(frozen=True)
class TLSConfig:
    """Files for a TLS connection (used with an ``amqps://`` URL).

    Attributes:
        ca_cert: PEM file of the certificate authorities to trust; None trusts the system's.
        certfile: PEM client certificate, for EXTERNAL authentication.
        keyfile: PEM private key of ``certfile``.

    """

    ca_cert: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    @property
    def uses_external_auth(self) -> bool:
        """True when a client certificate and key are given, so the broker authenticates by them."""
        return self.certfile is not None and self.keyfile is not None


@dataclass(frozen=True)
class QosConfig:
    """Prefetch limits sent with ``basic.qos``; 0 means no limit."""

    prefetch_count: int = 100
    prefetch_size: int = 0


@dataclass(frozen=True)
class ExchangeConfig:
    """An exchange fedmq declares before consuming.

    ``passive`` overrides the config's ``passive_declares`` for this exchange:
    true only checks that it exists; None (the default) follows the config.
    """

    name: str
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    arguments: Mapping[str, Any] = _frozen_field()
    passive: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "arguments", _frozen(self.arguments))


@dataclass(frozen=True)
class QueueConfig:
    """A queue fedmq declares and consumes from; the name "" lets the broker pick one.

    ``passive`` overrides the config's ``passive_declares`` for this queue
    (and its retry and dead queues): true only checks that it exists; None
    (the default) follows the config. ``prefetch_count``,
    ``consumer_priority``, ``max_unacked_bytes`` and ``paused`` say how
    fedmq consumes it (see the "Flow control" page);
    ``suspend_on_bad_host_health`` stops consuming it while the host is
    unhealthy.
    """

    name: str
    durable: bool = True
    auto_delete: bool = False
    exclusive: bool = False
    arguments: Mapping[str, Any] = _frozen_field()
    passive: bool | None = None
    #: Its consumer's prefetch (a per-consumer ``basic.qos``); None: ``qos.prefetch_count``.
    prefetch_count: int | None = None
    #: The consumer's priority (``x-priority``); None: the broker's default, 0.
    consumer_priority: int | None = None
    #: Pause the queue while its unsettled deliveries' bodies hold more bytes; None: no limit.
    max_unacked_bytes: int | None = None
    #: Start paused: consume only after ``Consumer.resume``.
    paused: bool = False
    #: Stop consuming it while the host is unhealthy (see :class:`~fedmq.HealthMonitor`).
    suspend_on_bad_host_health: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "arguments", _frozen(self.arguments))


@dataclass(frozen=True)
class BindingConfig:
    """Bind ``queue`` to ``exchange`` once for each of ``routing_keys``."""

    queue: str
    exchange: str
    routing_keys: tuple[str, ...]
    arguments: Mapping[str, Any] = _frozen_field()

    def __post_init__(self) -> None:
        object.__setattr__(self, "routing_keys", tuple(self.routing_keys))
        object.__setattr__(self, "arguments", _frozen(self.arguments))


#: The queue of a configuration that lists none: named by the broker,
#: exclusive to the consumer's connection and deleted with it.
DEFAULT_QUEUE = QueueConfig(name="", durable=False, auto_delete=True, exclusive=True)

#: The binding of a configuration that lists none: the server-named queue
#: gets every message published to ``amq.topic``.
DEFAULT_BINDING = BindingConfig(queue="", exchange="amq.topic", routing_keys=("#",))


@dataclass(frozen=True)
class ReconnectConfig:
    """How fedmq waits between connection attempts: exponential backoff with jitter.

    The n-th consecutive failed attempt waits ``min(max_delay, initial_delay *
    factor ** (n - 1))`` seconds, spread by up to ``jitter`` (a fraction) either
    way. A completed AMQP handshake resets the count. ``max_attempts = 0``
    retries for ever; otherwise fedmq gives up after that many failures in a row.
    """

    initial_delay: float = 1.0
    max_delay: float = 60.0
    factor: float = 2.0
    jitter: float = 0.5
    max_attempts: int = 0


@dataclass(frozen=True)
class RetryConfig:
    """Where a message waits after its callback raised :class:`~fedmq.Retry`.

    Each consumed queue ``Q`` gets one wait queue per delay, ``Q.retry.<delay>s``,
    whose messages expire back into ``Q``, and ``Q.dead`` for messages parked
    after ``max_attempts`` runs of the callback. The n-th failed run waits
    ``delays[n - 1]`` seconds (the last delay repeats).
    """

    enabled: bool = True
    delays: tuple[float, ...] = (1.0, 10.0, 60.0)
    max_attempts: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "delays", tuple(self.delays))


@dataclass(frozen=True)
class MonitoringConfig:
    """The health and metrics HTTP endpoint; off unless ``port`` is set."""

    address: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class ControlConfig:
    """How a running consumer is paused, resumed and asked its status from outside.

    Attributes:
        socket: the UNIX socket ``fedmq pause``, ``resume`` and ``status``
            talk to, made readable and writable by the consumer's user alone
            (mode 0600). None or ``""``: no socket. :func:`load_config` makes
            an unset one ``$RUNTIME_DIRECTORY/control.sock`` when systemd
            gives the process a runtime directory; ``""`` stays off.
        http_address: the address the HTTP control endpoint listens on.
        http_port: the HTTP control endpoint's port; None (the default) turns
            it off. It needs ``token_file``.
        token_file: the file holding the bearer token every HTTP control
            request must present. Its content is never logged or shown.

    """

    socket: str | None = None
    http_address: str = "127.0.0.1"
    http_port: int | None = None
    token_file: str | None = None


@dataclass(frozen=True)
class TracingConfig:
    """How OpenTelemetry spans are made, when the ``otel`` extra and an SDK are installed.

    Attributes:
        link_only: when true, a consumer's ``process`` span links to the
            context the message was sent in but starts a trace of its own;
            when false, it also is that context's child, in the same trace.
        settle_spans: also make an ``ack``, ``nack`` or ``reject`` span for
            each settlement, a child of the ``process`` span.

    """

    link_only: bool = False
    settle_spans: bool = False


@dataclass(frozen=True, repr=False)
class Config:
    """The whole configuration of a fedmq consumer.

    Build it with :func:`load_config` or :func:`config_from_mapping`; derive
    variants with :meth:`replace`. ``repr()`` shows :attr:`redacted_url`, never
    the password.

    The fields before ``concurrency`` mean what they mean in fedora-messaging.

    Attributes:
        concurrency: how many messages the callback may handle at once (at most
            ``qos.prefetch_count`` unless that is 0).
        heartbeat: AMQP heartbeat interval in seconds; 0 turns heartbeats off.
        connect_timeout: seconds to wait for the broker to accept a connection,
            and for each step of setting up (declare, qos, consume, cancel).
        amqp_urls: the nodes of a cluster, tried in turn; when empty, ``amqp_url``.
        reconnect: the backoff between connection attempts.
        drain_timeout: seconds a graceful stop waits for callbacks in flight.
        monitoring: the health and metrics HTTP endpoint.
        tracing: how OpenTelemetry spans are made (with the ``otel`` extra).
        control: pausing, resuming and asking a running consumer from
            outside its process: a UNIX socket, and an HTTP endpoint that
            needs a token.
        log_format: ``"text"``, or ``"json"`` for one JSON object per log line.
        decode: decode bodies by content encoding and content type; when false,
            a callback gets ``message.body`` as the bytes received.
        max_body_size: the most bytes a compressed body may inflate to; one
            that inflates further cannot be decoded (a decompression bomb).
        name: the consumer's name in ``X-Dropped-By`` headers; by default the
            callback's ``module:object`` path.
        message_types: the AMQP ``type`` properties the callback accepts; a
            message of another type never reaches it. Empty accepts any.
        drop_invalid_messages: drop a message whose type is not accepted (true),
            or count it as a consumer error (false).
        drop_exchange: an exchange that receives a copy of every dropped
            message, with ``X-Dropped-*`` headers; "" for none.
        max_errors: consumer errors (:class:`~fedmq.ConsumerError` or an
            unexpected exception) within ``error_window`` seconds that stop
            the consumer.
        error_window: the sliding window, in seconds, ``max_errors`` counts in.
        retry: the wait queues behind :class:`~fedmq.Retry`.
        publish_priority: the AMQP priority of published messages that set
            none themselves (fedora-messaging's key); None for none.
        publish_format: ``"fedmq"``, or ``"fedora-messaging"`` when the
            messages published go to fedora-messaging consumers, which accept
            only a JSON object body: another body is then refused at publish.
        publish_max_unconfirmed: the most messages a :class:`~fedmq.Publisher`
            has posted and the broker not yet confirmed; more wait for room.
        publish_max_unconfirmed_bytes: the same bound in body bytes.
        health_check: ``"module:callable"`` called every ``health_interval``
            seconds in a thread; a false value, an exception or no answer
            within ``health_timeout`` seconds means the host is unhealthy.
            None: no check.
        health_interval: seconds between calls of ``health_check``.
        health_timeout: seconds one call of ``health_check`` may take.
        fail_publish_when_suspended: a publish through a suspended consumer
            fails at once with :class:`~fedmq.ConsumerSuspended`.
        slow_consumer_high: the backlog of messages received and waiting for
            a worker at which the ``slow_consumer_high`` event is emitted; 0
            for no such event.
        slow_consumer_low: the backlog at which ``slow_consumer_normal``
            follows.
        slow_consumer_interval: seconds between measurements of the backlog.
        source: the file it came from, or ``"<defaults>"`` / ``"<arguments>"``.

    """

    amqp_url: str = "amqp://"
    client_properties: Mapping[str, Any] = field(default_factory=_default_client_properties)
    passive_declares: bool = False
    publish_exchange: str = "amq.topic"
    topic_prefix: str = ""
    exchanges: tuple[ExchangeConfig, ...] = ()
    queues: tuple[QueueConfig, ...] = (DEFAULT_QUEUE,)
    bindings: tuple[BindingConfig, ...] = (DEFAULT_BINDING,)
    qos: QosConfig = QosConfig()
    callback: str | None = None
    consumer_config: Mapping[str, Any] = _frozen_field()
    tls: TLSConfig | None = None
    log_config: Mapping[str, Any] | None = None
    concurrency: int = 1
    heartbeat: int = 60
    connect_timeout: float = 10.0
    amqp_urls: tuple[str, ...] = ()
    reconnect: ReconnectConfig = ReconnectConfig()
    drain_timeout: float = 30.0
    monitoring: MonitoringConfig = MonitoringConfig()
    tracing: TracingConfig = TracingConfig()
    control: ControlConfig = ControlConfig()
    log_format: str = "text"
    decode: bool = True
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    name: str = ""
    message_types: tuple[str, ...] = ()
    drop_invalid_messages: bool = True
    drop_exchange: str = ""
    max_errors: int = 5
    error_window: float = 60.0
    retry: RetryConfig = RetryConfig()
    publish_priority: int | None = None
    publish_format: str = "fedmq"
    publish_max_unconfirmed: int = 10_000
    publish_max_unconfirmed_bytes: int = 16 * 1024 * 1024
    health_check: str | None = None
    health_interval: float = 10.0
    health_timeout: float = 5.0
    fail_publish_when_suspended: bool = False
    slow_consumer_high: int = 0
    slow_consumer_low: int = 0
    slow_consumer_interval: float = 1.0
    source: str = "<defaults>"

    def __post_init__(self) -> None:
        for name, kind in _PLAIN_FIELDS.items():
            if getattr(self, name) is not None or name not in _OPTIONAL_FIELDS:
                _expect(getattr(self, name), kind, name, self.source)
        set_field = object.__setattr__  # frozen: normalise through the back door, once
        set_field(self, "connect_timeout", float(self.connect_timeout))
        set_field(self, "drain_timeout", float(self.drain_timeout))
        set_field(self, "error_window", float(self.error_window))
        for name in ("health_interval", "health_timeout", "slow_consumer_interval"):
            set_field(self, name, float(getattr(self, name)))
        set_field(self, "amqp_urls", tuple(self.amqp_urls))
        set_field(self, "message_types", tuple(self.message_types))
        for name in ("exchanges", "queues", "bindings"):
            set_field(self, name, tuple(getattr(self, name)))
        set_field(self, "client_properties", _frozen(self.client_properties))
        set_field(self, "consumer_config", _frozen(self.consumer_config))
        if self.log_config is not None:
            set_field(self, "log_config", _frozen(self.log_config))
        _check_config(self)

    @property
    def broker_urls(self) -> tuple[str, ...]:
        """The URLs to connect to, in order: ``amqp_urls``, else ``amqp_url``."""
        return self.amqp_urls or (self.amqp_url,)

    @property
    def redacted_url(self) -> str:
        """:attr:`amqp_url` with its password replaced by ``***``, safe to log."""
        return redact_url(self.amqp_url)

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied, checked like a freshly loaded config.

        Args:
            **changes: new values for fields, by field name.

        Returns:
            The new configuration.

        Raises:
            ConfigurationError: a new value breaks a rule; the message names the field.

        """
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        def show(name: str) -> str:
            if name == "amqp_url":
                return f"redacted_url={self.redacted_url!r}"
            if name == "amqp_urls":
                return f"amqp_urls={tuple(redact_url(url) for url in self.amqp_urls)!r}"
            return f"{name}={getattr(self, name)!r}"

        shown = (show(item.name) for item in dataclasses.fields(self))
        return f"Config({', '.join(shown)})"


_TOP_LEVEL_KEYS = [item.name for item in dataclasses.fields(Config) if item.name != "source"]


def parse_exchanges(
    data: Mapping[str, Any], source: str = "<arguments>"
) -> tuple[ExchangeConfig, ...]:
    """Read an ``exchanges`` table, as in a config file or fedora-messaging's API.

    Args:
        data: exchange name -> {type, durable, auto_delete, arguments}.
        source: where it came from, named in error messages.

    Returns:
        One :class:`ExchangeConfig` per exchange, in the table's order.

    Raises:
        ConfigurationError: a name is empty, a key unknown or a value of the wrong type.

    """
    exchanges = []
    for name, path, entry in _named_tables(data, "exchanges", source):
        if not name:
            raise ConfigurationError(
                f"{source}: {path}: the default exchange cannot be declared; name one"
            )
        exchanges.append(ExchangeConfig(name=name, **_fields(entry, _EXCHANGE_KEYS, path, source)))
    return tuple(exchanges)


def parse_queues(data: Mapping[str, Any], source: str = "<arguments>") -> tuple[QueueConfig, ...]:
    """Read a ``queues`` table, the shape fedora-messaging's ``consume(queues=...)`` takes.

    Args:
        data: queue name ("" for one the broker names) -> {durable, auto_delete,
            exclusive, arguments}.
        source: where it came from, named in error messages.

    Returns:
        One :class:`QueueConfig` per queue, in the table's order.

    Raises:
        ConfigurationError: an entry has an unknown key or a value of the wrong type.

    """
    return tuple(
        QueueConfig(name=name, **_fields(entry, _QUEUE_KEYS, path, source))
        for name, path, entry in _named_tables(data, "queues", source)
    )


def parse_bindings(
    data: Mapping[str, Any] | Sequence[Mapping[str, Any]], source: str = "<arguments>"
) -> tuple[BindingConfig, ...]:
    """Read bindings, the shape fedora-messaging's ``consume(bindings=...)`` takes.

    Args:
        data: one table or a list of them, each {queue, exchange, routing_keys, arguments};
            ``routing_keys`` may be one string, and may be spelled ``routing_key``.
            Without ``queue``, a binding binds the server-named queue ("").
        source: where it came from, named in error messages.

    Returns:
        One :class:`BindingConfig` per table, in order.

    Raises:
        ConfigurationError: a table misses ``exchange`` or its routing keys,
            has an unknown key, or has a value of the wrong type.

    """
    if isinstance(data, Mapping):
        entries: list[tuple[str, object]] = [("bindings", data)]
    elif isinstance(data, list | tuple):
        entries = [(f"bindings[{index}]", entry) for index, entry in enumerate(data)]
    else:
        raise ConfigurationError(
            f"{source}: bindings must be a table or an array of tables, got {_type_name(data)}"
        )
    bindings = []
    for path, entry in entries:
        values = _fields(entry, _BINDING_KEYS, path, source)
        if "routing_key" in values and "routing_keys" in values:
            raise ConfigurationError(f"{source}: {path} has routing_key and routing_keys; keep one")
        keys = values.pop("routing_keys", values.pop("routing_key", None))
        values.setdefault("queue", "")
        missing = [name for name in ("exchange",) if name not in values]
        if keys is None:
            missing.append("routing_keys")
        if missing:
            raise ConfigurationError(f"{source}: {path} is missing {' and '.join(missing)}")
        if not values["exchange"]:
            raise ConfigurationError(f"{source}: {path}.exchange must not be empty")
        keys = [keys] if isinstance(keys, str) else list(keys)
        if not keys:
            raise ConfigurationError(f"{source}: {path}.routing_keys must not be empty")
        for index, key in enumerate(keys):
            _expect(key, _STR, f"{path}.routing_keys[{index}]", source)
        bindings.append(BindingConfig(routing_keys=tuple(keys), **values))
    return tuple(bindings)


def _parse_client_properties(data: object, source: str) -> dict[str, Any]:
    given: Mapping[str, Any] = _expect(data, _TABLE, "client_properties", source)
    for key, value in given.items():
        _expect(value, _PROPERTY, _join("client_properties", str(key)), source)
    return {**_default_client_properties(), **given}


_SECTIONS: dict[str, Callable[[Any, str], Any]] = {
    "client_properties": _parse_client_properties,
    "exchanges": parse_exchanges,
    "queues": parse_queues,
    "bindings": parse_bindings,
    "qos": lambda data, source: QosConfig(**_fields(data, _QOS_KEYS, "qos", source)),
    "tls": lambda data, source: TLSConfig(**_fields(data, _TLS_KEYS, "tls", source)),
    "reconnect": lambda data, source: ReconnectConfig(
        **_fields(data, _RECONNECT_KEYS, "reconnect", source)
    ),
    "monitoring": lambda data, source: MonitoringConfig(
        **_fields(data, _MONITORING_KEYS, "monitoring", source)
    ),
    "tracing": lambda data, source: TracingConfig(
        **_fields(data, _TRACING_KEYS, "tracing", source)
    ),
    "control": lambda data, source: ControlConfig(
        **_fields(data, _CONTROL_KEYS, "control", source)
    ),
    "retry": lambda data, source: RetryConfig(**_fields(data, _RETRY_KEYS, "retry", source)),
    "message_types": lambda data, source: tuple(
        _expect(kind, _STR, f"message_types[{index}]", source)
        for index, kind in enumerate(
            _expect(data, ((list, tuple), "an array of strings"), "message_types", source)
        )
    ),
    "amqp_urls": lambda data, source: tuple(
        _expect(url, _STR, f"amqp_urls[{index}]", source)
        for index, url in enumerate(
            _expect(data, ((list, tuple), "an array of strings"), "amqp_urls", source)
        )
    ),
}


def config_from_mapping(data: Mapping[str, Any], source: str = "<arguments>") -> Config:
    """Build a :class:`Config` from a parsed TOML document or an equivalent dict.

    Nested tables (``qos``, ``tls``, ``client_properties``, each exchange, queue and
    binding) are merged with their defaults key by key. Environment variables are
    not consulted; :func:`load_config` does that.

    Args:
        data: the top-level table.
        publish_max_unconfirmed: the most messages a :class:`~fedmq.Publisher`
            has posted and the broker not yet confirmed; more wait for room.
        publish_max_unconfirmed_bytes: the same bound in body bytes.
        source: the file it came from, named in error messages.

    Returns:
        The checked configuration.

    Raises:
        ConfigurationError: a key is unknown, a value has the wrong type or breaks a rule.

    """
    table = _lower_top_level_keys(_expect(data, _TABLE, "the configuration", source), source)
    _reject_unknown(table, _TOP_LEVEL_KEYS, "", source)
    values: dict[str, Any] = {key: table[key] for key in _PLAIN_FIELDS if key in table}
    for key, parse in _SECTIONS.items():
        if key in table:
            values[key] = parse(table[key], source)
    queues: tuple[QueueConfig, ...] = values.setdefault("queues", (DEFAULT_QUEUE,))
    server_named = any(not queue.name for queue in queues)
    if "bindings" not in values:
        values["bindings"] = (DEFAULT_BINDING,) if server_named else ()
    elif not server_named:
        for index, binding in enumerate(values["bindings"]):
            if not binding.queue:
                raise ConfigurationError(
                    f"{source}: bindings[{index}] names no queue, so it binds the "
                    "server-named queue, but the queues table declares none; add a "
                    "queue key naming one of its queues"
                )
    return Config(source=source, **values)


def _lower_top_level_keys(table: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Top-level keys are case-insensitive (``AMQP_URL`` is ``amqp_url``)."""
    lowered: dict[str, Any] = {}
    for key, value in table.items():
        name = str(key).lower()
        if name in lowered:
            raise ConfigurationError(f"{source}: {name} is given twice, in different cases")
        lowered[name] = value
    return lowered


def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load the configuration file and apply environment overrides.

    The file is ``path`` when given, else ``$FEDMQ_CONFIG`` when set, else
    :data:`DEFAULT_CONFIG_PATH` if it exists, else fedora-messaging's file
    (``$FEDORA_MESSAGING_CONF`` when set, else
    ``/etc/fedora-messaging/config.toml`` if it exists; ``publish_format``
    then defaults to ``"fedora-messaging"``); with none of them, the
    defaults are used. ``$FEDMQ_AMQP_URL``, when set, replaces ``amqp_url``.
    ``[control] socket``, when the file leaves it unset, becomes
    ``$RUNTIME_DIRECTORY/control.sock`` when that variable is set (systemd's
    ``RuntimeDirectory=``); else it stays unset (off). Empty variables count
    as unset.

    Args:
        path: the file to read; it must exist.
        environ: the environment to read variables from; ``os.environ`` by default.

    Returns:
        The checked configuration; its ``source`` is the file read, or ``"<defaults>"``.

    Raises:
        ConfigurationError: the file is missing, unreadable or invalid, or
            ``$FEDMQ_AMQP_URL`` is not an AMQP URL.

    """
    env = os.environ if environ is None else environ
    data, source = _read_sources(path, env, DEFAULT_CONFIG_PATH)
    config = config_from_mapping(data, source)
    # systemd's RuntimeDirectory= (possibly several, colon-separated).
    runtime_directory = env.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if config.control.socket is None and runtime_directory:
        socket = str(Path(runtime_directory, "control.sock"))
        config = config.replace(control=dataclasses.replace(config.control, socket=socket))
    return config
