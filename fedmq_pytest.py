"""fedmq's pytest plugin: fixtures for testing consumers, and a guard against stray publishes.

It is a module of its own, outside the ``fedmq`` package, because importing
``fedmq`` imports Twisted's reactor (through pika's Twisted adapter): a
plugin that did so when pytest loads it would fix the reactor before
pytest-twisted could install the one a user asked for.

Installed with fedmq (entry point ``pytest11``), it changes nothing until
used: its fixtures exist only for tests that ask for them, and the publish
guard is off unless turned on, with ``fedmq_guard_publishes = true`` in the
pytest configuration or ``--fedmq-guard-publishes`` on the command line.

Fixtures:

- ``fedmq_run_callback``: :func:`fedmq.testing.run_callback`.
- ``fedmq_publishes``: a :class:`~fedmq.testing.PublishCapture` recording
  every :func:`fedmq.publish` of the test.
- ``fedmq_clock`` and ``fedmq_broker``: a :class:`~fedmq.testing.ThreadedClock`
  and an :class:`~fedmq.testing.InMemoryBroker` running on it.
- ``fedmq_rabbit`` (session) and ``fedmq_amqp_url``: a throwaway RabbitMQ
  node, and the URL of a virtual host made for the test and deleted after
  it; or, when ``FEDMQ_TEST_AMQP_URL`` is set, that broker's URL.

With the guard on, a test that calls :func:`fedmq.publish` outside a capture
fails at once with :class:`PublishNotCaptured`, instead of hanging on a
broker nobody started; tests marked ``fedmq_allow_publish``, and tests using
``fedmq_rabbit`` or ``fedmq_amqp_url``, may publish for real.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fedmq.testing.capture import PublishCapture
    from fedmq.testing.clock import ThreadedClock
    from fedmq.testing.memory import InMemoryBroker
    from fedmq.testing.rabbitmq import RabbitNode

# fedmq itself is imported by the fixtures only: loading this plugin into a
# pytest run that never uses it imports nothing (and so installs no reactor).

__all__ = ["EXTERNAL_URL_VARIABLE", "PublishNotCaptured"]

#: The environment variable naming a broker to test against instead of a throwaway node.
EXTERNAL_URL_VARIABLE = "FEDMQ_TEST_AMQP_URL"

_ALLOW_MARKER = "fedmq_allow_publish"
_REAL_BROKER_FIXTURES = frozenset({"fedmq_rabbit", "fedmq_amqp_url"})


class PublishNotCaptured(RuntimeError):
    """A test published with the guard on, outside a capture, to a broker it did not set up."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "fedmq_guard_publishes",
        "fail a test at once when it calls fedmq.publish() outside a capture",
        type="bool",
        default=False,
    )
    parser.addoption(
        "--fedmq-guard-publishes",
        action="store_true",
        default=False,
        help="fail a test at once when it calls fedmq.publish() outside a capture",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fedmq-guard-publishes") or config.getini("fedmq_guard_publishes"):
        config.addinivalue_line(
            "markers", f"{_ALLOW_MARKER}: let this test's fedmq.publish() reach a real broker"
        )
        config.pluginmanager.register(_PublishGuard(), "fedmq-publish-guard")


def _refuse(message: Any) -> None:
    raise PublishNotCaptured(
        f"fedmq.publish() of a message with topic {getattr(message, 'topic', '?')!r} in a test "
        "that set up no broker: capture it (fedmq.testing.capture_publishes() or the "
        f"fedmq_publishes fixture), or mark the test with @pytest.mark.{_ALLOW_MARKER}"
    )


class _PublishGuard:
    """Registered only when the guard is on: wraps each test in a refusing interceptor."""

    @pytest.fixture(autouse=True)
    def _fedmq_publish_guard(self, request: pytest.FixtureRequest) -> Iterator[None]:
        allowed = request.node.get_closest_marker(_ALLOW_MARKER) is not None
        if allowed or _REAL_BROKER_FIXTURES & set(request.fixturenames):
            yield
            return
        from fedmq.api import intercepting_publishes

        with intercepting_publishes(_refuse):
            yield


@pytest.fixture
def fedmq_run_callback() -> Callable[..., Any]:
    """:func:`fedmq.testing.run_callback`: run a callback on one message, get its outcome."""
    from fedmq.testing.callbacks import run_callback

    return run_callback


@pytest.fixture
def fedmq_publishes() -> Iterator[PublishCapture]:
    """Every :func:`fedmq.publish` the test makes, recorded and not sent."""
    from fedmq.testing.capture import capture_publishes

    with capture_publishes() as published:
        yield published


@pytest.fixture
def fedmq_clock() -> ThreadedClock:
    """A Clock to run consumers on, which also takes results from callback threads."""
    from fedmq.testing.clock import ThreadedClock

    return ThreadedClock()


@pytest.fixture
def fedmq_broker(fedmq_clock: ThreadedClock) -> InMemoryBroker:
    """An in-memory broker on ``fedmq_clock``; pass ``fedmq_broker.connect`` as ``connect=``."""
    from fedmq.testing.memory import InMemoryBroker

    return InMemoryBroker(fedmq_clock)


class ExternalBroker:
    """A broker named by ``FEDMQ_TEST_AMQP_URL``: only its URL is known."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __repr__(self) -> str:
        return f"<ExternalBroker from ${EXTERNAL_URL_VARIABLE}>"  # the URL may hold a password


@pytest.fixture(scope="session")
def fedmq_rabbit(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RabbitNode | ExternalBroker]:
    """A RabbitMQ node started for the session and stopped after it (or the external one)."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        yield ExternalBroker(external)
        return
    from fedmq.testing.rabbitmq import RabbitNode

    with RabbitNode(tmp_path_factory.mktemp("fedmq-rabbit")) as node:
        yield node


@pytest.fixture
def fedmq_amqp_url(
    fedmq_rabbit: RabbitNode | ExternalBroker, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The AMQP URL of a virtual host made for this test and deleted, with its contents, after.

    With ``FEDMQ_TEST_AMQP_URL`` set, that URL, shared by every test.
    """
    if isinstance(fedmq_rabbit, ExternalBroker):
        yield fedmq_rabbit.url
        return
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    vhost = f"test-{readable}-{secrets.token_hex(3)}"
    fedmq_rabbit.add_vhost(vhost)
    try:
        fedmq_rabbit.set_permissions("guest", vhost)
        yield fedmq_rabbit.vhost_url(vhost)
    finally:
        fedmq_rabbit.delete_vhost(vhost)
