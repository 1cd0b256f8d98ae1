"""Test doubles and launchers for code that uses fedmq.

In memory, without a broker: :func:`run_callback` runs a callback on one
message as the consumer would and reports its outcome; :func:`capture_publishes`
and :func:`mock_sends` record what code publishes instead of sending it;
:class:`InMemoryBroker` is a broker fedmq's own :class:`~fedmq.Consumer` runs
against; :func:`topic_matches` and :func:`headers_match` are RabbitMQ's
routing rules. Beside them, :class:`RabbitNode` runs a real, throwaway
RabbitMQ node, whose :class:`MemoryAlarm` blocks its publishers. fedmq's
pytest plugin (the ``fedmq_pytest`` module) offers all of these as fixtures.
"""

from fedmq.testing.callbacks import (
    CallbackResult,
    Outcome,
    arun_callback,
    make_message,
    run_callback,
)
from fedmq.testing.capture import PublishCapture, capture_publishes, mock_sends
from fedmq.testing.certificates import TEST_CLIENT_NAME, make_test_certificates
from fedmq.testing.clock import ThreadedClock
from fedmq.testing.memory import InMemoryBroker
from fedmq.testing.rabbitmq import (
    NOT_INSTALLED,
    MemoryAlarm,
    RabbitNode,
    find_rabbitmq_server,
)
from fedmq.testing.routing import headers_match, topic_matches

__all__ = [
    "NOT_INSTALLED",
    "TEST_CLIENT_NAME",
    "CallbackResult",
    "InMemoryBroker",
    "MemoryAlarm",
    "Outcome",
    "PublishCapture",
    "RabbitNode",
    "ThreadedClock",
    "arun_callback",
    "capture_publishes",
    "find_rabbitmq_server",
    "headers_match",
    "make_message",
    "make_test_certificates",
    "mock_sends",
    "run_callback",
    "topic_matches",
]
