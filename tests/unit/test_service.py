"""ConsumerService: how a fedmq process stops, on a fake consumer and a memory reactor."""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from fedmq.config import config_from_mapping
from fedmq.exceptions import (
    AuthenticationFailed,
    CallbackError,
    ConnectionFailed,
    HaltConsumer,
    StopForced,
)
from fedmq.service import ConsumerService


class FakeConsumer:
    """What ConsumerService uses of a Consumer, driven by the test."""

    def __init__(self) -> None:
        self.started: defer.Deferred[Any] = defer.Deferred()
        self.result: defer.Deferred[None] = defer.Deferred()
        self.drained: defer.Deferred[None] = defer.Deferred()
        self.cancels = 0
        self.aborts = 0

    def start(self) -> defer.Deferred[Any]:
        return self.started

    def cancel(self) -> defer.Deferred[None]:
        self.cancels += 1
        return self.drained

    def abort(self) -> None:
        self.aborts += 1
        if not self.result.called:
            self.result.errback(StopForced("Stopped without waiting for callbacks in flight"))


def Service(config: Any, callback: Any, reactor: Any, **options: Any) -> ConsumerService:
    """A ConsumerService whose consumer is a FakeConsumer."""
    return ConsumerService(
        config, callback, reactor, consumer_factory=lambda *_: FakeConsumer(), **options
    )


@pytest.fixture
def reactor() -> MemoryReactorClock:
    reactor = MemoryReactorClock()
    reactor.running = True
    return reactor


@pytest.fixture
def config() -> Any:
    return config_from_mapping({"queues": {"orders": {}}})


def started(config: Any, reactor: Any, **options: Any) -> tuple[ConsumerService, FakeConsumer]:
    service = Service(config, "fedmq.example:printer", reactor, **options)
    service.startService()
    assert isinstance(service.consumer, FakeConsumer)
    return service, service.consumer


def test_start_builds_and_starts_the_consumer_at_once(config, reactor):
    service = Service(config, None, reactor)
    assert service.consumer is None
    service.startService()
    assert service.consumer is not None
    assert service.running
    assert service.exit_code is None


def test_a_normal_halt_exits_0_and_stops_the_reactor(config, reactor):
    service, consumer = started(config, reactor)
    consumer.started.callback(consumer)
    consumer.result.callback(None)
    assert service.exit_code == 0
    assert reactor.hasStopped


def test_halt_consumer_with_exit_code_n_gives_n_and_one_error_line(config, reactor, caplog):
    service, consumer = started(config, reactor)
    consumer.started.callback(consumer)
    with caplog.at_level(logging.INFO, logger="fedmq.service"):
        consumer.result.errback(HaltConsumer(9, "out of disk"))
    assert service.exit_code == 9
    assert reactor.hasStopped
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == (
        "fedmq stopped (exit status 9): consumer halted with exit code 9: out of disk"
    )
    assert record.exc_info is None


@pytest.mark.parametrize(
    ("reason", "code"),
    [(AuthenticationFailed("refused the credentials"), 4), (ConnectionFailed("gave up"), 7)],
)
def test_a_consumer_that_never_starts_exits_with_the_reason_from_start(
    config, reactor, reason, code
):
    service, consumer = started(config, reactor)
    consumer.started.errback(reason)
    consumer.result.errback(reason)  # as Consumer does: result fails with the same reason
    assert service.exit_code == code
    assert reactor.hasStopped


def test_stopping_drains_and_fires_once_the_drain_is_done(config, reactor):
    service, consumer = started(config, reactor)
    consumer.started.callback(consumer)
    stopped = service.stopService()
    assert consumer.cancels == 1
    assert not stopped.called
    consumer.result.callback(None)
    consumer.drained.callback(None)
    assert stopped.called
    assert service.exit_code == 0
    assert not reactor.hasStopped, "the service must not stop a reactor that is stopping it"


def test_a_stop_while_connecting_is_a_normal_exit(config, reactor):
    """A signal before the consumer consumes: the start fails because of the stop,
    which is not a connection failure.
    """
    service, consumer = started(config, reactor)
    service.stopService()
    consumer.started.errback(ConnectionFailed("Cancelled before consuming"))
    consumer.result.callback(None)
    assert service.exit_code == 0


def test_the_first_signal_stops_the_reactor_and_the_second_aborts(config, reactor):
    service, consumer = started(config, reactor)
    consumer.started.callback(consumer)
    service.signalled(signal.SIGTERM)
    assert reactor.hasStopped
    assert consumer.aborts == 0
    stopped = service.stopService()  # what the reactor's shutdown does
    service.signalled(signal.SIGINT)
    assert consumer.aborts == 1
    assert service.exit_code == 1
    assert stopped.called, "an abort must let the shutdown go on without the drain"


def test_signals_after_the_consumer_ended_do_nothing_more(config, reactor):
    service, consumer = started(config, reactor)
    consumer.result.callback(None)
    service.signalled(signal.SIGTERM)
    service.signalled(signal.SIGTERM)
    assert consumer.aborts == 0
    assert service.exit_code == 0


def test_a_callback_that_cannot_be_built_exits_2(config, reactor):
    def broken(*_: Any) -> Any:
        raise CallbackError("The callback 'x:y' could not be loaded")

    service = ConsumerService(config, "x:y", reactor, consumer_factory=broken)
    service.startService()
    assert service.consumer is None
    assert service.exit_code == 2
    assert reactor.hasStopped
    assert service.stopService().called


def test_exit_with_status_ends_the_process_with_a_failing_status(config, reactor, monkeypatch):
    registered: list[Any] = []
    exits: list[int] = []
    monkeypatch.setattr("atexit.register", registered.append)
    monkeypatch.setattr(os, "_exit", exits.append)
    service, consumer = started(config, reactor, exit_with_status=True)
    assert registered == [service.exit_process]
    consumer.result.errback(HaltConsumer(3))
    service.exit_process()
    assert exits == [3]


def test_exit_with_status_leaves_a_normal_exit_alone(config, reactor, monkeypatch):
    exits: list[int] = []
    monkeypatch.setattr("atexit.register", lambda _: None)
    monkeypatch.setattr(os, "_exit", exits.append)
    service, consumer = started(config, reactor, exit_with_status=True)
    consumer.result.callback(None)
    service.exit_process()
    assert exits == []


def test_without_exit_with_status_nothing_is_registered(config, reactor, monkeypatch):
    registered: list[Any] = []
    monkeypatch.setattr("atexit.register", registered.append)
    started(config, reactor)
    assert registered == []
