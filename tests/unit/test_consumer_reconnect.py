"""The consumer's connection life cycle, on a Clock with a fake broker.

No sockets and no sleeps: a fake connection factory plays the broker, and
``task.Clock`` stands in for time, so each backoff step is checked exactly.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task

from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import AuthenticationFailed, ConnectionFailed
from tests.unit.fakes import FakeChannel, FakeConnection


class ThreadCallClock(task.Clock):
    """A Clock that also takes calls from worker threads, run when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_calls: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.thread_calls.put((f, args))

    def run_thread_calls(self, until: Callable[[], bool], timeout: float = 10.0) -> None:
        """Run calls from worker threads as they come, until ``until()`` holds."""
        while not until():
            f, args = self.thread_calls.get(timeout=timeout)
            f(*args)


class FakeBroker:
    """Answers connection attempts from a script of outcomes, then accepts."""

    def __init__(self, outcomes: list[Exception | None] | None = None) -> None:
        self.outcomes = list(outcomes or [])
        self.attempts: list[str] = []
        self.connections: list[FakeConnection] = []

    def connect(self, config: Any, reactor: Any, url: str) -> defer.Deferred[FakeConnection]:
        self.attempts.append(url)
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            return defer.fail(outcome)
        connection = FakeConnection(url)
        self.connections.append(connection)
        return defer.succeed(connection)


def make_consumer(broker: FakeBroker, **config: Any) -> tuple[Consumer, ThreadCallClock]:
    clock = ThreadCallClock()
    settings = config_from_mapping(
        {
            "queues": {"orders": {}},
            "reconnect": {"initial_delay": 1, "max_delay": 8, "factor": 2, "jitter": 0},
            **config,
        }
    )
    consumer = Consumer(settings, lambda m: None, reactor=clock, connect=broker.connect)
    return consumer, clock


def wait_for_reconnect(clock: ThreadCallClock, broker: FakeBroker) -> None:
    """Let the old session's workers wind down (they report from their threads)."""
    clock.run_thread_calls(lambda: len(broker.connections) == 2)


def refused() -> ConnectionFailed:
    return ConnectionFailed("Could not connect to the broker at a:5672: connection refused")


def test_failed_attempts_back_off_exponentially_up_to_max_delay():
    broker = FakeBroker([refused()] * 5)
    consumer, clock = make_consumer(broker)
    started: list[Any] = []
    consumer.start().addBoth(started.append)
    assert len(broker.attempts) == 1
    for delay in (1, 2, 4, 8, 8):  # capped at max_delay
        clock.advance(delay - 0.01)
        before = len(broker.attempts)
        clock.advance(0.01)
        assert len(broker.attempts) == before + 1
    assert started == [consumer]
    assert consumer.state == "consuming"


def test_the_delay_resets_after_a_successful_handshake():
    broker = FakeBroker([refused(), refused()])
    consumer, clock = make_consumer(broker)
    consumer.start()
    clock.advance(1)
    clock.advance(2)
    assert consumer.state == "consuming"
    broker.outcomes = [refused()]
    broker.connections[-1].lose(ConnectionFailed("lost"))
    clock.run_thread_calls(lambda: len(broker.attempts) == 4)
    # The reconnect after a lost session is immediate; its failure waits the
    # initial delay again, not the 4 s the earlier run had reached.
    assert consumer.state == "reconnecting"
    attempts = len(broker.attempts)
    clock.advance(0.99)
    assert len(broker.attempts) == attempts
    clock.advance(0.01)
    assert len(broker.attempts) == attempts + 1
    assert consumer.state == "consuming"


def test_attempts_go_through_amqp_urls_in_turn():
    broker = FakeBroker([refused(), refused()])
    consumer, clock = make_consumer(broker, amqp_urls=["amqp://a/", "amqp://b/", "amqp://c/"])
    consumer.start()
    clock.advance(1)
    clock.advance(2)
    assert broker.attempts == ["amqp://a/", "amqp://b/", "amqp://c/"]


def test_a_lost_connection_is_reopened_and_everything_consumed_again():
    broker = FakeBroker()
    consumer, clock = make_consumer(broker)
    states: list[str] = []
    consumer.start()
    consumer.add_state_listener(states.append)
    first = broker.connections[0]
    first.lose(ConnectionFailed("missed heartbeats"))
    wait_for_reconnect(clock, broker)
    second = broker.connections[1]
    assert second.channels[0].consumed == ["orders"]
    assert states == ["reconnecting", "consuming"]
    assert consumer.stats.reconnects == 1
    assert not consumer.result.called


def test_a_delivery_from_the_lost_connection_is_never_settled_on_the_new_one():
    broker = FakeBroker()
    consumer, clock = make_consumer(broker)
    consumer.start()
    old_channel = broker.connections[0].channels[0]
    old_channel.on_delivery(1, False, "", "k", None, b"{}")
    broker.connections[0].lose(ConnectionFailed("lost"))
    wait_for_reconnect(clock, broker)
    new_channel = broker.connections[1].channels[0]
    assert new_channel.sent == [] and old_channel.sent == []


def test_authentication_failure_is_fatal_and_not_retried():
    broker = FakeBroker([AuthenticationFailed("refused the credentials")])
    consumer, clock = make_consumer(broker)
    failures: list[Any] = []
    consumer.start().addErrback(failures.append)
    clock.advance(100)
    assert len(broker.attempts) == 1
    assert failures and failures[0].check(AuthenticationFailed)
    assert consumer.state == "stopped"


