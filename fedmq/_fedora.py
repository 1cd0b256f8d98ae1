"""fedora-messaging's message classes, exceptions and global config, for its callbacks.

fedora-messaging is optional (the ``fedora`` extra). This is the one module
that imports it, and only inside functions: importing this module costs
nothing, and without the package every function here answers "nothing to
do". What it provides:

- on the consuming side, :func:`schema_message`: a delivery whose
  ``fedora_messaging_schema`` header names a registered class becomes an
  instance of that class, validated against the class's schemas (compiled
  once per class), with fedmq's own attributes mixed in;
- :func:`translate_exception`: fedora-messaging's ``Nack``, ``Drop``,
  ``HaltConsumer`` and ``ValidationError`` as fedmq's outcomes;
- :func:`fill_global_config`: fedora-messaging's global ``conf`` filled from
  a fedmq :class:`~fedmq.Config`, so that callback classes reading it work;
- on the publishing side, :func:`wire_form` (what fedora-messaging itself
  would send for one of its messages) and :func:`add_compatibility_headers`
  (what its consumers need on a plain fedmq message).
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedmq._frames import ConstantHeaders
from fedmq._headers import FEDORA_SCHEMA as SCHEMA_HEADER
from fedmq._headers import FEDORA_SEVERITY as SEVERITY_HEADER
from fedmq._headers import SENT_AT as SENT_AT_HEADER
from fedmq._schema_check import quick_check
from fedmq.exceptions import Drop, HaltConsumer, Nack, PublishFormatError
from fedmq.message import Message, Properties

if TYPE_CHECKING:
    from fedmq.config import Config
    from fedmq.settlement import Settlement

log = logging.getLogger("fedmq")

#: The schema name of fedora-messaging's base class.
BASE_SCHEMA = "base.message"
#: fedora-messaging's INFO severity, what a message without one has.
INFO = 20


class SchemaInvalid(Drop):
    """A delivery failed its schema class's validation: it is dropped, never handed over."""


def is_json_type(content_type: str | None) -> bool:
    """Whether a content type is JSON (``application/json``, ``+json``, or none)."""
    if not content_type:
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def installed() -> bool:
    """Whether fedora-messaging can be imported here."""
    if sys.modules.get("fedora_messaging") is not None:
        return True
    try:
        return importlib.util.find_spec("fedora_messaging") is not None
    except ValueError:  # in sys.modules as None: imports of it are blocked
        return False


# --- consuming: classes by schema name --------------------------------------


