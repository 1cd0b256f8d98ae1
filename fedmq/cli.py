"""The ``fedmq`` command: consume, publish, get, record, requeue-dead and check-config.

``fedmq consume`` runs the service tree ``twistd -n fedmq`` runs (see
:mod:`fedmq.tap`), with the same exit statuses. The other commands are one-shot
tools for operators. Every error a user can cause ends in one line on stderr
and a documented exit status (see :mod:`fedmq.exit_codes`); no tracebacks.

Messages travel as JSON lines: ``record`` and ``get`` write them and
``publish --file`` reads them. One line is one JSON object::

    {"topic": "orders.new", "exchange": "amq.topic", "headers": {"k": "v"},
     "properties": {"content_type": "application/json", "message_id": "..."},
     "body": {"order": 42}}

``body`` holds the decoded body of a JSON or text message; any other body
(and one that does not decode) is in ``body_base64`` instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import IO, Any, NoReturn, cast

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from fedmq import __version__
from fedmq._callback import load_callback
from fedmq._records import (
    UsageError,
    dump_record,
    message_from_record,
    message_record,
)
from fedmq.config import BindingConfig, Config, QueueConfig, check_runnable, load_config
from fedmq.exceptions import (
    CallbackError,
    DeclarationError,
    FedmqError,
    HaltConsumer,
    PublishError,
)
from fedmq.exit_codes import FORCED_STOP, OK, PUBLISH_FAILED, USAGE, exit_code_for
from fedmq.message import DecodeError, Message

_PUBLISH_WINDOW = 256  # messages awaiting confirms at once

# --- errors and running ----------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line instead of a usage block and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _status_for(error: BaseException) -> int:
    if isinstance(error, (UsageError, DecodeError)):
        return USAGE
    if isinstance(error, PublishError):
        return PUBLISH_FAILED
    return exit_code_for(error)


def _report(error: BaseException) -> int:
    sys.stderr.write(f"fedmq: {error}\n")
    sys.stderr.flush()
    return _status_for(error)


def _quiet_logging() -> None:
    # One-shot commands say what went wrong themselves, in one line; pika's
    # and Twisted's own account of the same failure would only repeat it.
    logging.basicConfig(level=logging.CRITICAL)


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _run_in_reactor(work: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``work(reactor)`` on the global reactor; its result is the exit status."""
    reactor = _global_reactor()
    outcome: list[Any] = []

    def go() -> None:
        d = defer.ensureDeferred(work(reactor))

        def finished(result: Any) -> None:
            outcome.append(result)
            try:
                reactor.stop()
            except ReactorNotRunning:
                pass  # a signal is stopping it already

        d.addBoth(finished)

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=threading.current_thread() is threading.main_thread())
    if not outcome:
        sys.stderr.write("fedmq: interrupted before finishing\n")
        return FORCED_STOP
    result = outcome[0]
    if isinstance(result, Failure):
        if isinstance(result.value, FedmqError):
            return _report(result.value)
        result.raiseException()
    return int(result)


def _run_services(top: Any, consumer_service: Any) -> int:
    """Run a service tree as twistd would, and return the consumer's exit status."""
    reactor = _global_reactor()
    # As twistd does: privileged start, start, then the reactor.
    top.privilegedStartService()
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run(installSignalHandlers=threading.current_thread() is threading.main_thread())
    code = consumer_service.exit_code
    return OK if code is None else int(code)


def _load(path: str | None) -> Config:
    return load_config(path)


# --- consume and record: topology from the command line --------------------


def with_overrides(
    config: Config,
    *,
    queue_name: str | None = None,
    routing_keys: Sequence[str] = (),
    exchange: str | None = None,
    app_name: str | None = None,
) -> Config:
    """Apply ``consume``'s and ``record``'s command-line topology to a config.

    With none of ``queue_name``, ``routing_keys`` and ``exchange``, the
    config's queues and bindings stay. Otherwise they are replaced by one
    queue and, when ``routing_keys`` or ``exchange`` is given, one binding:

    - the queue is ``queue_name``, durable (its settings are kept when the
      config already declares it), or without a name a server-named queue
      that is exclusive and deleted when the consumer stops;
    - the binding binds it to ``exchange`` (default ``amq.topic``) once for
      each routing key (default ``#``, everything).

    Args:
        config: the loaded configuration.
        queue_name: ``--queue-name``.
        routing_keys: every ``--routing-key``.
        exchange: ``--exchange``.
        app_name: ``--app-name``: the ``app`` client property the broker shows.

    Returns:
        The configuration to consume with.
    """
    changes: dict[str, Any] = {}
    if app_name is not None:
        changes["client_properties"] = {**config.client_properties, "app": app_name}
    if queue_name is not None or routing_keys or exchange is not None:
        if queue_name:
            existing = [queue for queue in config.queues if queue.name == queue_name]
            queue = existing[0] if existing else QueueConfig(name=queue_name)
        else:
            queue = QueueConfig(name="", durable=False, auto_delete=True, exclusive=True)
        changes["queues"] = (queue,)
        changes["bindings"] = ()
        if routing_keys or exchange is not None:
            changes["bindings"] = (
                BindingConfig(
                    queue=queue.name,
                    exchange=exchange or "amq.topic",
                    routing_keys=tuple(routing_keys) or ("#",),
                ),
            )
    return config.replace(**changes) if changes else config


