"""``python -m bench``: the command line, the broker and the rounds.

Exit codes: 0 when every contender ran in every round and every target that
could be checked passed; 1 when a contender failed or a target was missed;
2 for a usage error or a broker that would not start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pika.exceptions

from bench import fill, report
from bench.child import STOP_TIMEOUT
from bench.contenders import (
    BY_NAME,
    CONTENDERS,
    FEDORA_MESSAGING,
    FEDORA_MESSAGING_SCHEMA,
    PREFETCH,
    PUBLISH_FEDORA_MESSAGING,
    Contender,
)
from fedmq.testing import RabbitNode

#: The repository root: the child runs as ``python -m bench.child`` from here.
ROOT = Path(__file__).resolve().parent.parent

#: A contender gets this long to start, plus a second per this many messages.
DEADLINE_BASE = 30.0
SLOWEST_RATE = 500
#: Seconds a child may take to import and start before its own deadline runs.
CHILD_STARTUP = 30.0
#: Seconds to wait for the queue to hold the backlog after publishing it.
FILL_TIMEOUT = 120.0
#: Seconds to wait for the broker to requeue what a dead consumer left unacked.
SETTLE_TIMEOUT = 10.0

EXIT_OK, EXIT_MISSED, EXIT_USAGE = 0, 1, 2


#: The contenders that are fedora-messaging itself.
FEDORA_MESSAGING_CONTENDERS = (FEDORA_MESSAGING, FEDORA_MESSAGING_SCHEMA, PUBLISH_FEDORA_MESSAGING)


def _say(text: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(text, file=sys.stderr, flush=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark fedmq's consumer and publisher against raw pika and "
        "fedora-messaging "
        "on a throwaway RabbitMQ node.",
    )
    parser.add_argument(
        "--messages",
        type=int,
        default=50_000,
        metavar="N",
        help="messages per contender and round (default: 50,000)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        metavar="R",
        help="rounds per contender; the median is reported (default: 3)",
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these contenders (see --list)",
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=100_000,
        metavar="N",
        help="messages waiting in the queue for rss-backlog (default: 100,000)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    args = parser.parse_args(argv)
    for name in ("messages", "rounds", "backlog"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.only is not None:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in BY_NAME]
        if unknown or not names:
            parser.error(
                f"--only names no known contender: {', '.join(unknown) or repr(args.only)} "
                f"(known: {', '.join(BY_NAME)})"
            )
        args.only = names
    return args


def _selected(args: argparse.Namespace) -> list[Contender]:
    if args.only is None:
        return list(CONTENDERS)
    # In the table's order, whatever the order given.
    return [contender for contender in CONTENDERS if contender.name in args.only]


def _failure(contender: Contender, messages: int, round_number: int, why: str) -> dict[str, Any]:
    return {
        "contender": contender.name,
        "round": round_number,
        "ok": False,
        "messages": messages,
        "error": why,
    }


def _write_fedora_messaging_config(directory: Path, url: str) -> Path:
    """fedora-messaging's config file; it is read from ``$FEDORA_MESSAGING_CONF``."""
    path = directory / "fedora-messaging.toml"
    # A JSON string is a valid TOML basic string for these ASCII values.
    path.write_text(
        f"amqp_url = {json.dumps(url)}\n"
        "\n[qos]\n"
        f"prefetch_count = {PREFETCH}\n"
        "prefetch_size = 0\n"
        "\n[client_properties]\n"
        'app = "fedmq benchmark"\n'
    )
    return path


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _child_result(
    contender: Contender,
    messages: int,
    round_number: int,
    completed: subprocess.CompletedProcess[str],
) -> dict[str, Any]:
    for line in reversed(completed.stdout.splitlines()):
        with contextlib.suppress(ValueError):
            result = json.loads(line)
            if isinstance(result, dict) and result.get("contender") == contender.name:
                result["round"] = round_number
                if not result["ok"] and completed.stderr.strip():
                    result["stderr"] = _tail(completed.stderr)
                return result
    return _failure(
        contender,
        messages,
        round_number,
        f"the child printed no result (exit status {completed.returncode}); its stderr ends: "
        f"{_tail(completed.stderr) or '(empty)'}",
    )


