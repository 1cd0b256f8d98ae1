"""Logging: one setup for Twisted and the standard library, JSON lines, no passwords."""

from __future__ import annotations

import io
import json
import logging
import sys
import warnings
from typing import Any

import pytest
from twisted.logger import ILogObserver, LogBeginner, Logger, LogPublisher
from twisted.python.failure import Failure

from fedmq import _logging
from fedmq._logging import (
    JSONFormatter,
    RedactPasswords,
    TwistedToLogging,
    begin_twisted,
    redact,
    setup_logging,
    twistd_log_observer,
)
from fedmq.config import config_from_mapping
from fedmq.exceptions import ConfigurationError

SECRET = "s3cr3t-Pa55word"
URL = f"amqps://orders:{SECRET}@rabbit.example.com:5671/prod"


@pytest.fixture(autouse=True)
def _restore_logging(restore_logging: None) -> None:
    """setup_logging changes globals: every test here gets them back as they were."""


#: Where log_config handlers in these tests write (a config holds data, not objects).
CAPTURED = io.StringIO()


@pytest.fixture
def captured() -> io.StringIO:
    CAPTURED.seek(0)
    CAPTURED.truncate()
    return CAPTURED


def configured(stream: io.StringIO, **keys: Any) -> None:
    setup_logging(config_from_mapping(keys), stream=stream, begin_twisted_logging=False)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# --- redaction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp://guest:guest@localhost/%2F", "amqp://guest:***@localhost/%2F"),
        (f"on {URL}!", "on amqps://orders:***@rabbit.example.com:5671/prod!"),
        ("AMQP://u:p@ss@h/v", "AMQP://u:***@h/v"),
        ("('amqp://a:b@h1/', 'amqp://c:d@h2/')", "('amqp://a:***@h1/', 'amqp://c:***@h2/')"),
        ("amqp://localhost/ and amqp://user@host/", "amqp://localhost/ and amqp://user@host/"),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redact_hides_the_password_of_every_amqp_url(text, expected):
    assert redact(text) == expected


def record(msg: str, *args: Any, **attributes: Any) -> logging.LogRecord:
    made = logging.LogRecord("fedmq", logging.ERROR, __file__, 1, msg, args or None, None)
    for key, value in attributes.items():
        setattr(made, key, value)
    return made


def test_the_filter_redacts_the_message_and_its_arguments():
    item = record("Cannot reach %s (try %d)", URL, 3)
    assert RedactPasswords().filter(item) is True
    assert SECRET not in item.getMessage()
    assert (
        item.getMessage() == "Cannot reach amqps://orders:***@rabbit.example.com:5671/prod (try 3)"
    )


def test_the_filter_redacts_tracebacks_and_extra_fields():
    try:
        raise RuntimeError(f"could not open {URL}")
    except RuntimeError:
        item = record("failed", url=URL)
        item.exc_info = sys.exc_info()
    RedactPasswords().filter(item)
    text = logging.Formatter().format(item)
    assert "RuntimeError: could not open amqps://orders:***@" in text
    assert SECRET not in text
    assert SECRET not in item.url  # type: ignore[attr-defined]


def test_a_record_with_a_broken_format_is_left_for_the_handler_to_report():
    item = record("%d apples", "many")
    assert RedactPasswords().filter(item) is True


# --- formats --------------------------------------------------------------------


def test_json_lines_carry_time_level_logger_message_and_extra_fields():
    item = record(
        "The callback raised on message %s",
        "m-1",
        message_id="m-1",
        topic="orders.created",
        queue="orders",
        duration=0.25,
    )
    item.created = 1_700_000_000.5
    entry = json.loads(JSONFormatter().format(item))
    assert entry == {
        "time": "2023-11-14T22:13:20.500Z",
        "level": "ERROR",
        "logger": "fedmq",
        "message": "The callback raised on message m-1",
        "message_id": "m-1",
        "topic": "orders.created",
        "queue": "orders",
        "duration": 0.25,
    }