def test_max_attempts_gives_up_with_connection_failed():
    broker = FakeBroker([refused()] * 10)
    consumer, clock = make_consumer(broker, reconnect={"max_attempts": 3, "jitter": 0})
    failures: list[Any] = []
    consumer.start().addErrback(failures.append)
    clock.pump([1, 2, 4, 8])
    assert len(broker.attempts) == 3
    assert "3 failed connection attempts" in str(failures[0].value)
    outcome: list[Any] = []
    consumer.result.addErrback(outcome.append)
    # result says why the consumer ended, as its docstring promises: the same reason.
    assert outcome[0].value is failures[0].value


def test_cancel_while_waiting_to_reconnect_stops_without_another_attempt():
    broker = FakeBroker([refused()] * 3)
    consumer, clock = make_consumer(broker)
    consumer.start().addErrback(lambda _: None)
    done: list[Any] = []
    consumer.cancel().addBoth(done.append)
    clock.advance(100)
    assert len(broker.attempts) == 1
    assert done == [None]
    assert consumer.state == "stopped"


def test_a_blocked_connection_is_reported_in_the_state():
    broker = FakeBroker()
    consumer, _ = make_consumer(broker)
    consumer.start()
    connection = broker.connections[0]
    connection.on_blocked("low on memory")
    assert consumer.state == "blocked"
    connection.on_unblocked()
    assert consumer.state == "consuming"


def test_the_backoff_between_attempts_runs_on_the_clock_given():
    """With clock= apart from the reactor, the wait before a retry passes on that clock."""
    broker = FakeBroker([refused()])
    clock = task.Clock()
    settings = config_from_mapping(
        {"queues": {"orders": {}}, "reconnect": {"initial_delay": 1, "jitter": 0}}
    )
    consumer = Consumer(
        settings, lambda m: None, reactor=ThreadCallClock(), clock=clock, connect=broker.connect
    )
    consumer.start()
    assert len(broker.attempts) == 1
    clock.advance(1)
    assert len(broker.attempts) == 2
    assert consumer.state == "consuming"


# --- a graceful stop whose closes the broker never answers ------------------------------


class UnansweredChannel(FakeChannel):
    """A channel whose close the broker stops answering once the test says it is stopping."""

    def __init__(self, connection: UnansweringConnection) -> None:
        super().__init__()
        self.connection = connection

    def close(self) -> defer.Deferred[None]:
        if not self.connection.stopping:
            return super().close()
        self.connection.unanswered_closes += 1
        return defer.Deferred()


class UnansweringConnection(FakeConnection):
    """A connection whose close (or whose channels' closes) the broker never answers."""

    def __init__(self, url: str, channel_close: bool, connection_close: bool) -> None:
        super().__init__(url)
        self.answers_channel_close = channel_close
        self.answers_connection_close = connection_close
        self.aborted = False
        self.unanswered_closes = 0
        self.stopping = False

    def channel(self) -> defer.Deferred[FakeChannel]:
        channel = FakeChannel() if self.answers_channel_close else UnansweredChannel(self)
        self.channels.append(channel)
        return defer.succeed(channel)

    def close(self) -> defer.Deferred[None]:
        if self.answers_connection_close or self.aborted:
            return super().close()
        self.unanswered_closes += 1
        return defer.Deferred()

    def abort(self) -> None:
        self.aborted = True
        self.lose_quietly()

    def lose_quietly(self) -> None:
        """The TCP connection is dropped by fedmq: the closed Deferred fires with None."""
        self.is_open = False
        for channel in self.channels:
            channel.is_open = False
        if not self.closed.called:
            self.closed.callback(None)


def stop_against(
    channel_close: bool, connection_close: bool
) -> tuple[Consumer, ThreadCallClock, UnansweringConnection, list[Any]]:
    """A consumer consuming on a connection that may leave its closes unanswered; cancel it."""
    clock = ThreadCallClock()
    connection = UnansweringConnection("amqp://fake/", channel_close, connection_close)
    settings = config_from_mapping({"queues": {"orders": {}}, "connect_timeout": 5})
    consumer = Consumer(
        settings,
        lambda m: None,
        reactor=clock,
        connect=lambda config, reactor, url: defer.succeed(connection),
    )
    consumer.start()
    assert consumer.state == "consuming"
    stopped: list[Any] = []
    connection.stopping = True
    consumer.cancel().addBoth(stopped.append)
    clock.run_thread_calls(lambda: connection.unanswered_closes == 1)
    return consumer, clock, connection, stopped


def test_a_stop_whose_channel_close_is_never_answered_ends_after_connect_timeout(
    caplog: Any,
) -> None:
    """The channel close gets connect_timeout; then the connection is dropped and the stop ends."""
    consumer, clock, connection, stopped = stop_against(channel_close=False, connection_close=True)
    clock.advance(4.9)
    assert stopped == []
    assert not consumer.result.called
    clock.advance(0.1)
    assert stopped == [None]
    assert connection.aborted
    assert consumer.state == "stopped"
    outcome: list[Any] = []
    consumer.result.addBoth(outcome.append)
    assert outcome == [None]
    assert caplog.text.count("did not answer a close within 5 s") == 1


def test_a_stop_whose_connection_close_is_never_answered_ends_after_connect_timeout(
    caplog: Any,
) -> None:
    """The connection close gets connect_timeout; then the connection is dropped, the stop ends."""
    consumer, clock, connection, stopped = stop_against(channel_close=True, connection_close=False)
    clock.advance(4.9)
    assert stopped == []
    clock.advance(0.1)
    assert stopped == [None]
    assert connection.aborted
    outcome: list[Any] = []
    consumer.result.addBoth(outcome.append)
    assert outcome == [None]
    assert caplog.text.count("did not answer a close within 5 s") == 1
