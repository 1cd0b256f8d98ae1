"""The consumer's connection life cycle, on a Clock with the in-memory broker.

No sockets and no sleeps: :class:`fedmq.testing.InMemoryBroker` plays the
broker (refusing, dropping, blocking and leaving closes unanswered when told)
and a :class:`~fedmq.testing.ThreadedClock` stands in for time, so each
backoff step is checked exactly.
"""

from __future__ import annotations

import threading
from typing import Any

from twisted.internet import task

from fedmq import Message
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import AuthenticationFailed, ConnectionFailed
from fedmq.testing import InMemoryBroker, ThreadedClock


def make_consumer(
    callback: Any = None, **config: Any
) -> tuple[Consumer, ThreadedClock, InMemoryBroker]:
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    settings = config_from_mapping(
        {
            "queues": {"orders": {}},
            "reconnect": {"initial_delay": 1, "max_delay": 8, "factor": 2, "jitter": 0},
            **config,
        }
    )
    consumer = Consumer(
        settings,
        callback or (lambda m: None),
        reactor=clock,
        connect=broker.connect,
    )
    return consumer, clock, broker


def refused() -> ConnectionFailed:
    return ConnectionFailed("Could not connect to the broker at a:5672: connection refused")


def test_failed_attempts_back_off_exponentially_up_to_max_delay():
    consumer, clock, broker = make_consumer()
    broker.refuse_connections(refused(), times=5)
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
    consumer, clock, broker = make_consumer()
    broker.refuse_connections(refused(), times=2)
    consumer.start()
    clock.advance(1)
    clock.advance(2)
    assert consumer.state == "consuming"
    broker.refuse_connections(refused())
    broker.drop_connections()
    clock.run_until(lambda: len(broker.attempts) == 4)
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
    consumer, clock, broker = make_consumer(amqp_urls=["amqp://a/", "amqp://b/", "amqp://c/"])
    broker.refuse_connections(refused(), times=2)
    consumer.start()
    clock.advance(1)
    clock.advance(2)
    assert broker.attempts == ["amqp://a/", "amqp://b/", "amqp://c/"]


def test_a_lost_connection_is_reopened_and_everything_consumed_again():
    consumer, clock, broker = make_consumer()
    states: list[str] = []
    consumer.start()
    consumer.add_state_listener(states.append)
    assert broker.consumer_count("orders") == 1
    broker.drop_connections("missed heartbeats")
    assert broker.consumer_count("orders") == 0
    clock.run_until(lambda: consumer.state == "consuming")
    assert len(broker.attempts) == 2
    assert broker.consumer_count("orders") == 1
    assert states == ["reconnecting", "consuming"]
    assert consumer.stats.reconnects == 1
    assert not consumer.result.called


