"""``fedmq record`` and ``fedmq publish``: messages to a file, and from one.

Both speak fedora-messaging's file format by default and fedmq's own with
``--format fedmq`` (see :mod:`fedmq._records`); ``publish`` tells them
apart by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple, cast

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._cli_run import load, quiet_logging, run_in_reactor, run_services
from fedmq._records import (
    FEDMQ_FORMAT,
    FEDORA_FORMAT,
    UsageError,
    detect_format,
    dump_record,
    fedora_record,
    message_from_fedmq_record,
    message_from_fedora_record,
    message_record,
    parse_lines,
)
from fedmq.config import Config
from fedmq.exceptions import ConnectionFailed, HaltConsumer, PublishError
from fedmq.exit_codes import OK, USAGE
from fedmq.message import Message

_PUBLISH_WINDOW = 256  # messages awaiting confirms at once

FORMATS = (FEDORA_FORMAT, FEDMQ_FORMAT)


# --- record ----------------------------------------------------------------


class _Recorder:
    """The callback of ``fedmq record``: one line per message, then ack."""

    def __init__(self, output: IO[str], limit: int | None, file_format: str) -> None:
        self.output = output
        self.limit = limit
        self.file_format = file_format
        self.count = 0
        self.error: str | None = None

    def __call__(self, message: Message) -> None:
        if self.file_format == FEDORA_FORMAT:
            try:
                line = fedora_record(message)
            except UsageError as error:
                # Back to the queue, unrecorded: nothing is lost, and the
                # user can record it in the other format.
                self.error = str(error)
                raise HaltConsumer(USAGE, self.error, requeue=True) from None
        else:
            record = message_record(
                message.topic, message.exchange, message.properties, message.data
            )
            line = dump_record(record)
        self.output.write(line + "\n")
        self.output.flush()
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            raise HaltConsumer(0, f"recorded {self.count} messages")


def run_record(args: argparse.Namespace, config: Config) -> int:
    """``fedmq record``, consuming with ``config`` (the topology options applied)."""
    from fedmq._logging import setup_logging
    from fedmq.service import ConsumerService

    # One message at a time, so the file is in the order the queue delivers.
    config = config.replace(concurrency=1)
    with contextlib.ExitStack() as closing:
        output: IO[str]
        if args.file == "-":
            output = sys.stdout
        else:
            try:
                output = closing.enter_context(Path(args.file).open("w", encoding="utf-8"))
            except OSError as error:
                raise UsageError(f"cannot write {args.file}: {error.strerror}") from None
        recorder = _Recorder(output, args.limit, args.format)
        setup_logging(config)
        service = ConsumerService(config, recorder, handle_signals=True)
        code = run_services(service, service)
    where = "standard output" if args.file == "-" else args.file
    if recorder.error is not None:
        sys.stderr.write(f"fedmq: {recorder.error}\n")
    sys.stderr.write(f"fedmq: recorded {recorder.count} messages to {where}\n")
    return code


def add_record_options(record: argparse.ArgumentParser) -> None:
    """``record``'s own options (the topology options are added by the caller)."""
    record.add_argument("file", metavar="FILE", help="the file to write ('-': standard output)")
    record.add_argument(
        "--format",
        choices=FORMATS,
        default=FEDORA_FORMAT,
        help="fedora-messaging's file format (default), or fedmq's, which keeps every "
        "property and bodies of any type",
    )


# --- publish ---------------------------------------------------------------


class _Outgoing(NamedTuple):
    """One message to publish; None lets the publisher choose (see Publisher.publish)."""

    message: Message
    exchange: str | None
    routing_key: str | None


def _parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {pair!r} is not of the form name=value")
        headers[key] = value
    return headers


def _read_lines(name: str) -> list[str]:
    if name == "-":
        return sys.stdin.readlines()
    try:
        with Path(name).open(encoding="utf-8") as file:
            return file.readlines()
    except OSError as error:
        hint = " (a message body goes in --body)" if error.errno == errno.ENOENT else ""
        raise UsageError(f"cannot read {name}: {error.strerror}{hint}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name} is not UTF-8 text") from None


