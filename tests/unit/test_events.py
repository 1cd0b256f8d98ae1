"""Session events: what a handler hears, in what order, and what a failing handler changes.

A real :class:`~fedmq.Consumer` on :class:`fedmq.testing.InMemoryBroker`,
with a :class:`~fedmq.testing.ThreadedClock` for time: no sockets, no sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

import pytest
from twisted.internet import task

import fedmq
from fedmq import Message
from fedmq._events import EventBus, QueueEvents, SlowConsumerWatch
from fedmq._flow import Holds
from fedmq.config import QueueConfig, config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import ConnectionFailed
from fedmq.testing import InMemoryBroker, ThreadedClock


def make_consumer(
    callback: Any = None, on_event: Any = None, **config: Any
) -> tuple[Consumer, ThreadedClock, InMemoryBroker, list[fedmq.Event]]:
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    events: list[fedmq.Event] = []
    settings = config_from_mapping(
        {
            "amqp_url": "amqp://fedmq:s3cret@broker.example/%2F",
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
        on_event=on_event if on_event is not None else events.append,
    )
    return consumer, clock, broker, events


def kinds(events: list[fedmq.Event]) -> list[str]:
    return [event.kind for event in events if not isinstance(event, fedmq.StateChanged)]


def refused() -> ConnectionFailed:
    return ConnectionFailed("Could not connect to the broker at a:5672: connection refused")


# --- the events, in order ------------------------------------------------------------------


def test_a_lost_connection_is_told_in_order_from_disconnected_to_topology_restored():
    consumer, clock, broker, events = make_consumer()
    consumer.start()
    broker.drop_connections("CONNECTION_FORCED - broker restart")
    clock.run_until(lambda: consumer.stats.reconnects == 1)
    assert events[0] == fedmq.Connected("amqp://fedmq:***@broker.example/%2F")
    assert kinds(events) == [
        "connected",
        "disconnected",
        "reconnecting",
        "reconnected",
        "queue_reopened",
        "topology_restored",
    ]
    disconnected = next(e for e in events if isinstance(e, fedmq.Disconnected))
    assert "CONNECTION_FORCED - broker restart" in disconnected.reason
    assert next(e for e in events if isinstance(e, fedmq.Reconnecting)) == fedmq.Reconnecting(
        1, 0.0
    )
    assert events[-3:] == [
        fedmq.QueueReopened("orders"),
        fedmq.TopologyRestored(("orders",)),
        fedmq.StateChanged("consuming"),
    ]
    states = [e.state for e in events if isinstance(e, fedmq.StateChanged)]
    assert states == ["consuming", "reconnecting", "consuming"]


def test_no_event_shows_the_password_of_the_broker_url():
    consumer, clock, broker, events = make_consumer()
    consumer.start()
    broker.drop_connections()
    clock.run_until(lambda: consumer.stats.reconnects == 1)
    shown = " ".join(repr(event) for event in events)
    assert "s3cret" not in shown
    assert fedmq.Connected("amqp://fedmq:***@broker.example/%2F") in events
    assert fedmq.Reconnected("amqp://fedmq:***@broker.example/%2F") in events


def test_each_failed_attempt_is_told_with_its_number_and_the_wait_before_the_next():
    consumer, clock, broker, events = make_consumer()
    consumer.start()
    broker.refuse_connections(refused(), times=2)
    broker.drop_connections()
    clock.run_until(lambda: len(broker.attempts) == 2)
    clock.advance(1)
    clock.advance(2)
    assert consumer.state == "consuming"
    told = [e for e in events if isinstance(e, fedmq.Reconnecting)]
    assert told == [
        fedmq.Reconnecting(1, 0.0),
        fedmq.Reconnecting(2, 1.0),
        fedmq.Reconnecting(3, 2.0),
    ]
    assert kinds(events)[-3:] == ["reconnected", "queue_reopened", "topology_restored"]


def test_a_blocked_connection_is_told_with_the_brokers_reason_then_unblocked():
    consumer, _, broker, events = make_consumer()
    consumer.start()
    broker.block("low on memory")
    broker.block(None)
    assert [e for e in events if e.kind in ("blocked", "unblocked")] == [
        fedmq.Blocked("low on memory"),
        fedmq.Unblocked(),
    ]
    states = [e.state for e in events if isinstance(e, fedmq.StateChanged)]
    assert states == ["consuming", "blocked", "consuming"]


def test_a_consumer_error_is_told_with_its_exception_queue_and_message_id():
    def callback(message: Message) -> None:
        raise fedmq.ConsumerError("the inventory is down")

    consumer, clock, broker, events = make_consumer(callback)
    consumer.start()
    broker.publish(Message("m", "orders", message_id="m-1"), exchange="")
    clock.run_until(lambda: any(isinstance(e, fedmq.ErrorEvent) for e in events))
    [error] = [e for e in events if isinstance(e, fedmq.ErrorEvent)]
    assert error.kind == "error"
    assert str(error.error) == "the inventory is down"
    assert (error.queue, error.message_id) == ("orders", "m-1")


def test_a_stop_is_told_as_states_draining_then_stopped():
    consumer, clock, _, events = make_consumer()
    consumer.start()
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped")
    states = [e.state for e in events if isinstance(e, fedmq.StateChanged)]
    assert states == ["consuming", "draining", "stopped"]


def test_handlers_added_later_hear_from_then_on_and_a_removed_one_hears_nothing():
    consumer, _, broker, _ = make_consumer()
    later: list[fedmq.Event] = []
    removed: list[fedmq.Event] = []
    consumer.add_event_handler(later.append)
    consumer.add_event_handler(removed.append)
    consumer.remove_event_handler(removed.append)
    consumer.remove_event_handler(print)  # never added: ignored
    consumer.start()
    broker.block("alarm")
    assert kinds(later) == ["connected", "blocked"]
    assert removed == []


def test_the_state_listeners_of_before_hear_states_as_before():
    consumer, _, broker, _ = make_consumer()
    states: list[str] = []
    consumer.add_state_listener(states.append)
    consumer.start()
    broker.block("alarm")
    assert states == ["consuming", "blocked"]


def test_every_event_is_frozen_and_has_its_kind():
    event = fedmq.Disconnected("gone")
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.reason = "other"  # type: ignore[misc]
    exported = [
        getattr(fedmq, name)
        for name in fedmq.__all__
        if isinstance(getattr(fedmq, name), type) and issubclass(getattr(fedmq, name), fedmq.Event)
    ]
    kinds_of = {cls.kind for cls in exported if cls is not fedmq.Event}
    assert len(kinds_of) == len(exported) - 1 == 18


# --- handlers that raise, and handlers that call back ---------------------------------------


def test_a_handler_that_raises_is_logged_once_per_kind_and_disturbs_nothing(caplog):
    heard: list[str] = []

    def broken(event: fedmq.Event) -> None:
        raise RuntimeError("handler bug")

    consumer, clock, broker, _ = make_consumer(on_event=broken)
    consumer.add_event_handler(lambda event: heard.append(event.kind))
    with caplog.at_level(logging.DEBUG, logger="fedmq"):
        consumer.start()
        for _ in range(3):
            broker.block("alarm")
            broker.block(None)
    assert heard.count("blocked") == 3
    assert consumer.state == "consuming"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    failed_kinds = sorted(r.args[1] for r in errors)  # type: ignore[index]
    assert failed_kinds == ["blocked", "connected", "state_changed", "unblocked"]
    assert all(r.exc_info and "handler bug" in str(r.exc_info[1]) for r in errors)
    # blocked and unblocked twice more each; state_changed six more times after the first
    assert sum("failed again" in r.getMessage() for r in caplog.records) == 2 + 2 + 6
    # The consumer still consumes.
    broker.publish(Message("m", "orders"), exchange="")
    clock.run_until(lambda: consumer.counts["acked"] == 1)


def test_an_event_caused_by_a_handler_comes_after_the_current_one_reached_every_handler():
    bus = EventBus()
    first: list[str] = []
    second: list[str] = []

    def blocks_on_connect(event: fedmq.Event) -> None:
        first.append(event.kind)
        if isinstance(event, fedmq.Connected):
            bus.emit(fedmq.Blocked("caused by a handler"))

    bus.add(blocks_on_connect)
    bus.add(lambda event: second.append(event.kind))
    bus.emit(fedmq.Connected("amqp://"))
    assert first == second == ["connected", "blocked"]


def test_cancel_from_an_event_handler_stops_the_consumer_without_waiting_on_itself():
    stopped: list[Any] = []
    holder: list[Consumer] = []

    def on_event(event: fedmq.Event) -> None:
        if isinstance(event, fedmq.Blocked):
            holder[0].cancel().addBoth(stopped.append)

    consumer, clock, broker, _ = make_consumer(on_event=on_event)
    holder.append(consumer)
    consumer.start()
    broker.block("alarm")
    clock.run_until(lambda: stopped == [None])
    assert consumer.state == "stopped"


def test_publish_from_an_event_handler_is_confirmed_without_waiting_on_itself():
    confirmed: list[Any] = []
    holder: list[Consumer] = []

    def on_event(event: fedmq.Event) -> None:
        if isinstance(event, fedmq.Connected):
            message = Message({"hello": "handler"}, "audit")
            holder[0].publish(message, exchange="").addBoth(confirmed.append)

    consumer, clock, broker, _ = make_consumer(on_event=on_event)
    broker.declare_queue("audit")
    holder.append(consumer)
    consumer.start()
    clock.run_until(lambda: confirmed == [None])
    assert [m.body for m in broker.ready("audit")] == [{"hello": "handler"}]


# --- the slow-consumer watermarks ----------------------------------------------------------


def test_the_watch_emits_high_once_at_the_high_watermark_and_normal_once_at_the_low():
    clock = task.Clock()
    backlog = [0]
    events: list[fedmq.Event] = []
    watch = SlowConsumerWatch(lambda: backlog[0], 10, 2, 1.0, clock, events.append)
    watch.start()
    for value in (5, 9, 10, 30, 3, 2, 1, 0, 10):
        backlog[0] = value
        clock.advance(1)
    assert events == [
        fedmq.SlowConsumerHigh(10, 10),
        fedmq.SlowConsumerNormal(2, 2),
        fedmq.SlowConsumerHigh(10, 10),
    ]
    watch.stop()
    backlog[0] = 0
    clock.advance(5)
    assert len(events) == 3
    assert clock.getDelayedCalls() == []


def test_without_a_high_watermark_the_backlog_is_never_measured():
    clock = task.Clock()
    measured: list[int] = []
    watch = SlowConsumerWatch(lambda: measured.append(1) or 0, 0, 0, 1.0, clock, print)
    watch.start()
    clock.advance(10)
    assert measured == []
    assert clock.getDelayedCalls() == []


def test_a_consumer_whose_backlog_grows_past_slow_consumer_high_is_told_then_told_normal():
    release = threading.Event()

    def callback(message: Message) -> None:
        release.wait(10)

    consumer, clock, broker, events = make_consumer(
        callback, slow_consumer_high=5, slow_consumer_low=1, slow_consumer_interval=0.5
    )
    consumer.start()
    for n in range(8):
        broker.publish(Message({"n": n}, "orders"), exchange="")
    clock.run_until(lambda: consumer.in_flight == 8)
    clock.advance(0.5)
    assert [e for e in events if e.kind.startswith("slow")] == [fedmq.SlowConsumerHigh(7, 5)]
    release.set()
    clock.run_until(lambda: consumer.in_flight == 0)
    clock.advance(0.5)
    assert [e for e in events if e.kind.startswith("slow")] == [
        fedmq.SlowConsumerHigh(7, 5),
        fedmq.SlowConsumerNormal(0, 1),
    ]
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped")
    assert clock.getDelayedCalls() == []


# --- queue events ---------------------------------------------------------------------------


def test_a_queue_that_cannot_be_consumed_again_is_told_with_why():
    """Consuming again can fail without losing the channel (a timeout): the holds say so."""
    holds = Holds([("orders", False), ("", False)])
    events: list[fedmq.Event] = []
    QueueEvents(holds, events.append, lambda: None, lambda: None)
    holds.reconsume_failed("orders", TimeoutError("consuming from queue 'orders' timed out"))
    assert events == [
        fedmq.QueueReopenFailed("orders", "consuming from queue 'orders' timed out"),
    ]


def test_queue_events_follow_the_holds_and_name_the_reasons():
    holds = Holds([("orders", False)])
    events: list[fedmq.Event] = []
    health = ["disk full"]
    QueueEvents(holds, events.append, lambda: health[0], lambda: None)
    holds.hold("orders", "paused")
    holds.hold("orders", "over max_unacked_bytes")
    holds.hold("orders", "host unhealthy")
    holds.release("orders", "host unhealthy")
    holds.release("orders", "paused")
    holds.release("orders", "over max_unacked_bytes")
    assert events == [
        fedmq.QueuePaused("orders", ("paused",)),
        fedmq.QueuePaused("orders", ("over max_unacked_bytes", "paused")),
        fedmq.QueueSuspended("orders", "disk full"),
        fedmq.QueuePaused("orders", ("over max_unacked_bytes", "paused")),
        fedmq.QueuePaused("orders", ("over max_unacked_bytes",)),
        fedmq.QueueResumed("orders"),
    ]


def test_a_queue_deleted_while_paused_is_told_as_reopen_failed_when_resumed():
    consumer, clock, broker, events = make_consumer(queues={"orders": {}, "audit": {}})
    consumer.start()
    consumer.pause("orders")
    broker.delete_queue("orders")
    consumer.resume("orders")
    [failed] = [e for e in events if isinstance(e, fedmq.QueueReopenFailed)]
    assert failed.queue == "orders"
    assert "NOT_FOUND" in failed.reason
    # The broker closed the channel for it: the consumer reconnects, which declares it again.
    clock.run_until(lambda: consumer.stats.reconnects == 1)
    assert broker.consumer_count("orders") == 1


def test_a_marked_queue_added_while_the_host_is_unhealthy_is_told_suspended_and_stays_so():
    """The hold the host's ill health adds is told after the addition, to every listener."""
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    broker.declare_queue("late")
    health = fedmq.HealthMonitor()
    events: list[fedmq.Event] = []
    settings = config_from_mapping({"amqp_url": "amqp://in-memory/", "queues": {"orders": {}}})
    consumer = Consumer(
        settings,
        lambda m: None,
        reactor=clock,
        connect=broker.connect,
        on_event=events.append,
        health=health,
    )
    heard: list[tuple[str, bool, frozenset[str]]] = []
    consumer.add_queue_listener(lambda *change: heard.append(change))
    consumer.start()
    health.set_unhealthy("disk full")
    added = consumer.add_queue(QueueConfig("late", suspend_on_bad_host_health=True))
    assert added is not None
    clock.run_until(lambda: added.called)
    told = [event for event in events if event.kind.startswith("queue")]
    assert told == [fedmq.QueueSuspended("late", "disk full")]
    assert heard == [
        ("late", True, frozenset()),
        ("late", False, frozenset({"host unhealthy"})),
    ]
    assert consumer.queue_states()["late"] == fedmq.QueueState(False, frozenset({"host unhealthy"}))
    assert broker.consumer_count("late") == 0