class _Schemas:
    """Schema name -> the class fedmq builds, and each class's compiled validators.

    Lookups happen once per schema name and compilation once per class;
    after that, one dict lookup per delivery.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # schema name -> (delivered class, validate) or None for "hand over a plain Message"
        self._by_name: dict[str, tuple[type[Any], Callable[[Any], None]] | None] = {}

    def lookup(self, name: str) -> tuple[type[Any], Callable[[Any], None]] | None:
        try:
            return self._by_name[name]
        except KeyError:
            pass
        with self._lock:
            if name not in self._by_name:
                self._by_name[name] = _build_entry(name)
            return self._by_name[name]


def _build_entry(name: str) -> tuple[type[Any], Callable[[Any], None]] | None:
    from fedora_messaging import message as fm_message

    # Loading the registry reads the fedora.messages entry points once.
    # fedora-messaging exposes no public lookup of its registry.
    if not fm_message._registry_loaded:  # noqa: SLF001
        fm_message.load_message_classes()
    cls = fm_message._schema_name_to_class.get(name)  # noqa: SLF001
    if cls is None:
        log.warning(
            "No message class is registered for schema %r (install the package that "
            "provides it); its messages reach the callback as plain fedmq messages",
            name,
        )
        return None
    if cls is fm_message.Message:
        # The base class adds nothing a plain fedmq.Message lacks.
        return None
    if getattr(cls, "deprecated", False):
        log.warning(
            "Messages of schema %r use the deprecated class %s.%s; its publisher has a newer one",
            name,
            cls.__module__,
            cls.__qualname__,
        )
    return _delivered_class(cls), _validator(cls, fm_message.Message, name)


def _compiled(schema: Any) -> tuple[Callable[[Any], bool] | None, Any]:
    """(quick check or None, full validator) for one schema."""
    import jsonschema.validators  # type: ignore[import-untyped]

    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return quick_check(schema), validator_class(schema)


def _validator(cls: type[Any], base: type[Any], name: str) -> Callable[[Any], None]:
    """Check a message against its class's schemas and the base class's, as compiled once."""
    schemas = [
        (attribute, getattr(klass, attribute, None))
        for attribute in ("headers_schema", "body_schema")
        for klass in (cls, base)
    ]
    if not all(isinstance(schema, dict) for _, schema in schemas):
        # A schema computed per instance cannot be compiled ahead: validate the slow way.
        def validate_per_instance(message: Any) -> None:
            import jsonschema.exceptions  # type: ignore[import-untyped]

            try:
                message.validate()
            except jsonschema.exceptions.ValidationError as error:
                raise SchemaInvalid(_reason(name, error)) from error

        return validate_per_instance
    # A class that keeps the base class's schema would check the same thing twice.
    headers_checks = [_compiled(schema) for schema in _distinct(schemas[:2])]
    body_checks = [_compiled(schema) for schema in _distinct(schemas[2:])]

    def validate(message: Any) -> None:
        import jsonschema.exceptions  # type: ignore[import-untyped]

        try:
            # What fedora-messaging's own validate() checks; it has no public name.
            headers = message._headers  # noqa: SLF001
            for quick, full in headers_checks:
                # The full validator decides whatever the quick check does not accept.
                if quick is None or not quick(headers):
                    full.validate(headers)
            body = message.body
            for quick, full in body_checks:
                if quick is None or not quick(body):
                    full.validate(body)
        except jsonschema.exceptions.ValidationError as error:
            raise SchemaInvalid(_reason(name, error)) from error

    return validate


def _distinct(schemas: list[tuple[str, Any]]) -> list[Any]:
    distinct: list[Any] = []
    for _attribute, schema in schemas:
        if not any(schema is seen for seen in distinct):
            distinct.append(schema)
    return distinct


def _reason(name: str, error: Any) -> str:
    where = "/".join(str(part) for part in error.absolute_path)
    place = f" at {where!r}" if where else ""
    return f"it fails the {name!r} schema{place}: {error.message}"


class SchemaMessageExtras:
    """What a fedmq message offers beyond a schema class: mixed into each delivered class.

    The schema class comes first in the method order, so its own attributes
    win over these.
    """

    _fedmq_message: Message

    @property
    def headers(self) -> dict[str, Any]:
        """The application headers."""
        return self._fedmq_message.headers

    @property
    def properties(self) -> Properties:
        """The message's AMQP properties."""
        return self._fedmq_message.properties

    @property
    def data(self) -> bytes:
        """The body as received."""
        return self._fedmq_message.data

    @property
    def exchange(self) -> str | None:
        """The exchange it was published to."""
        return self._fedmq_message.exchange

    @property
    def attempt(self) -> int:
        """Which run of the callback this is (see :attr:`fedmq.Message.attempt`)."""
        return self._fedmq_message.attempt

    @property
    def redelivered(self) -> bool:
        """Whether the broker delivered it before."""
        return self._fedmq_message.redelivered

    @property
    def delivery_tag(self) -> int | None:
        """The channel's tag for this delivery."""
        return self._fedmq_message.delivery_tag

    @property
    def fedmq_message(self) -> Message:
        """The same delivery as a plain :class:`fedmq.Message`."""
        return self._fedmq_message

    def settle_later(self) -> Settlement:
        """Take over settling the message (see :meth:`fedmq.Message.settle_later`)."""
        return self._fedmq_message.settle_later()

    # The executor reads and closes it on the object the callback was given.
    @property
    def _deferral(self) -> Any:
        return self._fedmq_message._deferral  # noqa: SLF001 - the same delivery's state

    @_deferral.setter
    def _deferral(self, value: Any) -> None:
        self._fedmq_message._deferral = value  # noqa: SLF001


def _delivered_class(cls: type[Any]) -> type[Any]:
    return type(
        cls.__name__,
        (cls, SchemaMessageExtras),
        {"__module__": cls.__module__, "__qualname__": cls.__qualname__},
    )


_schemas = _Schemas()


