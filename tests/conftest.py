"""Fixtures shared by the whole suite: the throwaway RabbitMQ node and vhosts on it.

One node is started per test session (about five seconds) and each
integration test gets a vhost of its own on it, so tests never see each
other's queues. Set ``FEDMQ_TEST_AMQP_URL`` to run against a broker you
started yourself instead; tests that need to control the broker (restart it,
create vhosts) then fail, saying so.

Twisted tests run under pytest-twisted; choose the reactor with its
``--reactor`` option, never by installing one here.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from fedmq.testing import RabbitNode
from tests.helpers import NotifySocket, OpenTelemetrySDK, logging_restored

EXTERNAL_URL_VARIABLE = "FEDMQ_TEST_AMQP_URL"

_HERE = Path(__file__).parent
# Directories whose tests need the broker the suite starts.
_BROKER_TEST_DIRS = (_HERE / "integration", _HERE / "faults")


def _fail_needs_node() -> NoReturn:
    pytest.fail(
        f"this test controls the broker through rabbitmqctl, which it cannot do with "
        f"{EXTERNAL_URL_VARIABLE} set; unset it to let the suite start its own node",
        pytrace=False,
    )


class ExternalBroker:
    """A broker named by ``FEDMQ_TEST_AMQP_URL``: a URL and nothing to control.

    Any other attribute a test asks for (``restart``, ``queue_counts``...)
    fails that test, saying why.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):  # copy, pickle and friends probe for these
            raise AttributeError(name)
        _fail_needs_node()

    def __repr__(self) -> str:
        # The URL may hold a password.
        return f"<ExternalBroker from ${EXTERNAL_URL_VARIABLE}>"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.path.is_relative_to(d) for d in _BROKER_TEST_DIRS):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode | ExternalBroker]:
    """The broker for this session: a fresh RabbitNode, or the external one."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        yield ExternalBroker(external)
        return
    with RabbitNode(tmp_path_factory.mktemp("rabbit"), tls=True) as node:
        yield node


@pytest.fixture
def rabbit_node(rabbit: RabbitNode | ExternalBroker) -> RabbitNode:
    """The session's RabbitNode, for tests that control the broker.

    Fails the test when the suite runs against ``FEDMQ_TEST_AMQP_URL``.
    """
    if isinstance(rabbit, ExternalBroker):
        _fail_needs_node()
    if not rabbit.running:
        # An earlier test crashed or stopped the broker and failed before
        # bringing it back; do not let every later test fail for it.
        rabbit.start()
    return rabbit


@pytest.fixture
def amqp_url(rabbit: RabbitNode | ExternalBroker) -> str:
    """URL of the session broker's default vhost (shared by every test)."""
    return rabbit.url


@pytest.fixture
def vhost_name(rabbit_node: RabbitNode, request: pytest.FixtureRequest) -> Iterator[str]:
    """Name of a vhost made for this test alone; deleted, with all in it, afterwards."""
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
    name = f"test-{readable}-{secrets.token_hex(3)}"
    rabbit_node.add_vhost(name)
    try:
        rabbit_node.set_permissions("guest", name)
        yield name
    finally:
        if not rabbit_node.running:
            rabbit_node.start()
        rabbit_node.delete_vhost(name)


@pytest.fixture
def vhost(rabbit_node: RabbitNode, vhost_name: str) -> str:
    """AMQP URL (as guest) of a vhost made for this test alone."""
    return rabbit_node.vhost_url(vhost_name)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A stand-in for systemd's notification socket, at a path under tmp_path."""
    listener = NotifySocket(str(tmp_path / "notify"))
    yield listener
    listener.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put every logger and handler back as it was after the test."""
    with logging_restored():
        yield


@pytest.fixture
def otel() -> OpenTelemetrySDK:
    """The OpenTelemetry SDK with in-memory exporters, its spans cleared."""
    return OpenTelemetrySDK.install()