def test_a_delivery_from_the_lost_connection_is_never_settled_on_the_new_one():
    """The callback finishes after the connection is lost: its ack goes nowhere, and the
    message, redelivered on the new connection, is run again and acked there once.
    """
    release = threading.Event()
    runs: list[bool] = []

    def callback(message: Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            release.wait(10)

    consumer, clock, broker = make_consumer(callback)
    consumer.start()
    broker.publish(Message("m", "orders"), exchange="")
    clock.run_until(lambda: runs == [False])
    broker.drop_connections()
    release.set()
    clock.run_until(lambda: len(broker.settlements) == 1)
    clock.run_until(lambda: consumer.stats.reconnects == 1 and consumer.state == "consuming")
    clock.run_pending()
    assert runs == [False, True]
    [acked] = broker.settlements
    assert acked.how == "acked" and acked.message.redelivered
    assert consumer.state == "consuming"  # no channel closed over an unknown delivery tag
    assert broker.queue_depth("orders") == 0


def test_authentication_failure_is_fatal_and_not_retried():
    consumer, clock, broker = make_consumer()
    broker.refuse_connections(AuthenticationFailed("refused the credentials"))
    failures: list[Any] = []
    consumer.start().addErrback(failures.append)
    clock.advance(100)
    assert len(broker.attempts) == 1
    assert failures and failures[0].check(AuthenticationFailed)
    assert consumer.state == "stopped"
    consumer.result.addErrback(lambda _: None)  # it failed with the same reason


def test_max_attempts_gives_up_with_connection_failed():
    consumer, clock, broker = make_consumer(reconnect={"max_attempts": 3, "jitter": 0})
    broker.refuse_connections(refused(), times=10)
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
    consumer, clock, broker = make_consumer()
    broker.refuse_connections(refused(), times=3)
    consumer.start().addErrback(lambda _: None)
    done: list[Any] = []
    consumer.cancel().addBoth(done.append)
    clock.advance(100)
    assert len(broker.attempts) == 1
    assert done == [None]
    assert consumer.state == "stopped"


def test_a_blocked_connection_is_reported_in_the_state():
    consumer, _, broker = make_consumer()
    consumer.start()
    broker.block("low on memory")
    assert consumer.state == "blocked"
    broker.block(None)
    assert consumer.state == "consuming"


def test_the_backoff_between_attempts_runs_on_the_clock_given():
    """With clock= apart from the reactor, the wait before a retry passes on that clock."""
    broker = InMemoryBroker()
    broker.refuse_connections(refused())
    clock = task.Clock()
    settings = config_from_mapping(
        {"queues": {"orders": {}}, "reconnect": {"initial_delay": 1, "jitter": 0}}
    )
    consumer = Consumer(
        settings, lambda m: None, reactor=ThreadedClock(), clock=clock, connect=broker.connect
    )
    consumer.start()
    assert len(broker.attempts) == 1
    clock.advance(1)
    assert len(broker.attempts) == 2
    assert consumer.state == "consuming"


# --- a graceful stop whose closes the broker never answers ------------------------------


def stop_against(
    channel_close: bool, connection_close: bool
) -> tuple[Consumer, ThreadedClock, InMemoryBroker, list[Any]]:
    """A consumer consuming on a broker that may leave its closes unanswered; cancel it."""
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    settings = config_from_mapping({"queues": {"orders": {}}, "connect_timeout": 5})
    consumer = Consumer(settings, lambda m: None, reactor=clock, connect=broker.connect)
    consumer.start()
    assert consumer.state == "consuming"
    stopped: list[Any] = []
    broker.hold_closes(channels=not channel_close, connections=not connection_close)
    consumer.cancel().addBoth(stopped.append)
    clock.run_until(lambda: len(broker.held_closes) == 1)
    return consumer, clock, broker, stopped


def test_a_stop_whose_channel_close_is_never_answered_ends_after_connect_timeout(
    caplog: Any,
) -> None:
    """The channel close gets connect_timeout; then the connection is dropped and the stop ends."""
    consumer, clock, broker, stopped = stop_against(channel_close=False, connection_close=True)
    [connection] = broker.connections
    assert broker.held_closes == ["channel"]
    clock.advance(4.9)
    assert stopped == []
    assert not consumer.result.called
    clock.advance(0.1)
    assert stopped == [None]
    assert connection.aborted
    assert broker.connections == []
    assert consumer.state == "stopped"
    outcome: list[Any] = []
    consumer.result.addBoth(outcome.append)
    assert outcome == [None]
    assert caplog.text.count("did not answer a close within 5 s") == 1


def test_a_stop_whose_connection_close_is_never_answered_ends_after_connect_timeout(
    caplog: Any,
) -> None:
    """The connection close gets connect_timeout; then the connection is dropped, the stop ends."""
    consumer, clock, broker, stopped = stop_against(channel_close=True, connection_close=False)
    [connection] = broker.connections
    assert broker.held_closes == ["connection"]
    clock.advance(4.9)
    assert stopped == []
    clock.advance(0.1)
    assert stopped == [None]
    assert connection.aborted
    outcome: list[Any] = []
    consumer.result.addBoth(outcome.append)
    assert outcome == [None]
    assert caplog.text.count("did not answer a close within 5 s") == 1
