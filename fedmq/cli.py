"""The ``fedmq`` command: consume, publish, get, record, and the operators' tools.

The tools are requeue-dead, pause, resume, status and check-config.

``fedmq consume`` runs the service tree ``twistd -n fedmq`` runs (see
:mod:`fedmq.tap`), with the same exit statuses. The other commands are one-shot
tools for operators. Every error a user can cause ends in one line on stderr
and a documented exit status (see :mod:`fedmq.exit_codes`); no tracebacks.

``consume`` and ``record`` take fedora-messaging's options with their
meaning (see :mod:`fedmq._cli_topology`); ``record`` writes, and ``publish``
reads, fedora-messaging's file format or fedmq's own (see
:mod:`fedmq._records`). ``pause``, ``resume`` and ``status`` talk to a running
consumer's control socket. The jobs live in private modules: running a command
(:mod:`fedmq._cli_run`), the topology options, the message files
(:mod:`fedmq._cli_files`) and the control socket (:mod:`fedmq._cli_control`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from twisted.internet import defer

from fedmq import __version__
from fedmq._callback import load_callback, load_callback_file
from fedmq._cli_control import add_control_commands
from fedmq._cli_files import add_publish_options, add_record_options, run_publish, run_record
from fedmq._cli_run import load, quiet_logging, report, run_in_reactor, run_services
from fedmq._cli_topology import (
    add_topology_options,
    topology_from_options,
    with_fedora_overrides,
    with_overrides,
)
from fedmq._records import (
    UsageError,
    dump_record,
    message_from_record,
    message_record,
)
from fedmq.config import Config, check_runnable, load_config
from fedmq.exceptions import CallbackError, DeclarationError, FedmqError
from fedmq.exit_codes import OK, PUBLISH_FAILED, USAGE

# --- errors ----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line instead of a usage block and a line."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


# --- consume and record ----------------------------------------------------


def _consume_config(args: argparse.Namespace) -> Config:
    return topology_from_options(load(args), args)


def _cmd_consume(args: argparse.Namespace) -> int:
    from fedmq.tap import build_service, consumer_service_of

    config = _consume_config(args)
    try:
        callback: Any = args.callback
        if args.callback_file is not None:
            # As in fedora-messaging, the file wins over --callback and the configuration.
            callback = load_callback_file(args.callback_file)
        top = build_service(config, callback, handle_signals=True)
    except CallbackError as error:
        raise UsageError(str(error)) from None
    return run_services(top, consumer_service_of(top))


def _cmd_record(args: argparse.Namespace) -> int:
    return run_record(args, _consume_config(args))


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
    from fedmq._connector import connect_any

    config = load(args)
    quiet_logging()

    async def get(reactor: Any) -> int:
        connection = await connect_any(config, reactor)
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

    return run_in_reactor(get)


# --- requeue-dead ----------------------------------------------------------


def _cmd_requeue_dead(args: argparse.Namespace) -> int:
    from fedmq._policy import dead_queue_name
    from fedmq._requeue import requeue_dead

    config = load(args)
    quiet_logging()

    async def move(reactor: Any) -> int:
        moved = await requeue_dead(config, reactor, args.queue, args.limit)
        count = f"{moved} message{'s' if moved != 1 else ''}"
        print(f"Moved {count} from {dead_queue_name(args.queue)!r} to {args.queue!r}")
        return OK

    return run_in_reactor(move)


# --- check-config ----------------------------------------------------------


def _cmd_check_config(args: argparse.Namespace) -> int:
    if args.global_config is not None:
        raise UsageError("check-config takes the file to check as FILE, not --config")
    config = load_config(args.file)
    check_runnable(config)
    if config.callback is not None:
        try:
            load_callback(config.callback, config.consumer_config, config=config)
        except CallbackError as error:
            raise UsageError(f"{config.source}: {error}") from None
    if config.health_check is not None:
        from fedmq._health import load_health_check

        load_health_check(config.health_check, config.source)
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


_CONFIG_HELP = "the configuration file (default: $FEDMQ_CONFIG, else /etc/fedmq/config.toml)"


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "--conf", "-c", metavar="FILE", help=_CONFIG_HELP)


def _add_app_name(parser: argparse.ArgumentParser, default: str | None) -> None:
    parser.add_argument(
        "--app-name",
        metavar="N",
        default=default,
        help="the name the broker shows for this connection (the 'app' client property"
        + (f"; default: {default})" if default else ")"),
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
    parser.add_argument(
        "--config",
        "--conf",
        "-c",
        dest="global_config",
        metavar="FILE",
        help=f"{_CONFIG_HELP}; also accepted after the command",
    )
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
        "--callback-file",
        metavar="PATH:OBJECT",
        help="the callback, as object OBJECT of the Python file PATH, which is run to "
        "find it; overrides --callback",
    )
    _add_app_name(consume, None)
    add_topology_options(consume)

    publish = command(
        "publish",
        "Publish each message of a file, or one message, and wait for confirms.",
        run_publish,
    )
    _add_config(publish)
    add_publish_options(publish)

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
        "Write the messages consumed to FILE, one JSON object a line, for 'fedmq publish'.",
        _cmd_record,
    )
    add_record_options(record)
    _add_config(record)
    record.add_argument(
        "--limit",
        "-n",
        metavar="N",
        type=_positive,
        help="stop after N messages (default: at SIGINT or SIGTERM)",
    )
    _add_app_name(record, "recorder")
    add_topology_options(record)

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

    add_control_commands(command, _add_config)

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
        return report(error)


__all__ = [
    "PUBLISH_FAILED",
    "UsageError",
    "build_parser",
    "dump_record",
    "main",
    "message_from_record",
    "message_record",
    "with_fedora_overrides",
    "with_overrides",
]