def _check_queue(node: RabbitNode, queue: str, expected_ready: int) -> str | None:
    """None if the broker holds ``expected_ready`` ready messages and none unacked."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        try:
            ready, unacked = node.queue_counts(queue)
        except (LookupError, RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"could not count the queue afterwards: {exc}"
        if unacked == 0 and ready == expected_ready:
            return None
        if time.monotonic() > deadline:
            return (
                f"afterwards the broker held {ready:,} ready and {unacked:,} unacked "
                f"messages; expected {expected_ready:,} ready and none unacked"
            )
        time.sleep(0.5)


def run_one(
    node: RabbitNode,
    contender: Contender,
    round_number: int,
    args: argparse.Namespace,
    env: dict[str, str],
) -> dict[str, Any]:
    """Fill a fresh queue, run ``contender`` on it in a child, check the queue, delete it."""
    in_queue, messages = contender.sizes(args.messages, args.backlog)
    queue = f"bench.{contender.name}.round{round_number}"
    try:
        seconds = fill.fill(node.url, queue, in_queue, FILL_TIMEOUT, contender.schema)
    except (TimeoutError, pika.exceptions.AMQPError, OSError) as exc:
        return _failure(contender, messages, round_number, f"filling the queue failed: {exc!r}")
    _say(f"  filled {queue} with {in_queue:,} messages in {seconds:.1f} s")
    deadline = DEADLINE_BASE + messages / SLOWEST_RATE
    command = [
        sys.executable,
        "-m",
        "bench.publish_child" if contender.publishes else "bench.child",
        contender.name,
        "--url",
        node.url,
        "--queue",
        queue,
        "--messages",
        str(messages),
        "--deadline",
        str(deadline),
    ]
    try:
        try:
            completed = subprocess.run(
                command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=deadline + STOP_TIMEOUT + CHILD_STARTUP,
            )
        except subprocess.TimeoutExpired:
            return _failure(
                contender,
                messages,
                round_number,
                f"the child was killed after {deadline + STOP_TIMEOUT + CHILD_STARTUP:g} s",
            )
        result = _child_result(contender, messages, round_number, completed)
        if result["ok"]:
            # A publisher leaves its messages in the queue; a consumer, what it did not ack.
            expected = messages if contender.publishes else in_queue - int(result.get("acked", 0))
            problem = _check_queue(node, queue, expected)
            if problem is not None:
                result["ok"] = False
                result["error"] = problem
        return result
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            fill.delete(node.url, queue)


def _describe(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"FAILED: {result.get('error')}"
    return (
        f"{result['rate']:,.0f} msg/s, {result['seconds']:.2f} s, "
        f"peak RSS {result['peak_rss_mb']:.1f} MB"
    )


def _broker_version(node: RabbitNode) -> str | None:
    try:
        return node.ctl("version", timeout=30).strip() or None
    except (RuntimeError, subprocess.TimeoutExpired):
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.list:
        for contender in CONTENDERS:
            print(f"{contender.name:26} {contender.summary}")
        return EXIT_OK
    selected = _selected(args)
    summaries: dict[str, report.Summary] = {}
    for contender in selected:
        in_queue, messages = contender.sizes(args.messages, args.backlog)
        summaries[contender.name] = report.Summary(contender.name, messages, in_queue)
    fedora_missing = importlib.util.find_spec("fedora_messaging") is None
    started = datetime.datetime.now(tz=datetime.timezone.utc)
    broker_version = None

    with tempfile.TemporaryDirectory(prefix="fedmq-bench-") as scratch:
        directory = Path(scratch)
        _say(f"Starting a RabbitMQ node in {directory} ...")
        node = RabbitNode(directory / "rabbitmq")
        try:
            node.start()
        except RuntimeError as exc:
            node.cleanup()
            _say(f"The benchmark's RabbitMQ node did not start: {exc}")
            return EXIT_USAGE
        with node:  # stops the node however the rounds end
            broker_version = _broker_version(node)
            env = dict(os.environ)
            env["FEDORA_MESSAGING_CONF"] = str(_write_fedora_messaging_config(directory, node.url))
            for round_number in range(1, args.rounds + 1):
                for contender in selected:
                    summary = summaries[contender.name]
                    _say(f"[round {round_number}/{args.rounds}] {contender.name}")
                    if contender.name in FEDORA_MESSAGING_CONTENDERS and fedora_missing:
                        result = _failure(
                            contender,
                            summary.messages,
                            round_number,
                            "fedora-messaging is not installed: pip install -e '.[bench]'",
                        )
                    else:
                        result = run_one(node, contender, round_number, args, env)
                    summary.rounds.append(result)
                    _say(f"  {_describe(result)}")
            _say("Stopping the RabbitMQ node ...")

    outcomes = report.evaluate(summaries)
    print(
        f"fedmq benchmark, {started:%Y-%m-%d %H:%M} UTC: "
        f"--messages {args.messages:,}, --rounds {args.rounds}, median of the rounds\n"
    )
    print(report.table(summaries))
    print()
    for note in report.notes(summaries):
        print(f"- {note}")
    for name, summary in summaries.items():
        for error in summary.errors:
            print(f"- {name} failed in {error}")
    print("\nTargets:")
    print(report.targets_text(outcomes))

    if args.json:
        document = {
            "date": started.isoformat(timespec="seconds"),
            "arguments": {
                "messages": args.messages,
                "rounds": args.rounds,
                "backlog": args.backlog,
                "only": args.only,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "rabbitmq": broker_version,
            },
            "contenders": report.summaries_json(summaries),
            "targets": outcomes,
        }
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")
        _say(f"Wrote {args.json}")

    everything_ran = all(
        len(summary.passed_rounds) == len(summary.rounds) for summary in summaries.values()
    )
    targets_met = all(outcome["status"] != "FAIL" for outcome in outcomes)
    return EXIT_OK if everything_ran and targets_met else EXIT_MISSED
