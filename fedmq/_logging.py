"""One place for every log line: Twisted's and the standard library's.

fedmq, pika and callbacks log with :mod:`logging`; Twisted logs with
:mod:`twisted.logger`. :func:`setup_logging` forwards Twisted's events to
:mod:`logging` (one logger per Twisted namespace, under ``twisted``) and
configures :mod:`logging` once: fedmq's default, INFO and up to standard
error, with the configuration file's ``log_config`` (a
:func:`logging.config.dictConfig` dictionary) merged over it, and
``log_format = "json"`` for one JSON object per line. Every handler it
knows of gets a filter that hides the password of any AMQP URL.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import logging.config
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, cast

from twisted.logger import (
    ILogObserver,
    LogBeginner,
    LogEvent,
    LogLevel,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import classImplements  # type: ignore[import-untyped]

from fedmq import _tracing
from fedmq.config import Config
from fedmq.exceptions import ConfigurationError

#: The format of text log lines.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: The name of fedmq's formatter, which ``log_config`` handlers may use.
FORMATTER_NAME = "fedmq"

# scheme://user:password@ -> scheme://user:***@. The user ends at the first
# ":"; the password runs to the last "@" of the URL (greedy, up to a space or
# quote), so that an unescaped "@" in it is hidden too: when in doubt, more.
_PASSWORD_IN_URL = re.compile(r"""(?i)\b(amqps?://[^:@/\s'"]*:)[^\s'"]*(@)""")

# Attributes every LogRecord has; anything else on a record came from extra=.
_RECORD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)

_LEVELS = {
    LogLevel.debug: logging.DEBUG,
    LogLevel.info: logging.INFO,
    LogLevel.warn: logging.WARNING,
    LogLevel.error: logging.ERROR,
    LogLevel.critical: logging.CRITICAL,
}


def redact(text: str) -> str:
    """Replace the password of every ``amqp://`` or ``amqps://`` URL in ``text`` by ``***``.

    Args:
        text: any text, such as a formatted log message or a traceback.

    Returns:
        ``text`` with ``amqp(s)://user:***@host`` for every URL that has a password.

    """
    if "amqp" not in text.lower():
        return text
    return _PASSWORD_IN_URL.sub(r"\1***\2", text)


class RedactPasswords(logging.Filter):
    """Hides AMQP passwords in a record's message, arguments, traceback and extra fields.

    It never drops a record. It is attached to handlers, so that records
    from every logger pass through it, whichever logger they were sent to.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken format: let the handler report it as usual
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extra_fields(record):
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _extra_fields(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    for key, value in vars(record).items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            yield key, value


class JSONFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line, for log shippers.

    Keys: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``; then
    any fields given with ``extra=`` (such as ``message_id``, ``topic``,
    ``queue``); ``exception`` and ``stack`` when the record has them.
    """

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_tracing.log_fields(),
        }
        for key, value in _extra_fields(record):
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(log_format: str = "text") -> logging.Formatter:
    """Fedmq's formatter: text lines (:data:`TEXT_FORMAT`), or JSON with ``"json"``.

    Args:
        log_format: ``"text"`` or ``"json"``, as the ``log_format`` key.

    Returns:
        A new formatter.

    """
    return JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


class TwistedToLogging:
    """A Twisted log observer that hands every event to :mod:`logging`.

    An event from namespace ``twisted.web.server`` goes to the logger of
    that name; events with no namespace, or legacy ones, go to ``twisted``.
    A Failure in the event becomes the record's traceback.

    An event raised while this observer is already handing one over on the
    same thread is dropped: under twistd, standard error is itself a Twisted
    log, so a handler that fails (and reports it on standard error) would
    otherwise feed its own report back to itself without end.
    """

    def __init__(self) -> None:
        self._busy = threading.local()

    def __call__(self, event: LogEvent) -> None:
        if getattr(self._busy, "active", False):
            return
        self._busy.active = True
        try:
            self._forward(event)
        finally:
            self._busy.active = False

    def _forward(self, event: LogEvent) -> None:
        level = _LEVELS.get(event.get("log_level", LogLevel.info), logging.INFO)
        namespace = event.get("log_namespace")
        if not namespace or namespace == "log_legacy":
            namespace = "twisted"
        logger = logging.getLogger(namespace)
        if not logger.isEnabledFor(level):
            return
        failure = event.get("log_failure")
        exc_info = None
        if failure is not None:
            exc_info = (failure.type, failure.value, failure.getTracebackObject())
        logger.log(level, "%s", formatEvent(event), exc_info=exc_info)


# Declared, not decorated: twistd checks ILogObserver.providedBy, and an
# untyped decorator would hide the class from mypy.
classImplements(TwistedToLogging, ILogObserver)

#: The observer fedmq adds to Twisted's log publisher (one per process).
twisted_observer = TwistedToLogging()

# The handler setup_logging installed last, replaced by the next call.
_default_handler: logging.Handler | None = None
_redact_filter = RedactPasswords()
_beginners_started: weakref.WeakSet[LogBeginner] = weakref.WeakSet()


def twistd_log_observer() -> Callable[[LogEvent], None]:
    """The observer for twistd to begin logging to (``ServerOptions["logger"]``).

    twistd begins Twisted's logging itself, after the plugin has built its
    service; given this, it sends Twisted's events to :mod:`logging` too,
    instead of writing them to a file of its own.
    """
    return twisted_observer


