"""Callbacks written for fedora-messaging, unchanged, for the compatibility tests.

``Recorder`` is a class as fedora-messaging's users write them: built with no
argument, it reads its settings from fedora-messaging's global
configuration, and stops the consumer with fedora-messaging's own
``HaltConsumer`` once it has seen enough. Both fedora-messaging's consumer
and fedmq's run it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedora_messaging import config
from fedora_messaging.exceptions import Drop, HaltConsumer


class Recorder:
    """Writes one JSON line per message to ``consumer_config.output``; halts after ``count``."""

    def __init__(self) -> None:
        settings = config.conf["consumer_config"]
        self.output = Path(settings["output"])
        self.count = int(settings["count"])
        self.seen = 0

    def __call__(self, message: Any) -> None:
        record = {
            "class": type(message).__name__,
            "topic": message.topic,
            "body": message.body,
            "summary": message.summary,
            "severity": message.severity,
            "usernames": message.usernames,
            "packages": message.packages,
            "queue": message.queue,
            "id": message.id,
            "text": str(message),
        }
        with self.output.open("a") as output:
            output.write(json.dumps(record) + "\n")
        self.seen += 1
        if self.seen >= self.count:
            raise HaltConsumer(exit_code=0, reason=f"recorded {self.seen} messages")


def drop_it(message: Any) -> None:
    """Drop every message, with fedora-messaging's exception."""
    raise Drop