def _consume_config(args: argparse.Namespace) -> Config:
    config = with_overrides(
        _load(args.config),
        queue_name=args.queue_name,
        routing_keys=args.routing_key,
        exchange=args.exchange,
        app_name=getattr(args, "app_name", None),
    )
    return config


def _cmd_consume(args: argparse.Namespace) -> int:
    from fedmq.tap import build_service, consumer_service_of

    config = _consume_config(args)
    try:
        top = build_service(config, args.callback, handle_signals=True)
    except CallbackError as error:
        raise UsageError(str(error)) from None
    return _run_services(top, consumer_service_of(top))


class _Recorder:
    """The callback of ``fedmq record``: one JSON line per message, then ack."""

    def __init__(self, output: IO[str], limit: int | None):
        self.output = output
        self.limit = limit
        self.count = 0

    def __call__(self, message: Message) -> None:
        record = message_record(message.topic, message.exchange, message.properties, message.data)
        self.output.write(dump_record(record) + "\n")
        self.output.flush()
        self.count += 1
        if self.limit is not None and self.count >= self.limit:
            raise HaltConsumer(0, f"recorded {self.count} messages")


def _cmd_record(args: argparse.Namespace) -> int:
    from fedmq._logging import setup_logging
    from fedmq.service import ConsumerService

    # One message at a time, so the file is in the order the queue delivers.
    config = _consume_config(args).replace(concurrency=1)
    output: IO[str]
    if args.file == "-":
        output = sys.stdout
    else:
        try:
            output = open(args.file, "w", encoding="utf-8")
        except OSError as error:
            raise UsageError(f"cannot write {args.file}: {error.strerror}") from None
    try:
        recorder = _Recorder(output, args.limit)
        setup_logging(config)
        service = ConsumerService(config, recorder, handle_signals=True)
        code = _run_services(service, service)
    finally:
        if output is not sys.stdout:
            output.close()
    where = "standard output" if args.file == "-" else args.file
    sys.stderr.write(f"fedmq: recorded {recorder.count} messages to {where}\n")
    return code


# --- publish ---------------------------------------------------------------


def _parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    headers = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--header {pair!r} is not of the form name=value")
        headers[key] = value
    return headers


def _messages_to_publish(args: argparse.Namespace) -> list[tuple[Message, str | None, str]]:
    """(message, exchange or None, routing key) for each message to publish."""
    headers = _parse_headers(args.header)
    if args.file is not None:
        if args.body is not None:
            raise UsageError("give a BODY or --file, not both")
        try:
            with open(args.file, encoding="utf-8") as file:
                lines = file.readlines()
        except OSError as error:
            raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise UsageError(f"{args.file} is not UTF-8 text") from None
        if args.content_type is not None:
            raise UsageError("--content-type applies to a BODY; a record has its own")
        messages = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{args.file}:{number}"
            message, exchange, topic = message_from_record(line, where)
            routing_key = args.routing_key if args.routing_key is not None else topic
            if routing_key is None:
                raise UsageError(f"{where}: the record has no topic; give --routing-key")
            if headers:
                message.headers.update(headers)
            messages.append((message, args.exchange or exchange, routing_key))
        if not messages:
            raise UsageError(f"{args.file} holds no records, so there is nothing to publish")
        return messages
    if args.body is None:
        raise UsageError("give the message body, '-' to read it from standard input, or --file")
    if args.routing_key is None:
        raise UsageError("--routing-key is required to publish a BODY")
    data = sys.stdin.buffer.read() if args.body == "-" else args.body.encode("utf-8")
    message = Message(
        data,
        args.routing_key,
        headers,
        content_type=args.content_type or "application/json",
    )
    return [(message, args.exchange, args.routing_key)]


