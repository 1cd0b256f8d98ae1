"""Example callbacks: ``callback = "fedmq.example:printer"`` in a config file."""

from __future__ import annotations

import sys

from fedmq.message import Message


def printer(message: Message) -> None:
    """Print each message: its id, topic and body, one message per block."""
    print(f"Message {message.id} on topic {message.topic!r} from queue {message.queue!r}")
    print(f"  body: {message.body!r}")
    sys.stdout.flush()
