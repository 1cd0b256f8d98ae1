"""Callbacks that the service and CLI tests run in fedmq processes.

Each takes its settings from the config's ``consumer_config`` table and
writes what it did to the file named by ``consumer_config.log``, one line
per event, so a test can tell from outside what the process did.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import fedmq


class _Logged:
    def __init__(self, consumer_config: dict[str, Any]) -> None:
        self.settings = consumer_config
        self.log = Path(consumer_config["log"])

    def note(self, event: str, message: fedmq.Message) -> None:
        with self.log.open("a") as file:
            file.write(f"{event} {message.id}\n")


class Slow(_Logged):
    """Notes "started", sleeps ``consumer_config.sleep`` seconds, notes "done"."""

    def __call__(self, message: fedmq.Message) -> None:
        self.note("started", message)
        time.sleep(float(self.settings.get("sleep", 0)))
        self.note("done", message)


class AsyncSlow(_Logged):
    """Slow, as an ``async def`` callback."""

    async def __call__(self, message: fedmq.Message) -> None:
        self.note("started", message)
        await asyncio.sleep(float(self.settings.get("sleep", 0)))
        self.note("done", message)


class Halt(_Logged):
    """Halts the consumer with ``consumer_config.exit_code`` on the first message."""

    def __call__(self, message: fedmq.Message) -> None:
        self.note("done", message)
        raise fedmq.HaltConsumer(int(self.settings["exit_code"]), "the test says so")


def raises(message: fedmq.Message) -> None:
    raise RuntimeError("the callback is broken")


class Unbuildable:
    def __init__(self) -> None:
        raise ValueError("no database")
