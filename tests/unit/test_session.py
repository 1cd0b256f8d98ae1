"""A session: one connection's worth of consuming, and the one way it is lost.

Fake connections and channels play the broker and ``task.Clock`` stands in
for time; the dispatcher is a stand-in whose callbacks end when the test says.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

from fedmq._deferreds import BoundedCloses
from fedmq._session import Session
from fedmq.config import config_from_mapping
from fedmq.exceptions import BrokerError, ConnectionFailed
from tests.unit.fakes import FakeConnection


class StubDispatcher:
    """Takes deliveries; its callbacks finish when ``finished`` fires."""

    def __init__(self, on_queue_missing: Any) -> None:
        self.on_queue_missing = on_queue_missing
        self.finished: defer.Deferred[None] = defer.Deferred()
        self.abandoned = 0
        self.in_flight = 0
        self.unsettled = (1, 0)

    def deliver_for(self, queue: str) -> Any:
        return lambda *delivery: None

    def stop(self) -> defer.Deferred[None]:
        return self.finished

    def abandon(self) -> defer.Deferred[None]:
        self.abandoned += 1
        return defer.succeed(None)


class Harness:
    """A session on fake connections; ``consume`` replaces the channels' consume."""

    def __init__(self, consume: Any = None) -> None:
        self.consume = consume
        self.clock = task.Clock()
        self.connections: list[FakeConnection] = []
        self.dispatchers: list[StubDispatcher] = []
        self.config = config_from_mapping(
            {"queues": {"orders": {}, "invoices": {}}, "connect_timeout": 5}
        )
        self.session = Session(
            "amqp://a/",
            lambda reason: None,
            lambda: None,
            config=self.config,
            reactor=self.clock,
            clock=self.clock,
            connect=self.connect,
            policy_for=lambda retry_queues: None,  # type: ignore[arg-type,return-value]
            dispatcher_for=self.dispatcher_for,  # type: ignore[arg-type]
        )
        self.reasons: list[Exception] = []
        self.session.lost.addCallback(self.reasons.append)

    def connect(self, config: Any, reactor: Any, url: str) -> defer.Deferred[FakeConnection]:
        connection = FakeConnection(url)
        self.connections.append(connection)
        if self.consume is not None:
            open_channel = connection.channel

            def channel() -> Any:
                d = open_channel()
                connection.channels[-1].consume = self.consume  # type: ignore[method-assign]
                return d

            connection.channel = channel  # type: ignore[method-assign]
        return defer.succeed(connection)

    def dispatcher_for(self, channel: Any, policy: Any, on_queue_missing: Any) -> StubDispatcher:
        dispatcher = StubDispatcher(on_queue_missing)
        self.dispatchers.append(dispatcher)
        return dispatcher

    def open(self) -> None:
        defer.ensureDeferred(self.session.open())

    @property
    def channel(self) -> Any:
        return self.connections[0].channels[0]


def test_an_open_session_consumes_every_queue_on_one_channel():
    harness = Harness()
    harness.open()
    assert harness.channel.consumed == ["orders", "invoices"]
    assert harness.session.queues == ("orders", "invoices")
    assert harness.session.consumer_tags == ["ctag-orders", "ctag-invoices"]


def test_lost_fires_once_with_the_first_reason_when_the_connection_goes():
    harness = Harness()
    harness.open()
    harness.connections[0].lose(ConnectionFailed("missed heartbeats"))
    harness.channel.closed.callback(BrokerError("channel gone too"))
    harness.channel.on_cancelled()
    assert [str(reason) for reason in harness.reasons] == ["missed heartbeats"]


def test_the_broker_closing_the_channel_loses_the_session():
    harness = Harness()
    harness.open()
    harness.channel.is_open = False
    harness.channel.closed.callback(BrokerError("PRECONDITION_FAILED - unknown delivery tag"))
    assert [type(reason) for reason in harness.reasons] == [BrokerError]


def test_a_broker_cancel_loses_the_session_and_says_so():
    harness = Harness()
    harness.open()
    harness.channel.on_cancelled()
    assert [str(reason) for reason in harness.reasons] == ["The broker cancelled the consumer"]
    assert harness.session.cancelled_by_broker


def test_a_missing_retry_queue_loses_the_session():
    harness = Harness()
    harness.open()
    harness.dispatchers[0].on_queue_missing(ConnectionFailed("retry queue gone"))
    assert [str(reason) for reason in harness.reasons] == ["retry queue gone"]


def test_a_broker_cancel_before_every_queue_is_consumed_is_not_reported_as_a_loss():
    """While it opens, a session's failure is the open's to report, not ``lost``'s."""
    cancels: list[Any] = []
    pending: defer.Deferred[str] = defer.Deferred()

    def consume(name: str, on_delivery: Any, on_cancelled: Any) -> defer.Deferred[str]:
        cancels.append(on_cancelled)
        return defer.succeed("ctag-orders") if name == "orders" else pending

    harness = Harness(consume)
    harness.open()
    cancels[0]()
    assert harness.reasons == []


def test_a_loss_after_a_close_by_fedmq_is_not_reported():
    harness = Harness()
    harness.open()
    closes = BoundedCloses(harness.connections[0], 10, harness.clock)
    defer.ensureDeferred(harness.session.close(closes))
    assert harness.reasons == []
    assert not harness.connections[0].is_open


def test_a_drain_waits_for_the_callbacks_then_reports_it_was_not_forced():
    harness = Harness()
    harness.open()
    drained: list[bool] = []
    defer.ensureDeferred(harness.session.drain(10)).addCallback(drained.append)
    harness.clock.advance(9)
    assert drained == []
    harness.dispatchers[0].finished.callback(None)
    assert drained == [False]
    assert harness.dispatchers[0].abandoned == 0


def test_a_drain_past_its_timeout_abandons_the_callbacks_and_reports_it():
    harness = Harness()
    harness.open()
    drained: list[bool] = []
    defer.ensureDeferred(harness.session.drain(10)).addCallback(drained.append)
    harness.clock.advance(10)
    assert drained == [True]
    assert harness.dispatchers[0].abandoned == 1


def test_abandoning_a_lost_session_drops_its_connection_and_its_callbacks():
    harness = Harness()
    harness.open()
    harness.session.abandon()
    assert not harness.connections[0].is_open
    assert harness.dispatchers[0].abandoned == 1
    assert harness.session.in_flight == 0


@pytest.mark.parametrize("queue", ["orders", "invoices"])
def test_a_consume_that_fails_closes_the_connection_opened(queue):
    def consume(name: str, on_delivery: Any, on_cancelled: Any) -> defer.Deferred[str]:
        if name == queue:
            return defer.fail(BrokerError(f"ACCESS_REFUSED - queue {name!r}"))
        return defer.succeed(f"ctag-{name}")

    harness = Harness(consume)
    refused: list[Any] = []
    defer.ensureDeferred(harness.session.open()).addErrback(refused.append)
    assert refused and refused[0].check(BrokerError)
    assert not harness.connections[0].is_open
    assert harness.dispatchers[0].abandoned == 1