def schema_message(message: Message, schema: Any) -> Any:
    """The delivery as an instance of the class registered for ``schema``, validated.

    Args:
        message: the delivery, as fedmq built it.
        schema: the value of its ``fedora_messaging_schema`` header.

    Returns:
        An instance of the registered class (a subclass of it mixing in
        :class:`SchemaMessageExtras`); ``message`` itself when no class is
        registered for the name, or it names fedora-messaging's base class.

    Raises:
        SchemaInvalid: the headers or body fail the class's schemas.

    """
    if schema == BASE_SCHEMA or not isinstance(schema, str):
        # The base class adds nothing a plain fedmq.Message lacks; and the most
        # common schema name costs no import of fedora-messaging.
        return message
    entry = _schemas.lookup(schema)
    if entry is None:
        return message
    cls, validate = entry
    properties = message.properties
    severity = (properties.headers or {}).get(SEVERITY_HEADER) or INFO
    try:
        instance = cls(
            body=message.body, topic=message.topic, properties=properties, severity=severity
        )
    except Exception as error:
        raise SchemaInvalid(f"its class {cls.__qualname__} refused it: {error}") from error
    validate(instance)
    instance.queue = message.queue
    instance._fedmq_message = message
    return instance


# --- consuming: exceptions --------------------------------------------------


def translate_exception(exc: BaseException) -> BaseException | None:
    """Fedmq's outcome exception for one of fedora-messaging's, else None.

    ``Nack``, ``Drop`` and ``HaltConsumer`` become fedmq's of the same name
    (``HaltConsumer`` with its exit code, reason and requeue flag);
    ``ValidationError`` becomes a Drop. The original is the ``__cause__``.
    """
    fm_exceptions = sys.modules.get("fedora_messaging.exceptions")
    if fm_exceptions is None:
        return None
    translated: BaseException
    if isinstance(exc, fm_exceptions.Nack):
        translated = Nack(*exc.args)
    elif isinstance(exc, fm_exceptions.Drop):
        translated = Drop(*exc.args)
    elif isinstance(exc, fm_exceptions.HaltConsumer):
        translated = HaltConsumer(exc.exit_code, exc.reason, exc.requeue)
    elif isinstance(exc, fm_exceptions.ValidationError):
        translated = Drop(f"the callback raised ValidationError: {exc}")
    else:
        return None
    translated.__cause__ = exc
    return translated


# --- the global configuration -----------------------------------------------


def fill_global_config(config: Config) -> None:
    """Fill fedora-messaging's global ``conf`` from ``config``, marked as loaded.

    A callback class written for fedora-messaging reads
    ``fedora_messaging.config.conf["consumer_config"]`` in its ``__init__``;
    after this it finds fedmq's values, and fedora-messaging never reads its
    own file. Does nothing when fedora-messaging is not installed.
    """
    if not installed():
        return
    import copy

    from fedora_messaging import config as fm_config

    values = copy.deepcopy(fm_config.DEFAULTS)
    values.update(
        {
            "amqp_url": config.amqp_url,
            # fedora-messaging reserves the keys naming the library itself.
            "client_properties": {
                **values["client_properties"],
                **{
                    key: value
                    for key, value in _plain(config.client_properties).items()
                    if key not in ("product", "version", "information")
                },
            },
            "passive_declares": config.passive_declares,
            "publish_exchange": config.publish_exchange,
            "topic_prefix": config.topic_prefix,
            "publish_priority": config.publish_priority,
            "exchanges": {
                exchange.name: {
                    "type": exchange.type,
                    "durable": exchange.durable,
                    "auto_delete": exchange.auto_delete,
                    "arguments": _plain(exchange.arguments),
                }
                for exchange in config.exchanges
            },
            "queues": {
                queue.name: {
                    "durable": queue.durable,
                    "auto_delete": queue.auto_delete,
                    "exclusive": queue.exclusive,
                    "arguments": _plain(queue.arguments),
                }
                for queue in config.queues
            },
            "bindings": [
                {
                    "queue": binding.queue,
                    "exchange": binding.exchange,
                    "routing_keys": list(binding.routing_keys),
                }
                for binding in config.bindings
            ],
            "qos": {
                "prefetch_size": config.qos.prefetch_size,
                "prefetch_count": config.qos.prefetch_count,
            },
            "callback": config.callback,
            "consumer_config": _plain(config.consumer_config),
        }
    )
    conf = fm_config.conf
    conf.loaded = True  # never read /etc/fedora-messaging/config.toml
    dict.clear(conf)
    dict.update(conf, values)


def _plain(value: Any) -> Any:
    """Frozen mappings and tuples as the dicts and lists fedora-messaging's code expects."""
    if hasattr(value, "items"):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# --- publishing -------------------------------------------------------------


def is_schema_message(message: Any) -> bool:
    """Whether ``message`` is a fedora-messaging message (and not a fedmq one)."""
    if isinstance(message, Message):
        return False
    fm_message = sys.modules.get("fedora_messaging.message")
    return fm_message is not None and isinstance(message, fm_message.Message)


