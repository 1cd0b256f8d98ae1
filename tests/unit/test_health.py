"""Host health: the monitor, the poller of health_check on a Clock, and a suspended consumer.

The consumer runs on :class:`fedmq.testing.InMemoryBroker` with a
:class:`~fedmq.testing.ThreadedClock`: the check's thread answers through
``callFromThread``, which the test runs when it says; time moves only
with ``advance()``.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from twisted.internet import task

import fedmq
from fedmq import Message
from fedmq._health import HealthPoller
from fedmq.config import QueueConfig, config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import ConfigurationError
from fedmq.testing import InMemoryBroker, ThreadedClock

# --- what health_check may name (looked up by the tests through the config) -------------

#: What check() returns or raises next; the tests set it.
ANSWER: list[Any] = [True]
#: check() waits for this before answering, when it is not set.
GATE = threading.Event()
CALLS: list[int] = []


def check() -> Any:
    CALLS.append(1)
    GATE.wait(10)
    answer = ANSWER[0]
    if isinstance(answer, BaseException):
        raise answer
    return answer


not_callable = 42


@pytest.fixture(autouse=True)
def _reset_check() -> Any:
    ANSWER[:] = [True]
    CALLS.clear()
    GATE.set()
    yield
    GATE.set()


# --- the monitor -----------------------------------------------------------------------


def test_a_monitor_starts_healthy_and_tells_listeners_of_each_change_once():
    monitor = fedmq.HealthMonitor()
    heard: list[tuple[bool, str | None]] = []
    monitor.add_listener(lambda healthy, reason: heard.append((healthy, reason)))
    assert monitor.healthy
    assert monitor.reason is None
    monitor.set_healthy()
    monitor.set_unhealthy("disk full")
    monitor.set_unhealthy("disk full")
    monitor.set_unhealthy("disk still full")
    monitor.set_healthy()
    monitor.set_healthy()
    assert heard == [(False, "disk full"), (False, "disk still full"), (True, None)]
    assert repr(monitor) == "<HealthMonitor healthy>"
    monitor.set_unhealthy("")
    assert monitor.reason == "the host is unhealthy"
    assert repr(monitor) == "<HealthMonitor unhealthy: the host is unhealthy>"


# --- the poller ------------------------------------------------------------------------


def make_poller(
    interval: float = 10, timeout: float = 5
) -> tuple[HealthPoller, fedmq.HealthMonitor, ThreadedClock]:
    clock = ThreadedClock()
    monitor = fedmq.HealthMonitor()
    poller = HealthPoller(check, "tests:check", monitor, interval, timeout, clock, clock)
    return poller, monitor, clock


def test_the_check_is_called_at_once_then_every_interval_and_its_answer_is_the_health():
    poller, monitor, clock = make_poller()
    ANSWER[0] = False
    poller.start()
    clock.run_until(lambda: not monitor.healthy)
    assert monitor.reason == "the health check tests:check returned a false value"
    ANSWER[0] = "yes"
    clock.advance(9.9)
    assert len(CALLS) == 1
    clock.advance(0.1)
    clock.run_until(lambda: monitor.healthy)
    assert len(CALLS) == 2
    poller.stop()
    assert clock.getDelayedCalls() == []


def test_a_check_that_raises_makes_the_host_unhealthy_and_says_why():
    poller, monitor, clock = make_poller()
    ANSWER[0] = OSError("no space left on device")
    poller.start()
    clock.run_until(lambda: not monitor.healthy)
    assert monitor.reason == (
        "the health check tests:check raised OSError: no space left on device"
    )
    poller.stop()


def test_a_check_that_does_not_answer_in_time_makes_the_host_unhealthy_and_is_not_stacked():
    poller, monitor, clock = make_poller(interval=2, timeout=3)
    GATE.clear()
    poller.start()
    clock.advance(2.9)
    assert monitor.healthy
    clock.advance(0.1)
    assert not monitor.healthy
    assert monitor.reason == "the health check tests:check did not answer within 3 s"
    clock.advance(10)  # polls come due while the call hangs: none starts
    assert len(CALLS) == 1
    GATE.set()  # its late "healthy" is not taken: it came after the timeout
    clock.run_until(lambda: not poller.calling)
    assert not monitor.healthy
    clock.advance(2)  # the next call answers in time
    clock.run_until(lambda: monitor.healthy)
    assert len(CALLS) == 2
    poller.stop()


# --- a consumer whose host turns unhealthy ------------------------------------------------


def make_consumer(
    health: fedmq.HealthMonitor | None = None, **config: Any
) -> tuple[Consumer, ThreadedClock, InMemoryBroker, list[fedmq.Event]]:
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    events: list[fedmq.Event] = []
    settings = config_from_mapping(
        {
            "queues": {"orders": {"suspend_on_bad_host_health": True}, "audit": {}},
            "reconnect": {"initial_delay": 1, "jitter": 0},
            **config,
        }
    )
    consumer = Consumer(
        settings,
        lambda message: None,
        reactor=clock,
        connect=broker.connect,
        on_event=events.append,
        health=health,
    )
    return consumer, clock, broker, events


def test_an_unhealthy_host_suspends_the_consumer_until_it_is_healthy_again():
    health = fedmq.HealthMonitor()
    consumer, _, _, events = make_consumer(health)
    consumer.start()
    health.set_unhealthy("disk full")
    assert consumer.state == "suspended"
    health.set_unhealthy("disk still full")
    health.set_healthy()
    assert consumer.state == "consuming"
    assert [e for e in events if e.kind.startswith("host")] == [
        fedmq.HostUnhealthy("disk full"),
        fedmq.HostHealthy(),
    ]
    states = [e.state for e in events if isinstance(e, fedmq.StateChanged)]
    assert states == ["consuming", "suspended", "consuming"]


def test_a_host_unhealthy_before_the_start_is_suspended_from_the_first_connection():
    health = fedmq.HealthMonitor()
    health.set_unhealthy("not yet warmed up")
    consumer, _, _, events = make_consumer(health)
    consumer.start()
    assert consumer.state == "suspended"
    assert events[0] == fedmq.HostUnhealthy("not yet warmed up")


def test_an_unhealthy_host_holds_only_the_marked_queues_and_tells_each():
    health = fedmq.HealthMonitor()
    consumer, _, broker, events = make_consumer(health)
    consumer.start()
    health.set_unhealthy("disk full")
    assert (broker.consumer_count("orders"), broker.consumer_count("audit")) == (0, 1)
    assert consumer.queue_states()["orders"].reasons == {"host unhealthy"}
    health.set_healthy()
    assert (broker.consumer_count("orders"), broker.consumer_count("audit")) == (1, 1)
    assert [e for e in events if not isinstance(e, fedmq.StateChanged)][1:] == [
        fedmq.HostUnhealthy("disk full"),
        fedmq.QueueSuspended("orders", "disk full"),
        fedmq.HostHealthy(),
        fedmq.QueueResumed("orders"),
    ]


def test_a_queue_paused_by_the_user_stays_paused_when_the_host_is_healthy_again():
    health = fedmq.HealthMonitor()
    consumer, _, broker, events = make_consumer(health)
    consumer.start()
    consumer.pause("orders")
    health.set_unhealthy("disk full")
    health.set_healthy()
    assert broker.consumer_count("orders") == 0
    assert consumer.queue_states()["orders"].reasons == {"paused"}
    consumer.resume("orders")
    assert broker.consumer_count("orders") == 1
    told = [e for e in events if e.kind.startswith("queue")]
    assert told == [
        fedmq.QueuePaused("orders", ("paused",)),
        fedmq.QueueSuspended("orders", "disk full"),
        fedmq.QueuePaused("orders", ("paused",)),
        fedmq.QueueResumed("orders"),
    ]


def test_pause_and_resume_from_an_event_handler_work_without_waiting_on_themselves():
    health = fedmq.HealthMonitor()
    holder: list[Consumer] = []

    def on_event(event: fedmq.Event) -> None:
        if isinstance(event, fedmq.HostUnhealthy):
            holder[0].pause("audit")
        elif isinstance(event, fedmq.HostHealthy):
            holder[0].resume("audit")

    consumer, _, broker, events = make_consumer(health)
    consumer.add_event_handler(on_event)
    holder.append(consumer)
    consumer.start()
    health.set_unhealthy("disk full")
    assert (broker.consumer_count("orders"), broker.consumer_count("audit")) == (0, 0)
    health.set_healthy()
    assert (broker.consumer_count("orders"), broker.consumer_count("audit")) == (1, 1)
    told = [e for e in events if not isinstance(e, fedmq.StateChanged)][1:]
    # What a handler causes comes once the event that caused it reached every handler.
    assert told == [
        fedmq.HostUnhealthy("disk full"),
        fedmq.QueuePaused("audit", ("paused",)),
        fedmq.QueueSuspended("orders", "disk full"),
        fedmq.HostHealthy(),
        fedmq.QueueResumed("audit"),
        fedmq.QueueResumed("orders"),
    ]


def test_a_marked_queue_added_while_the_host_is_unhealthy_is_suspended_at_once():
    health = fedmq.HealthMonitor()
    consumer, clock, broker, events = make_consumer(health, queues={"audit": {}})
    broker.declare_queue("late")
    consumer.start()
    health.set_unhealthy("disk full")
    assert consumer.state == "consuming"  # no queue marked yet
    added: list[Any] = []
    queue = QueueConfig(name="late", suspend_on_bad_host_health=True)
    consumer.add_queue(queue).addBoth(added.append)
    clock.run_until(lambda: added == [None])
    assert broker.consumer_count("late") == 0
    assert consumer.state == "suspended"
    assert fedmq.QueueSuspended("late", "disk full") in events
    health.set_healthy()
    assert broker.consumer_count("late") == 1


def test_a_reconnect_while_unhealthy_stays_suspended():
    health = fedmq.HealthMonitor()
    consumer, clock, broker, events = make_consumer(health)
    consumer.start()
    health.set_unhealthy("disk full")
    broker.drop_connections()
    clock.run_until(lambda: consumer.stats.reconnects == 1)
    assert consumer.state == "suspended"
    assert (broker.consumer_count("orders"), broker.consumer_count("audit")) == (0, 1)
    reopened = [e for e in events if isinstance(e, fedmq.QueueReopened)]
    assert reopened == [fedmq.QueueReopened("audit")]
    broker.block("alarm")
    assert consumer.state == "blocked"
    broker.block(None)
    assert consumer.state == "suspended"
    health.set_healthy()
    assert consumer.state == "consuming"
    assert broker.consumer_count("orders") == 1


def test_a_health_check_with_no_queue_marked_only_tells_events():
    health = fedmq.HealthMonitor()
    consumer, _, _, events = make_consumer(health, queues={"orders": {}})
    consumer.start()
    health.set_unhealthy("disk full")
    assert consumer.state == "consuming"
    assert fedmq.HostUnhealthy("disk full") in events


def test_the_monitor_told_from_another_thread_changes_the_consumer_on_the_reactor_thread():
    health = fedmq.HealthMonitor()
    consumer, clock, _, _ = make_consumer(health)
    consumer.start()
    worker = threading.Thread(target=health.set_unhealthy, args=("from a thread",))
    worker.start()
    worker.join(10)
    assert consumer.state == "consuming"  # not yet: the call waits for the reactor thread
    clock.run_until(lambda: consumer.state == "suspended")


def test_the_configured_health_check_suspends_and_resumes_the_consumer():
    consumer, clock, _, events = make_consumer(
        health_check="tests.unit.test_health:check", health_interval=5, health_timeout=1
    )
    ANSWER[0] = False
    consumer.start()
    clock.run_until(lambda: consumer.state == "suspended")
    assert consumer.health.reason == (
        "the health check tests.unit.test_health:check returned a false value"
    )
    ANSWER[0] = True
    clock.advance(5)
    clock.run_until(lambda: consumer.state == "consuming")
    assert [e.kind for e in events if e.kind.startswith("host")] == [
        "host_unhealthy",
        "host_healthy",
    ]
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped")
    assert clock.getDelayedCalls() == []  # the poller stopped with the consumer


def test_a_suspended_consumer_refuses_to_publish_when_told_to():
    health = fedmq.HealthMonitor()
    consumer, clock, broker, _ = make_consumer(health, fail_publish_when_suspended=True)
    broker.declare_queue("out")
    consumer.start()
    health.set_unhealthy("disk full")
    failures: list[Any] = []
    consumer.publish(Message("x", "out"), exchange="").addErrback(failures.append)
    [failure] = failures
    assert failure.check(fedmq.ConsumerSuspended)
    assert isinstance(failure.value, fedmq.PublishError)
    assert "disk full" in str(failure.value)
    health.set_healthy()
    sent: list[Any] = []
    consumer.publish(Message("y", "out"), exchange="").addBoth(sent.append)
    clock.run_until(lambda: sent == [None])
    assert [m.body for m in broker.ready("out")] == ["y"]


def test_a_suspended_consumer_publishes_as_usual_by_default():
    health = fedmq.HealthMonitor()
    consumer, clock, broker, _ = make_consumer(health)
    broker.declare_queue("out")
    consumer.start()
    health.set_unhealthy("disk full")
    sent: list[Any] = []
    consumer.publish(Message("x", "out"), exchange="").addBoth(sent.append)
    clock.run_until(lambda: sent == [None])


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ({"health_check": "not a path"}, "health_check must look like 'package.module:callable'"),
        ({"health_interval": 0}, "health_interval must be more than 0 seconds"),
        ({"health_timeout": -1}, "health_timeout must be more than 0 seconds"),
        ({"health_interval": "10"}, "health_interval must be a number"),
        ({"slow_consumer_high": -1}, "slow_consumer_high must be at least 0"),
        (
            {"slow_consumer_high": 5, "slow_consumer_low": 5},
            "slow_consumer_low (5) must be below slow_consumer_high (5)",
        ),
        ({"slow_consumer_interval": 0}, "slow_consumer_interval must be more than 0 seconds"),
        ({"fail_publish_when_suspended": 1}, "fail_publish_when_suspended must be a boolean"),
        (
            {"queues": {"q": {"suspend_on_bad_host_health": "yes"}}},
            "queues.q.suspend_on_bad_host_health must be a boolean",
        ),
    ],
)
def test_a_bad_health_or_watermark_key_is_a_configuration_error_naming_it_and_the_file(
    keys: dict[str, Any], error: str
):
    with pytest.raises(ConfigurationError) as raised:
        config_from_mapping(keys, source="/etc/fedmq/config.toml")
    assert str(raised.value).startswith("/etc/fedmq/config.toml: ")
    assert error in str(raised.value)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (
            "tests.unit.no_such_module:check",
            "module 'tests.unit.no_such_module' cannot be imported",
        ),
        ("tests.unit.test_health:missing", "has no attribute 'missing'"),
        ("tests.unit.test_health:not_callable", "is not callable"),
    ],
)
def test_a_health_check_that_cannot_be_loaded_fails_the_consumer_before_it_connects(
    path: str, error: str
):
    settings = config_from_mapping(
        {"health_check": path, "queues": {"orders": {}}}, source="/etc/fedmq/config.toml"
    )
    broker = InMemoryBroker()
    with pytest.raises(ConfigurationError) as raised:
        Consumer(settings, lambda m: None, reactor=ThreadedClock(), connect=broker.connect)
    assert str(raised.value).startswith("/etc/fedmq/config.toml: health_check: ")
    assert error in str(raised.value)
    assert broker.attempts == []


def test_the_check_runs_on_the_clock_given_and_answers_through_the_reactor():
    """With clock= apart from the reactor, the interval passes on the clock; answers hop."""
    reactor = ThreadedClock()
    clock = task.Clock()
    broker = InMemoryBroker()
    settings = config_from_mapping(
        {
            "queues": {"orders": {"suspend_on_bad_host_health": True}},
            "health_check": "tests.unit.test_health:check",
            "health_interval": 30,
        }
    )
    consumer = Consumer(
        settings, lambda m: None, reactor=reactor, clock=clock, connect=broker.connect
    )
    ANSWER[0] = False
    consumer.start()
    reactor.run_until(lambda: consumer.state == "suspended")
    assert broker.consumer_count("orders") == 0
    ANSWER[0] = True
    reactor.advance(30)  # the reactor's time is not the consumer's
    assert len(CALLS) == 1
    clock.advance(30)
    reactor.run_until(lambda: consumer.state == "consuming")
    assert len(CALLS) == 2
    assert broker.consumer_count("orders") == 1


def test_ready_answers_503_with_the_reason_and_the_state_gauge_shows_suspended():
    from twisted.internet.testing import MemoryReactorClock

    from fedmq.monitoring import MonitoringService
    from tests.unit.fakes import FakeConsumerService
    from tests.unit.test_monitoring import metrics, request, sample

    health = fedmq.HealthMonitor()
    consumer, _, _, _ = make_consumer(health, monitoring={"port": 0})
    consumer.start()
    reactor = MemoryReactorClock()
    service = MonitoringService(consumer.config, FakeConsumerService(consumer), reactor)
    service.startService()
    health.set_unhealthy("disk full")
    response = request(reactor, "/ready")
    assert response.status == 503
    assert response.json() == {"state": "suspended", "reason": "the host is unhealthy: disk full"}
    families = metrics(reactor)
    assert sample(families, "fedmq_connection_state", "fedmq_connection_state", state="suspended")
    health.set_healthy()
    assert request(reactor, "/ready").status == 200


# --- changes from several threads, and queues removed meanwhile ------------------------------


@pytest.mark.parametrize(
    ("first", "second", "state", "orders_consumers"),
    [
        (("set_unhealthy", "disk full"), ("set_healthy",), "consuming", 1),
        (("set_healthy",), ("set_unhealthy", "disk full again"), "suspended", 0),
    ],
)
def test_the_last_health_change_wins_when_two_threads_changes_reach_the_reactor_swapped(
    first: tuple[str, ...], second: tuple[str, ...], state: str, orders_consumers: int
):
    """A thread that changed the monitor first may hand its change over last: it is not undone.

    The first thread changes the monitor, then is held up before telling
    the consumer; the second (the reactor's) changes it again and tells at
    once; the first one's word reaches the reactor thread after that.
    """
    health = fedmq.HealthMonitor()
    if first[0] == "set_healthy":
        health.set_unhealthy("disk full")
    telling, go_on = threading.Event(), threading.Event()
    reactor_thread = threading.get_ident()

    def held_up(_healthy: bool, _reason: str | None) -> None:
        if threading.get_ident() != reactor_thread:
            telling.set()
            go_on.wait(10)

    health.add_listener(held_up)  # told before the consumer
    consumer, clock, broker, _ = make_consumer(health)
    consumer.start()
    worker = threading.Thread(target=getattr(health, first[0]), args=first[1:])
    worker.start()
    assert telling.wait(10)
    getattr(health, second[0])(*second[1:])
    go_on.set()
    worker.join(10)
    clock.run_pending()  # the first thread's word, last
    assert consumer.state == state
    assert broker.consumer_count("orders") == orders_consumers
    assert health.healthy == (state == "consuming")


def test_a_marked_queue_removed_and_added_again_while_the_host_is_unhealthy_stays_suspended():
    health = fedmq.HealthMonitor()
    consumer, clock, broker, events = make_consumer(health)
    consumer.start()
    health.set_unhealthy("disk full")
    removed = consumer.remove_queue("orders")
    assert removed is not None
    clock.run_until(lambda: removed.called)
    added = consumer.add_queue(QueueConfig("orders", suspend_on_bad_host_health=True))
    assert added is not None
    clock.run_until(lambda: added.called)
    assert consumer.queue_states()["orders"].reasons == {"host unhealthy"}
    assert broker.consumer_count("orders") == 0
    assert consumer.state == "suspended"
    told = [e for e in events if e.kind == "queue_suspended"]
    assert told == [fedmq.QueueSuspended("orders", "disk full")] * 2
    health.set_healthy()
    assert broker.consumer_count("orders") == 1
    assert consumer.state == "consuming"