def _cmd_publish(args: argparse.Namespace) -> int:
    from fedmq._publisher import Publisher

    config = _load(args.config)
    messages = _messages_to_publish(args)
    _quiet_logging()

    async def publish(reactor: Any) -> int:
        publisher = Publisher(config, reactor)

        def send(item: tuple[Message, str | None, str]) -> defer.Deferred[None]:
            message, exchange, routing_key = item
            return publisher.publish(
                message, exchange, routing_key, mandatory=args.mandatory, timeout=args.timeout
            )

        confirmed = 0
        try:
            # The first message alone: publishes made while the publisher is
            # still opening its channel can go out in another order.
            await send(messages[0])
            confirmed = 1
            while confirmed < len(messages):
                window = messages[confirmed : confirmed + _PUBLISH_WINDOW]
                results = await defer.DeferredList(
                    [send(item) for item in window], consumeErrors=True
                )
                for ok, result in results:
                    if not ok:
                        confirmed += sum(1 for ok, _ in results if ok)
                        cast(Failure, result).raiseException()
                confirmed += len(window)
        except PublishError:
            if len(messages) > 1:
                sys.stderr.write(f"fedmq: {confirmed} of {len(messages)} messages confirmed\n")
            raise
        finally:
            await publisher.close()
        exchanges = {
            config.publish_exchange if exchange is None else exchange for _, exchange, _ in messages
        }
        count = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
        print(f"Published {count} to {', '.join(map(repr, sorted(exchanges)))}")
        return OK

    return _run_in_reactor(publish)


# --- get -------------------------------------------------------------------


async def _refusable(d: defer.Deferred[Any], what: str) -> Any:
    """Await a channel operation; a refusal by the broker becomes a DeclarationError."""
    try:
        return await d
    except FedmqError:
        raise
    except Exception as error:
        code = getattr(error, "reply_code", None)
        if code is None:
            raise
        text = getattr(error, "reply_text", "")
        raise DeclarationError(f"The broker refused {what}: {code} {text}", code, text) from None


def _cmd_get(args: argparse.Namespace) -> int:
    from fedmq._amqp import AMQPConnection

    config = _load(args.config)
    _quiet_logging()

    async def get(reactor: Any) -> int:
        connection = await AMQPConnection.connect(config, reactor)
        got = 0
        try:
            channel = await connection.channel()
            what = f"getting from queue {args.queue!r}"
            # A passive declare first: a missing queue is a clear 404, not a closed channel.
            await _refusable(channel.queue_counts(args.queue), what)
            tags = []
            while got < args.count:
                delivery = await _refusable(channel.get(args.queue), what)
                if delivery is None:
                    break
                tag, redelivered, exchange, routing_key, properties, data, _left = delivery
                record = message_record(
                    routing_key,
                    exchange,
                    properties,
                    data,
                    queue=args.queue,
                    redelivered=redelivered,
                )
                print(dump_record(record), flush=True)
                got += 1
                if args.requeue:
                    tags.append(tag)  # returned at the end, or the next get gets it again
                else:
                    channel.ack(tag, False)
            for tag in tags:
                channel.nack(tag, requeue=True)
            await channel.close()
        finally:
            await connection.close()
        if not got:
            sys.stderr.write(f"fedmq: queue {args.queue!r} is empty\n")
        return OK

    return _run_in_reactor(get)


# --- requeue-dead ----------------------------------------------------------


def _cmd_requeue_dead(args: argparse.Namespace) -> int:
    from fedmq._requeue import dead_queue_name, requeue_dead

    config = _load(args.config)
    _quiet_logging()

    async def move(reactor: Any) -> int:
        moved = await requeue_dead(config, reactor, args.queue, args.limit)
        count = f"{moved} message{'s' if moved != 1 else ''}"
        print(f"Moved {count} from {dead_queue_name(args.queue)!r} to {args.queue!r}")
        return OK

    return _run_in_reactor(move)


# --- check-config ----------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    check_runnable(config)
    if config.callback is not None:
        try:
            load_callback(config.callback, config.consumer_config)
        except CallbackError as error:
            raise UsageError(f"{config.source}: {error}") from None
    callback = config.callback or "none"
    queues, bindings = len(config.queues), len(config.bindings)
    print(
        f"{config.source}: valid ({queues} queue{'s' * (queues != 1)}, "
        f"{bindings} binding{'s' * (bindings != 1)}, callback {callback})"
    )
    return OK


# --- the parser ------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return value


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="the configuration file (default: $FEDMQ_CONFIG, else /etc/fedmq/config.toml)",
    )


