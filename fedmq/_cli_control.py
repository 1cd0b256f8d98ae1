"""``fedmq pause``, ``fedmq resume`` and ``fedmq status``: a running consumer's control socket.

The command sends one request line to the consumer's control socket (see
:mod:`fedmq._control_socket`) and prints the reply: the consumer's state and
each queue's. It needs no reactor: one blocking exchange, bounded by
``--timeout``. The socket is ``--socket PATH``, else the configuration's
``[control] socket``.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

from fedmq._cli_run import load, quiet_logging
from fedmq._control import COMMANDS, EXIT_STATUS, MAX_REQUEST, Request
from fedmq._records import UsageError
from fedmq.exit_codes import ACCESS_REFUSED, CONNECTION_FAILED

_SUMMARIES = {
    "pause": "Pause a running consumer: stop taking new messages from QUEUE, or from every queue.",
    "resume": "Resume a paused consumer: take messages from QUEUE, or every queue, again.",
    "status": "Show a running consumer's state, and whether each queue is consuming or held.",
}


class ControlUnreachable(Exception):
    """No consumer answers on the control socket; exit status 7 (or 4: not allowed)."""

    def __init__(self, message: str, exit_code: int = CONNECTION_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_control_commands(command: Any, add_config: Any) -> None:
    """Add ``pause``, ``resume`` and ``status`` with ``command(name, summary, run)``."""
    for name in COMMANDS:
        sub = command(name, _SUMMARIES[name], run_control)
        sub.set_defaults(control_command=name)
        if name != "status":
            sub.add_argument(
                "queue", metavar="QUEUE", nargs="?", help="the queue (default: every queue)"
            )
        add_config(sub)
        sub.add_argument(
            "--socket",
            metavar="PATH",
            help="the consumer's control socket (default: the configuration's [control] socket)",
        )
        sub.add_argument(
            "--timeout",
            metavar="SECONDS",
            type=float,
            default=30.0,
            help="how long to wait for the consumer's answer (default: 30)",
        )
        sub.add_argument(
            "--json", action="store_true", help="print the consumer's answer as it came, in JSON"
        )


def socket_path(args: argparse.Namespace) -> str:
    """The control socket the command talks to: ``--socket``, else the configuration's."""
    if args.socket:
        return str(args.socket)
    config = load(args)
    if not config.control.socket:
        raise UsageError(
            f"{config.source} turns no control socket on, so there is no running consumer "
            "to talk to: give the socket with --socket PATH (under systemd, "
            "/run/fedmq-INSTANCE/control.sock), or set [control] socket in the consumer's "
            "configuration and restart it"
        )
    return config.control.socket


def ask(path: str, request: Request, timeout: float) -> dict[str, Any]:
    """Send ``request`` to the control socket at ``path``; return the reply's JSON.

    Raises:
        ControlUnreachable: nothing listens there, it may not be used, or it
            did not answer within ``timeout`` seconds.

    """
    line = json.dumps({"command": request.command, "queue": request.queue}).encode() + b"\n"
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    try:
        try:
            client.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlUnreachable(
                f"no consumer listens on the control socket {path}: it is not running, or "
                "runs without a control socket (set [control] socket in its configuration)"
            ) from None
        except PermissionError:
            raise ControlUnreachable(
                f"not allowed to use the control socket {path}: it is for the consumer's "
                "user and root alone",
                ACCESS_REFUSED,
            ) from None
        client.sendall(line)
        answer = _read_line(client)
    except TimeoutError:
        raise ControlUnreachable(
            f"the consumer did not answer on {path} within {timeout:g} s"
        ) from None
    except OSError as error:
        raise ControlUnreachable(
            f"cannot talk to the control socket {path}: {error.strerror or error}"
        ) from None
    finally:
        client.close()
    try:
        reply: dict[str, Any] = json.loads(answer)
    except ValueError:
        raise ControlUnreachable(f"{path} answered something that is not fedmq's") from None
    return reply


def _read_line(client: socket.socket) -> bytes:
    received = b""
    while b"\n" not in received and len(received) < 64 * MAX_REQUEST:
        chunk = client.recv(4096)
        if not chunk:
            break
        received += chunk
    return received.split(b"\n", 1)[0]


def run_control(args: argparse.Namespace) -> int:
    """Run ``fedmq pause``, ``resume`` or ``status``; return the exit status."""
    if not args.timeout > 0:
        raise UsageError("--timeout must be more than 0 seconds")
    quiet_logging()
    path = socket_path(args)
    try:
        reply = ask(path, Request(args.control_command, getattr(args, "queue", None)), args.timeout)
    except ControlUnreachable as error:
        sys.stderr.write(f"fedmq: {error}\n")
        return error.exit_code
    if args.json:
        sys.stdout.write(json.dumps(reply, sort_keys=True) + "\n")
    if not reply.get("ok"):
        if not args.json:
            sys.stderr.write(f"fedmq: {reply.get('error', 'the consumer refused')}\n")
        return EXIT_STATUS.get(str(reply.get("kind")), EXIT_STATUS["failed"])
    if not args.json:
        sys.stdout.write(f"consumer: {reply.get('state')}\n")
        for queue, state in sorted(dict(reply.get("queues", {})).items()):
            reasons = ", ".join(state.get("reasons", ())) or "held"
            shown = "consuming" if state.get("consuming") else f"held ({reasons})"
            sys.stdout.write(f"{queue}: {shown}\n")
    return EXIT_STATUS["ok"]


__all__ = ["ControlUnreachable", "add_control_commands", "ask", "run_control"]