def join_topic(prefix: str, topic: str) -> str:
    """``prefix.topic``, as fedora-messaging joins them; ``topic`` alone without a prefix."""
    if not prefix:
        return topic
    return f"{prefix.rstrip('.')}.{topic}"


def wire_form(message: Any, publish_priority: int | None) -> tuple[str, bytes, Properties]:
    """What fedora-messaging itself sends for its ``message``: (topic, body, properties).

    The message is validated first. Its properties are sent as its class built
    them; ``publish_priority`` fills in a priority the message lacks.

    Raises:
        PublishFormatError: the message fails its schemas.

    """
    import jsonschema.exceptions  # type: ignore[import-untyped]

    try:
        message.validate()
    except jsonschema.exceptions.ValidationError as error:
        raise PublishFormatError(
            f"Message {message.id} of class {type(message).__qualname__} "
            f"(topic {message.topic!r}) fails its schema, so it was not published: "
            f"{error.message}"
        ) from error
    # fedora-messaging exposes no public form of the properties and body it publishes.
    properties = Properties.from_object(message._properties)  # noqa: SLF001
    properties.headers = dict(properties.headers or {})
    if properties.priority is None and publish_priority is not None:
        properties.priority = publish_priority
        properties.headers["priority"] = publish_priority
    return message.topic, message._encoded_body, properties  # noqa: SLF001


def add_compatibility_headers(message: Message) -> Properties | None:
    """The properties a fedora-messaging consumer needs on ``message``; None if it has them.

    Only a JSON message whose body is an object is one that consumer accepts:
    it gets the base schema's name, INFO severity, the time it was sent, and
    ``utf-8`` as its content encoding, each unless already set.
    """
    properties = message.properties
    headers = properties.headers or {}
    if (
        SCHEMA_HEADER in headers
        and SEVERITY_HEADER in headers
        and SENT_AT_HEADER in headers
        and properties.content_encoding
    ):
        return None
    if not is_json_type(properties.content_type) or not isinstance(message.body, dict):
        return None
    added = Properties.from_object(properties)
    if headers:
        added.headers = {
            SCHEMA_HEADER: BASE_SCHEMA,
            SEVERITY_HEADER: INFO,
            SENT_AT_HEADER: _now(),
            **headers,
        }
    else:  # the common case: the same three headers for every message of a second
        added.headers = _base_headers()
    if not added.content_encoding:
        added.content_encoding = "utf-8"
    return added


#: (second, its ISO 8601 form): ``sent-at`` has whole seconds, so one formatting a second does.
#: A one-entry cache whose entry is replaced whole: safe across threads.
_sent_at: list[tuple[int, str]] = [(0, "")]
#: (``sent-at``, the headers a message without its own gets): shared, so its
#: encoding is too (see fedmq._frames), for the messages of one second.
_base: list[tuple[str, ConstantHeaders]] = [("", ConstantHeaders())]


def _base_headers() -> ConstantHeaders:
    sent_at = _now()
    cached = _base[0]  # a one-entry cache, replaced whole: safe across threads
    if cached[0] != sent_at:
        headers = ConstantHeaders(
            {SCHEMA_HEADER: BASE_SCHEMA, SEVERITY_HEADER: INFO, SENT_AT_HEADER: sent_at}
        )
        cached = _base[0] = (sent_at, headers)
    return cached[1]


def _now() -> str:
    second = int(time.time())
    cached = _sent_at[0]
    if cached[0] != second:
        when = datetime.datetime.fromtimestamp(second, tz=datetime.timezone.utc)
        cached = _sent_at[0] = (second, when.isoformat())
    return cached[1]


def format_problem(message: Message) -> str | None:
    """Why a fedora-messaging consumer would drop ``message``; None when it would not."""
    properties = message.properties
    if not is_json_type(properties.content_type):
        return f"its content type is {properties.content_type!r}, not JSON"
    encoding = properties.content_encoding
    if encoding and encoding.lower() not in ("utf-8", "utf8"):
        return f"its content encoding is {encoding!r}, not utf-8"
    if not isinstance(message.body, dict):
        return f"its body is {_describe(message.body)}, not a JSON object"
    return None


def _describe(body: Any) -> str:
    if body is None:
        return "empty (null)"
    kind = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return kind.get(type(body), f"a {type(body).__name__}")