def setup_logging(
    config: Config,
    *,
    stream: IO[str] | None = None,
    begin_twisted_logging: bool = True,
    log_beginner: LogBeginner | None = None,
) -> None:
    """Configure :mod:`logging` from ``config`` and send Twisted's log there too.

    Without ``log_config``: INFO and above (pika's: WARNING and above) to
    standard error, in ``log_format``. With it, ``log_config`` is applied
    with :func:`logging.config.dictConfig` on top of that default:
    ``version`` defaults to 1 and ``disable_existing_loggers`` to false; a
    ``root`` entry replaces the default handler, and handlers may name the
    ``"fedmq"`` formatter. Calling it again replaces what the last call set up.

    Args:
        config: the configuration; ``log_config`` and ``log_format`` are read.
        stream: where the default handler writes; the process's standard
            error (``sys.__stderr__``, which twistd does not redirect) by default.
        begin_twisted_logging: begin Twisted's logging to :mod:`logging`.
            False under twistd, which begins it itself with
            :func:`twistd_log_observer`.
        log_beginner: the Twisted log beginner; the global one by default.

    Raises:
        ConfigurationError: ``log_config`` is not a valid dictConfig dictionary.

    """
    # One default handler per process, as logging has one root logger.
    global _default_handler  # noqa: PLW0603
    root = logging.getLogger()
    if _default_handler is not None:
        root.removeHandler(_default_handler)
        _default_handler = None
    root.setLevel(logging.INFO)
    # pika narrates every connection step at INFO; fedmq logs the ones that matter.
    logging.getLogger("pika").setLevel(logging.WARNING)

    wants_default = True
    if config.log_config is not None:
        wants_default = "root" not in config.log_config
        _apply_log_config(config, config.log_config)
    if wants_default:
        handler: logging.Handler = logging.StreamHandler(
            stream if stream is not None else _stderr()
        )
        handler.setFormatter(make_formatter(config.log_format))
        root.addHandler(handler)
        _default_handler = handler

    for handler in _all_handlers():
        if _redact_filter not in handler.filters:
            handler.addFilter(_redact_filter)

    if begin_twisted_logging:
        begin_twisted(log_beginner)


def begin_twisted(log_beginner: LogBeginner | None = None) -> None:
    """Begin Twisted's logging to :mod:`logging`, once per beginner.

    Args:
        log_beginner: the Twisted log beginner; the global one by default.

    """
    beginner = globalLogBeginner if log_beginner is None else log_beginner
    if beginner in _beginners_started:
        return
    _beginners_started.add(beginner)
    # Standard output stays what it is: a callback's print() is its own business.
    beginner.beginLoggingTo([cast("ILogObserver", twisted_observer)], redirectStandardIO=False)


def _stderr() -> IO[str]:
    # Not sys.stderr: twistd replaces it with a file that logs what is written
    # to it, which would bring every log line back here, for ever.
    return sys.__stderr__ if sys.__stderr__ is not None else sys.stderr


def _apply_log_config(config: Config, log_config: Mapping[str, Any]) -> None:
    settings: dict[str, Any] = copy.deepcopy(dict(log_config))
    settings.setdefault("version", 1)
    # dictConfig would otherwise silence the loggers fedmq made at import.
    settings.setdefault("disable_existing_loggers", False)
    loggers = settings.get("loggers")
    if isinstance(loggers, dict) and "fedmq" not in loggers and "fedora_messaging" in loggers:
        # A fedora-messaging configuration says how to show fedora-messaging's
        # own lines; fedmq's are those lines now, so they are shown the same way.
        loggers["fedmq"] = copy.deepcopy(loggers["fedora_messaging"])
    formatters = settings.setdefault("formatters", {})
    if isinstance(formatters, dict):
        factory: Callable[..., logging.Formatter] = make_formatter
        formatters.setdefault(FORMATTER_NAME, {"()": factory, "log_format": config.log_format})
    try:
        logging.config.dictConfig(settings)
    except (ValueError, TypeError, AttributeError, ImportError) as error:
        raise ConfigurationError(
            f"{config.source}: log_config is not a valid logging configuration: "
            f"{redact(_describe(error))}"
        ) from None
    # disable_existing_loggers = true must never silence why a consumer stops.
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (name == "fedmq" or name.startswith("fedmq.")) and isinstance(logger, logging.Logger):
            logger.disabled = False


def _describe(error: BaseException) -> str:
    # dictConfig wraps the real cause: "Unable to configure handler 'x'" from
    # "No module named 'y'". Both halves help.
    parts = [str(error)]
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause) not in parts[0]:
        parts.append(str(cause))
    return ": ".join(part for part in parts if part)


def _all_handlers() -> Iterator[logging.Handler]:
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    seen: set[int] = set()
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if id(handler) not in seen:
                seen.add(id(handler))
                yield handler


__all__ = [
    "FORMATTER_NAME",
    "TEXT_FORMAT",
    "JSONFormatter",
    "RedactPasswords",
    "TwistedToLogging",
    "begin_twisted",
    "make_formatter",
    "redact",
    "setup_logging",
    "twistd_log_observer",
]