def _add_topology(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "topology", "any of these replaces the configuration's queues and bindings"
    )
    group.add_argument(
        "--queue-name",
        metavar="Q",
        help="consume queue Q (durable); without it, a server-named queue deleted on exit",
    )
    group.add_argument(
        "--routing-key",
        metavar="K",
        action="append",
        default=[],
        help="bind the queue with routing key K; repeat for more (default: '#')",
    )
    group.add_argument(
        "--exchange", metavar="E", help="bind the queue to exchange E (default: amq.topic)"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmq`` argument parser, with a subparser per command."""
    parser = _Parser(
        prog="fedmq",
        description="Consume from and publish to RabbitMQ with fedmq.",
        epilog="Run 'fedmq COMMAND --help' for a command's options. The exit status is "
        "0 on success and 2 for a usage or configuration error; see fedmq(1).",
    )
    parser.add_argument("--version", action="version", version=f"fedmq {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, summary: str, run: Callable[[argparse.Namespace], int]) -> Any:
        sub = commands.add_parser(name, help=summary, description=summary)
        sub.set_defaults(run=run)
        return sub

    consume = command(
        "consume",
        "Consume messages with a callback until a signal or until the callback halts.",
        _cmd_consume,
    )
    _add_config(consume)
    consume.add_argument(
        "--callback",
        metavar="MODULE:OBJECT",
        help="the callback, as package.module:object (default: the configuration's)",
    )
    consume.add_argument(
        "--app-name", metavar="N", help="the name the broker shows for this connection"
    )
    _add_topology(consume)

    publish = command(
        "publish",
        "Publish one message, or each record of a JSON-lines file, and wait for confirms.",
        _cmd_publish,
    )
    _add_config(publish)
    publish.add_argument(
        "body",
        nargs="?",
        metavar="BODY",
        help="the message body, or '-' to read it from standard input",
    )
    publish.add_argument(
        "--file", "-f", metavar="F", help="publish each record of F, a JSON-lines file"
    )
    publish.add_argument(
        "--exchange",
        metavar="E",
        help="the exchange (default: the record's, else the configuration's publish_exchange)",
    )
    publish.add_argument(
        "--routing-key", metavar="K", help="the routing key (default: each record's topic)"
    )
    publish.add_argument(
        "--content-type",
        metavar="T",
        help="the content type of BODY (default: application/json)",
    )
    publish.add_argument(
        "--header",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="add a header (a string); repeat for more",
    )
    publish.add_argument(
        "--mandatory",
        action="store_true",
        help="fail when the broker cannot route a message to any queue",
    )
    publish.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=30.0,
        help="how long to wait for each confirm (default: 30)",
    )

    get = command(
        "get",
        "Take messages from a queue (basic.get), print them as JSON lines, and ack them.",
        _cmd_get,
    )
    _add_config(get)
    get.add_argument("--queue", "-q", metavar="Q", required=True, help="the queue")
    get.add_argument(
        "--count",
        "-n",
        metavar="N",
        type=_positive,
        default=1,
        help="take up to N messages (default: 1)",
    )
    get.add_argument(
        "--requeue", action="store_true", help="put the messages back instead of acking them"
    )

    record = command(
        "record",
        "Write the messages consumed to FILE as JSON lines that 'fedmq publish --file' replays.",
        _cmd_record,
    )
    record.add_argument("file", metavar="FILE", help="the file to write ('-': standard output)")
    _add_config(record)
    record.add_argument(
        "--limit",
        "-n",
        metavar="N",
        type=_positive,
        help="stop after N messages (default: at SIGINT or SIGTERM)",
    )
    _add_topology(record)

    requeue_dead = command(
        "requeue-dead",
        "Move the messages parked in QUEUE.dead back to QUEUE, with confirms.",
        _cmd_requeue_dead,
    )
    requeue_dead.add_argument("queue", metavar="QUEUE", help="the queue to move them back to")
    _add_config(requeue_dead)
    requeue_dead.add_argument(
        "--limit",
        "-n",
        metavar="N",
        type=_positive,
        help="move at most N messages (default: every parked message)",
    )

    check = command(
        "check-config",
        "Check a configuration file, and that its callback loads.",
        _cmd_check_config,
    )
    check.add_argument("file", metavar="FILE", help="the configuration file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fedmq`` command.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except FedmqError as error:
        return _report(error)


__all__ = [
    "PUBLISH_FAILED",
    "UsageError",
    "build_parser",
    "dump_record",
    "main",
    "message_from_record",
    "message_record",
    "with_overrides",
]