def test_a_traceback_stays_inside_its_one_json_line():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        item = record("oops")
        item.exc_info = sys.exc_info()
    line = JSONFormatter().format(item)
    assert "\n" not in line
    assert "ValueError: bad\nvalue" in json.loads(line)["exception"]


def test_values_json_cannot_encode_are_written_as_text():
    line = JSONFormatter().format(record("x", what={1, 2}.__class__))
    assert json.loads(line)["what"] == "<class 'set'>"


# --- setup_logging --------------------------------------------------------------


def test_by_default_info_and_up_goes_to_stderr_as_text_and_pika_is_quieter():
    stream = io.StringIO()
    configured(stream)
    logging.getLogger("fedmq.test").debug("hidden")
    logging.getLogger("fedmq.test").info("shown %s", "here")
    logging.getLogger("pika.connection").info("pika chatter")
    logging.getLogger("pika.connection").warning("pika trouble")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(" INFO fedmq.test: shown here")
    assert lines[1].endswith(" WARNING pika.connection: pika trouble")


def test_the_default_handler_writes_to_the_processs_own_stderr():
    setup_logging(config_from_mapping({}), begin_twisted_logging=False)
    handler = _logging._default_handler
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.__stderr__


def test_log_format_json_gives_one_object_per_line():
    stream = io.StringIO()
    configured(stream, log_format="json")
    logging.getLogger("fedmq").warning("slow %s", "consumer", extra={"queue": "orders"})
    [entry] = json_lines(stream)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "fedmq"
    assert entry["message"] == "slow consumer"
    assert entry["queue"] == "orders"


def test_setting_up_again_replaces_the_handler_instead_of_adding_one():
    first, second = io.StringIO(), io.StringIO()
    configured(first)
    configured(second, log_format="json")
    logging.getLogger("fedmq").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_the_password_never_reaches_the_default_handler():
    stream = io.StringIO()
    configured(stream, log_format="json")
    log = logging.getLogger("fedmq")
    log.info("connecting to %s", URL)
    try:
        raise ConnectionError(f"refused by {URL}")
    except ConnectionError:
        log.exception("gave up on %r", {"url": URL})
    output = stream.getvalue()
    assert SECRET not in output
    assert output.count("orders:***@") == 3


def test_log_config_adds_to_the_default_and_can_use_fedmqs_formatter(captured):
    stream = io.StringIO()
    log_config = {
        "handlers": {
            "extra": {
                "class": "logging.StreamHandler",
                "stream": f"ext://{__name__}.CAPTURED",
                "formatter": "fedmq",
            }
        },
        "loggers": {"fedmq.orders": {"level": "DEBUG", "handlers": ["extra"]}},
    }
    configured(stream, log_format="json", log_config=log_config)
    logging.getLogger("fedmq.orders").debug("detail of %s", URL)
    [entry] = json_lines(captured)
    assert entry["message"] == "detail of amqps://orders:***@rabbit.example.com:5671/prod"
    # It propagates to the root logger's default handler too.
    assert len(json_lines(stream)) == 1


def test_a_root_in_log_config_replaces_the_default_handler(captured):
    stream = io.StringIO()
    own = {"class": "logging.StreamHandler", "stream": f"ext://{__name__}.CAPTURED"}
    log_config = {
        "formatters": {"plain": {"format": "%(levelname)s|%(message)s"}},
        "handlers": {"own": {**own, "formatter": "plain"}},
        "root": {"level": "WARNING", "handlers": ["own"]},
    }
    configured(stream, log_config=log_config)
    logging.getLogger("fedmq").info("quiet")
    logging.getLogger("fedmq").error("loud %s", URL)
    assert stream.getvalue() == ""
    assert captured.getvalue() == "ERROR|loud amqps://orders:***@rabbit.example.com:5671/prod\n"


def test_log_config_keeps_loggers_made_before_it():
    stream = io.StringIO()
    existing = logging.getLogger("fedmq.made_at_import")
    configured(stream, log_config={"loggers": {"other": {"level": "ERROR"}}})
    existing.info("still here")
    assert "still here" in stream.getvalue()


