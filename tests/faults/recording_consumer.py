"""A consumer for fault tests: it records every message id it processes, durably.

Usage: recording_consumer.py CONFIG RECORD EVENTS [--nack PREFIX] [--slow PREFIX SECONDS]
[--retry-first] [--retry PREFIX] [--async]

CONFIG is a JSON file of config keys (what ``config.toml`` would hold).
The callback appends each message id, one a line, to RECORD and fsyncs it
before returning, so an id in RECORD was processed to completion before
fedmq acked it. Ids starting with ``--nack``'s prefix are always refused
with :class:`fedmq.Nack` (a poison message) and never recorded; ids
starting with ``--slow``'s prefix take that many seconds first. With
``--retry-first`` every message's first run raises :class:`fedmq.Retry`, so
each is recorded on its second run, after a trip through a retry queue;
``--retry``'s prefix does the same for the ids starting with it only. With
``--async`` the callback is an ``async def`` function (fedmq's asyncio
executor) instead of a plain one (its thread pool).

EVENTS gets one line per event, ``<time.monotonic()> <kind> <detail>``:
``state <state>`` at every change of the consumer's state (the first line is
``state consuming`` once it consumes), ``processed <id>`` for the first message
processed after each ``state consuming`` (so a test can time a recovery to the
first delivery done), ``nack <id>`` for each refusal, and ``exit <json>`` with
the consumer's counters once it has stopped.
CLOCK_MONOTONIC is system-wide, so the test compares these times with its own.
The process exits 0 after a graceful stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import task

import fedmq
from fedmq.config import config_from_mapping


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("record")
    parser.add_argument("events")
    parser.add_argument("--nack", metavar="PREFIX")
    parser.add_argument("--slow", nargs=2, metavar=("PREFIX", "SECONDS"))
    parser.add_argument("--retry-first", action="store_true")
    parser.add_argument("--retry", metavar="PREFIX")
    parser.add_argument("--async", dest="is_async", action="store_true")
    return parser.parse_args(argv)


class EventLog:
    """Whole lines appended with one write each, from any thread."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        #: Set at each ``state consuming``; the next processed message clears it.
        self.awaiting_processed = False

    def write(self, kind: str, detail: str = "") -> None:
        os.write(self._fd, f"{time.monotonic():.3f} {kind} {detail}\n".encode())


def make_callback(args: argparse.Namespace, events: EventLog) -> Any:
    record = os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    slow_prefix, slow_seconds = (args.slow[0], float(args.slow[1])) if args.slow else (None, 0.0)

    def process(message: fedmq.Message) -> float:
        """Record the message, or raise Nack; the seconds to wait before recording it."""
        message_id = message.id or ""
        if args.nack and message_id.startswith(args.nack):
            events.write("nack", message_id)
            raise fedmq.Nack
        retried = args.retry_first or (args.retry and message_id.startswith(args.retry))
        if retried and message.attempt == 1:
            raise fedmq.Retry("first run")
        if slow_prefix and message_id.startswith(slow_prefix):
            return slow_seconds
        return 0.0

    def write(message: fedmq.Message) -> None:
        os.write(record, f"{message.id}\n".encode())
        os.fsync(record)
        if events.awaiting_processed:
            events.awaiting_processed = False
            events.write("processed", message.id or "")

    def callback(message: fedmq.Message) -> None:
        delay = process(message)
        if delay:
            time.sleep(delay)
        write(message)

    async def async_callback(message: fedmq.Message) -> None:
        delay = process(message)
        if delay:
            await asyncio.sleep(delay)
        write(message)

    return async_callback if args.is_async else callback


async def main(reactor: Any, argv: list[str]) -> None:
    args = parse_arguments(argv)
    # Read once, before the consumer starts: nothing else waits on the reactor yet.
    text = Path(args.config).read_text()  # noqa: ASYNC240
    config = config_from_mapping(json.loads(text), source=args.config)
    events = EventLog(args.events)

    def on_state(state: str) -> None:
        events.awaiting_processed = state == "consuming"
        events.write("state", state)

    consumer = await fedmq.consume(make_callback(args, events), config=config, reactor=reactor)
    on_state(consumer.state)
    consumer.add_state_listener(on_state)
    # SIGTERM stops the reactor; this trigger makes that a graceful drain.
    reactor.addSystemEventTrigger("before", "shutdown", consumer.cancel)
    try:
        await consumer.result
    finally:
        summary = {"reconnects": consumer.stats.reconnects, **consumer.counts}
        events.write("exit", json.dumps(summary))


if __name__ == "__main__":
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    task.react(lambda reactor: main(reactor, sys.argv[1:]))