def _file_messages(args: argparse.Namespace, name: str) -> list[_Outgoing]:
    if args.content_type is not None:
        raise UsageError("--content-type applies to --body; a file's messages have their own")
    headers = _parse_headers(args.header)
    label = "standard input" if name == "-" else name
    records = parse_lines(_read_lines(name), label)
    if not records:
        raise UsageError(f"{label} holds no records, so there is nothing to publish")
    file_format = detect_format(records) if args.format == "auto" else args.format
    outgoing = []
    for where, record in records:
        if file_format == FEDORA_FORMAT:
            message = message_from_fedora_record(record, where)
            # As fedora-messaging's publish: the given exchange, else the
            # configuration's; the topic, with the configuration's prefix.
            exchange, routing_key = args.exchange, args.routing_key
        else:
            message, recorded_exchange, topic = message_from_fedmq_record(record, where)
            routing_key = args.routing_key if args.routing_key is not None else topic
            if routing_key is None:
                raise UsageError(f"{where}: the record has no topic; give --routing-key")
            exchange = args.exchange if args.exchange is not None else recorded_exchange
        message.headers.update(headers)
        outgoing.append(_Outgoing(message, exchange, routing_key))
    return outgoing


def _messages_to_publish(args: argparse.Namespace) -> list[_Outgoing]:
    if args.file is not None and args.file_option is not None:
        raise UsageError("give FILE or --file, not both")
    name = args.file if args.file is not None else args.file_option
    if name is not None:
        if args.body is not None:
            raise UsageError("give --body or a FILE, not both")
        return _file_messages(args, name)
    if args.body is None:
        raise UsageError("give a FILE of messages ('-': standard input), or --body")
    if args.routing_key is None:
        raise UsageError("--routing-key is required with --body")
    data = sys.stdin.buffer.read() if args.body == "-" else args.body.encode("utf-8")
    message = Message(
        data,
        args.routing_key,
        _parse_headers(args.header),
        content_type=args.content_type or "application/json",
    )
    return [_Outgoing(message, args.exchange, args.routing_key)]


def run_publish(args: argparse.Namespace) -> int:
    """``fedmq publish``."""
    from fedmq.publisher import Publisher

    config = load(args)
    messages = _messages_to_publish(args)
    quiet_logging()

    async def publish(reactor: Any) -> int:
        publisher = Publisher(config, reactor=reactor)

        def send(item: _Outgoing) -> defer.Deferred[None]:
            return publisher.publish_deferred(
                item.message,
                item.exchange,
                item.routing_key,
                mandatory=args.mandatory,
                timeout=args.timeout,
            )

        confirmed = 0
        try:
            # A window at a time (the publisher keeps their order): the first
            # failure stops the command, with the count confirmed before it.
            while confirmed < len(messages):
                window = messages[confirmed : confirmed + _PUBLISH_WINDOW]
                results = await defer.DeferredList(
                    [send(item) for item in window], consumeErrors=True
                )
                for ok, result in results:
                    if not ok:
                        confirmed += sum(1 for ok, _ in results if ok)
                        cast("Failure", result).raiseException()
                confirmed += len(window)
        except PublishError as error:
            if isinstance(error.__cause__, ConnectionFailed):
                # No broker took the connection: that, not the messages, is the news.
                raise error.__cause__ from None
            if len(messages) > 1:
                sys.stderr.write(f"fedmq: {confirmed} of {len(messages)} messages confirmed\n")
            raise
        finally:
            await publisher.close_deferred(args.timeout)
        exchanges = {
            config.publish_exchange if item.exchange is None else item.exchange for item in messages
        }
        count = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
        print(f"Published {count} to {', '.join(map(repr, sorted(exchanges)))}")
        return OK

    return run_in_reactor(publish)


def add_publish_options(publish: argparse.ArgumentParser) -> None:
    """``publish``'s options, but ``--config``."""
    publish.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help="publish each message of FILE, one JSON object a line ('-': standard input)",
    )
    publish.add_argument(
        "--file", "-f", dest="file_option", metavar="FILE", help="the same as FILE"
    )
    publish.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help="FILE's format: fedora-messaging's or fedmq's (default: told by its keys)",
    )
    publish.add_argument(
        "--body",
        metavar="BODY",
        help="publish one message with this body instead ('-': read it from standard input)",
    )
    publish.add_argument(
        "--exchange",
        metavar="E",
        help="the exchange (default: in fedmq's format the record's, else the configuration's "
        "publish_exchange)",
    )
    publish.add_argument(
        "--routing-key",
        metavar="K",
        help="the routing key (default: each message's topic; required with --body)",
    )
    publish.add_argument(
        "--content-type",
        metavar="T",
        help="the content type of --body (default: application/json)",
    )
    publish.add_argument(
        "--header",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="add a header (a string) to every message; repeat for more",
    )
    publish.add_argument(
        "--mandatory",
        action="store_true",
        help="fail when the broker cannot route a message to any queue",
    )
    publish.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds,
        default=30.0,
        help="how long to wait for each confirm (default: 30)",
    )


def seconds(text: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value