def test_an_invalid_log_config_names_the_file_and_the_key():
    data = {"log_config": {"handlers": {"h": {"class": "no.such.Handler"}}}}
    config = config_from_mapping(data, source="/etc/fedmq/orders.toml")
    with pytest.raises(ConfigurationError) as caught:
        setup_logging(config, stream=io.StringIO(), begin_twisted_logging=False)
    message = str(caught.value)
    assert message.startswith("/etc/fedmq/orders.toml: log_config is not a valid logging")
    assert "no.such" in message


# --- Twisted's events -------------------------------------------------------------


def test_twisted_events_reach_logging_under_their_namespace_and_level(caplog):
    publisher = LogPublisher(TwistedToLogging())
    twisted_log = Logger(namespace="twisted.web.server", observer=publisher)
    with caplog.at_level(logging.DEBUG):
        twisted_log.warn("port {port} is busy", port=8080)
        twisted_log.info("started")
    [warned, info] = caplog.records
    assert (warned.name, warned.levelno, warned.getMessage()) == (
        "twisted.web.server",
        logging.WARNING,
        "port 8080 is busy",
    )
    assert info.levelno == logging.INFO


def test_a_twisted_failure_becomes_the_records_traceback(caplog):
    publisher = LogPublisher(TwistedToLogging())
    twisted_log = Logger(namespace="twisted.internet.defer", observer=publisher)
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        twisted_log.failure("Unhandled error in Deferred", Failure())
    [item] = caplog.records
    assert item.levelno == logging.CRITICAL
    assert item.exc_info is not None and item.exc_info[0] is ZeroDivisionError


def test_legacy_and_nameless_twisted_events_go_to_the_twisted_logger(caplog):
    with caplog.at_level(logging.INFO):
        TwistedToLogging()({"log_format": "old style", "log_namespace": "log_legacy"})
        TwistedToLogging()({"log_format": "no namespace"})
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("twisted", "old style"),
        ("twisted", "no namespace"),
    ]


def test_a_handler_that_logs_through_twisted_again_does_not_loop(caplog):
    observer = TwistedToLogging()
    publisher = LogPublisher(observer)
    twisted_log = Logger(namespace="twisted.test", observer=publisher)

    class Echo(logging.Handler):
        """Like a broken handler under twistd: its complaint goes back to Twisted's log."""

        def emit(self, record: logging.LogRecord) -> None:
            twisted_log.error("handler failed on: {message}", message=record.getMessage())

    echo = Echo()
    logging.getLogger("twisted.test").addHandler(echo)
    try:
        with caplog.at_level(logging.INFO):
            twisted_log.info("first")
    finally:
        logging.getLogger("twisted.test").removeHandler(echo)
    assert [r.getMessage() for r in caplog.records if r.name == "twisted.test"] == ["first"]


def test_beginning_twisted_logging_sends_its_events_to_logging_once(caplog):
    publisher = LogPublisher()
    errors = io.StringIO()

    class Stdio:
        stdout, stderr = sys.stdout, sys.stderr

    class Warnings:  # LogBeginner takes over showwarning; not the real module's
        showwarning = staticmethod(warnings.showwarning)

    beginner = LogBeginner(publisher, errors, Stdio(), Warnings())
    Logger(namespace="twisted.test", observer=publisher).info("before setup")
    setup_logging(config_from_mapping({}), stream=io.StringIO(), log_beginner=beginner)
    begin_twisted(beginner)  # a second time: nothing more
    Logger(namespace="twisted.test", observer=publisher).info("after setup")
    messages = [r.getMessage() for r in caplog.records if r.name == "twisted.test"]
    assert messages == ["before setup", "after setup"]
    assert "primary log target selected twice" not in caplog.text


def test_twistd_gets_an_observer_it_accepts_as_a_new_style_one():
    observer = twistd_log_observer()
    assert ILogObserver.providedBy(observer)
    assert observer is _logging.twisted_observer
