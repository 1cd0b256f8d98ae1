"""Flow control on the real Consumer and the in-memory broker: holds, pause/resume, byte budget.

The consumer and the broker share one ThreadedClock: results from callback
threads run when the test says. No sockets, no sleeps.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer

from fedmq import Message, Properties, QueueState, WouldDeadlock
from fedmq._flow import OVER_BYTES, PAUSED, ByteBudget, Holds
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.exceptions import BrokerError, ConfigurationError, ConnectionFailed, DeclarationError
from fedmq.testing import InMemoryBroker, ThreadedClock

WAIT = 10.0


class Gate:
    """A callback whose runs wait until the test opens the gate; it records each body."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.seen: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self.lock:
            self.seen.append(message.body)
        if not self.open.wait(WAIT):
            raise RuntimeError("the gate was never opened")


class Harness:
    """A consumer of "orders" and "invoices" (bound to amq.topic) on an in-memory broker."""

    def __init__(
        self,
        callback: Any,
        queues: dict[str, Any] | None = None,
        *,
        slow: SlowAnswers | None = None,
        **config: Any,
    ) -> None:
        self.clock = ThreadedClock()
        self.broker = InMemoryBroker(self.clock)
        connect = self.broker.connect if slow is None else slow.connect_to(self.broker, self.clock)
        queues = queues if queues is not None else {"orders": {}, "invoices": {}}
        settings = {
            "amqp_url": "amqp://in-memory/",
            "queues": queues,
            "bindings": [
                {"queue": name, "exchange": "amq.topic", "routing_keys": [f"{name}.#"]}
                for name in queues
            ],
            **config,
        }
        self.consumer = Consumer(
            config_from_mapping(settings), callback, reactor=self.clock, connect=connect
        )
        self.changes: list[tuple[str, bool, frozenset[str]]] = []
        self.consumer.add_queue_listener(
            lambda queue, consuming, reasons: self.changes.append((queue, consuming, reasons))
        )
        started = self.consumer.start()
        self.clock.run_until(lambda: started.called)

    def until(self, done: Callable[[], bool]) -> None:
        self.clock.run_until(done, timeout=WAIT)

    def publish(self, topic: str, count: int, body: Any = "m") -> None:
        for n in range(count):
            self.broker.publish(Message(body if body != "m" else f"{topic}-{n}", topic))

    def stop(self) -> None:
        self.consumer.cancel()
        self.until(lambda: self.consumer.state == "stopped")


# --- the hold bookkeeping --------------------------------------------------------


def test_a_queue_consumes_only_once_every_hold_reason_is_released():
    """Two reasons hold a queue; releasing one leaves it held, releasing both frees it."""
    holds = Holds([("orders", False), ("invoices", False)])
    seen: list[tuple[str, bool, frozenset[str]]] = []
    holds.add_listener(lambda *change: seen.append(change))
    holds.hold("orders", PAUSED)
    holds.hold("orders", "host unhealthy")
    holds.release("orders", PAUSED)
    assert not holds.consumes("orders")
    assert holds.consumes("invoices")
    holds.release("orders", "host unhealthy")
    assert holds.consumes("orders")
    assert seen == [
        ("orders", False, frozenset({PAUSED})),
        ("orders", False, frozenset({PAUSED, "host unhealthy"})),
        ("orders", False, frozenset({"host unhealthy"})),
        ("orders", True, frozenset()),
    ]


def test_holding_every_queue_holds_each_one_and_a_repeat_changes_nothing():
    """hold(None, ...) holds all queues; holding again for the same reason tells no one."""
    holds = Holds([("orders", False), ("invoices", True)])
    seen: list[Any] = []
    holds.add_listener(lambda *change: seen.append(change))
    holds.hold(None, PAUSED)
    assert seen == [("orders", False, frozenset({PAUSED}))]  # invoices started paused
    assert holds.states() == {
        "orders": QueueState(False, frozenset({PAUSED})),
        "invoices": QueueState(False, frozenset({PAUSED})),
    }
    holds.release(None, PAUSED)
    assert holds.states()["invoices"] == QueueState(True, frozenset())


def test_a_listener_that_raises_does_not_stop_the_others():
    """One failing listener is logged; the next is still told."""
    holds = Holds([("orders", False)])
    seen: list[Any] = []

    def broken(*_: Any) -> None:
        raise RuntimeError("listener bug")

    holds.add_listener(broken)
    holds.add_listener(lambda *change: seen.append(change))
    holds.hold("orders", PAUSED)
    assert seen == [("orders", False, frozenset({PAUSED}))]


def test_the_byte_budget_holds_over_its_limit_and_releases_at_half():
    """Over max_unacked_bytes the queue is held; at or under half of it, released."""
    holds = Holds([("orders", False)])
    budget = ByteBudget("orders", 1000, holds.hold, holds.release)
    budget.received(600)
    budget.received(400)
    assert holds.consumes("orders")  # exactly at the limit: not over it
    budget.received(1)
    assert holds.reasons("orders") == {OVER_BYTES}
    budget.settled(400)
    assert not holds.consumes("orders")  # 601 left, over the low-water mark of 500
    budget.settled(101)
    assert holds.consumes("orders")
    budget.settled(500)
    assert budget.unsettled == 0


def test_a_budget_of_an_ended_session_holds_and_releases_nothing():
    """Results of a lost connection's callbacks still come back; its budget ignores them."""
    holds = Holds([("orders", False)])
    old = ByteBudget("orders", 100, holds.hold, holds.release)
    old.received(150)
    old.retire()
    new = ByteBudget("orders", 100, holds.hold, holds.release)
    holds.release("orders", OVER_BYTES)
    new.received(150)
    old.settled(150)
    assert holds.reasons("orders") == {OVER_BYTES}  # the new budget's hold stands
    old.received(500)
    new.settled(150)
    assert holds.consumes("orders")


# --- pause and resume on a running consumer -----------------------------------------


def test_a_paused_queue_gets_no_deliveries_and_resume_restarts_it():
    """Pausing "orders" cancels its consumer; "invoices" goes on; resume delivers the rest."""
    seen: list[str] = []
    h = Harness(lambda message: seen.append(message.body))
    d = h.consumer.pause("orders")
    assert d is not None
    h.until(lambda: d.called)
    assert h.broker.consumer_count("orders") == 0
    assert h.broker.consumer_count("invoices") == 1
    h.publish("orders.new", 3)
    h.publish("invoices.new", 2)
    h.until(lambda: len(seen) == 2)
    assert sorted(seen) == ["invoices.new-0", "invoices.new-1"]
    assert h.broker.queue_depth("orders") == 3
    assert h.consumer.queue_states()["orders"] == QueueState(False, frozenset({PAUSED}))
    h.consumer.resume("orders")
    h.until(lambda: len(seen) == 5)
    assert h.broker.queue_depth("orders") == 0
    assert h.changes == [
        ("orders", False, frozenset({PAUSED})),
        ("orders", True, frozenset()),
    ]
    h.stop()


def test_pausing_sends_unstarted_deliveries_back_and_lets_the_started_one_finish():
    """Concurrency 1: the message running is acked; the ones prefetched go back unacked."""
    gate = Gate()
    h = Harness(gate, qos={"prefetch_count": 10})
    h.publish("orders.new", 5)
    h.until(lambda: len(gate.seen) == 1 and h.broker.unacked("orders") == 5)
    d = h.consumer.pause("orders")
    assert d is not None
    h.until(lambda: d.called)
    assert h.broker.unacked("orders") == 1  # the one running
    assert len(h.broker.ready("orders")) == 4
    gate.open.set()
    h.until(lambda: h.consumer.counts["acked"] == 1)
    assert gate.seen == ["orders.new-0"]
    assert h.consumer.in_flight == 0
    h.consumer.resume("orders")
    h.until(lambda: h.consumer.counts["acked"] == 5)
    h.stop()


def test_a_queue_configured_paused_starts_without_a_consumer():
    """A queue with `paused = true` is declared and bound, but consumed only after resume."""
    seen: list[str] = []
    h = Harness(lambda message: seen.append(message.body), queues={"orders": {"paused": True}})
    h.publish("orders.new", 2)
    assert h.broker.consumer_count("orders") == 0
    assert h.broker.queue_depth("orders") == 2
    h.consumer.resume()
    h.until(lambda: len(seen) == 2)
    h.stop()


def test_a_pause_outlives_a_reconnect():
    """The session opened after a dropped connection does not consume the paused queue."""
    seen: list[str] = []
    h = Harness(lambda message: seen.append(message.body))
    h.consumer.pause("orders")
    h.until(lambda: h.broker.consumer_count("orders") == 0)
    h.broker.drop_connections()
    h.until(lambda: h.consumer.state == "consuming" and h.consumer.stats.reconnects == 1)
    h.until(lambda: h.consumer.state == "consuming" and h.broker.consumer_count("invoices") == 1)
    assert h.broker.consumer_count("orders") == 0
    h.publish("orders.new", 1)
    h.publish("invoices.new", 1)
    h.until(lambda: seen == ["invoices.new-0"])
    h.consumer.resume("orders")
    h.until(lambda: len(seen) == 2)
    h.stop()


def test_pause_from_a_sync_callback_returns_none_and_happens_on_the_reactor():
    """A callback pausing its own queue neither waits nor deadlocks; the pause takes effect."""
    results: list[Any] = []

    def callback(message: Message) -> None:
        results.append(h.consumer.pause("orders"))

    h = Harness(callback, concurrency=2, qos={"prefetch_count": 4})
    h.publish("orders.new", 1)
    h.until(lambda: h.broker.consumer_count("orders") == 0 and h.consumer.counts["acked"] == 1)
    assert results == [None]
    h.stop()


def test_an_unknown_queue_name_is_refused_in_the_callers_thread():
    """pause("nope") raises ValueError at once, naming the queue."""
    h = Harness(lambda message: None)
    with pytest.raises(ValueError, match="'nope'"):
        h.consumer.pause("nope")
    h.stop()


# --- the byte budget on a running consumer -----------------------------------------


def test_a_queue_over_its_byte_budget_pauses_and_resumes_under_half():
    """max_unacked_bytes 250, bodies of 100 bytes: the third delivery pauses the queue."""
    gate = Gate()
    h = Harness(
        gate,
        queues={"orders": {"max_unacked_bytes": 250}},
        decode=False,
        qos={"prefetch_count": 10},
    )
    for _ in range(6):
        h.broker.publish_data("amq.topic", "orders.new", b"x" * 100, Properties())
    h.until(lambda: h.broker.consumer_count("orders") == 0)
    assert h.broker.unacked("orders") == 3  # 300 bytes arrived before the cancel
    assert h.consumer.queue_states()["orders"].reasons == {OVER_BYTES}
    gate.open.set()
    h.until(lambda: h.consumer.counts["acked"] == 6)
    assert (
        "orders",
        True,
        frozenset(),
    ) in h.changes
    h.stop()


# --- stopping from a callback ------------------------------------------------------------


def test_a_callback_waiting_for_its_own_drain_gets_an_error_and_the_consumer_stops():
    """cancel() from a callback has already failed with WouldDeadlock; the stop goes on."""
    outcomes: list[Any] = []

    def callback(message: Message) -> None:
        done = threading.Event()
        h.consumer.cancel().addBoth(lambda result: (outcomes.append(result), done.set()))
        assert done.wait(WAIT)

    h = Harness(callback, concurrency=2, qos={"prefetch_count": 4})
    h.publish("orders.new", 1)
    h.until(lambda: h.consumer.state == "stopped")
    [outcome] = outcomes
    assert outcome.check(WouldDeadlock)
    assert h.consumer.result.called


def test_what_an_async_callback_schedules_for_later_is_not_the_callback():
    """A cancel() the callback's loop runs after the callback is a normal stop, not an error.

    Under Twisted's asyncio reactor every reactor call a task makes runs in a copy
    of the task's context: a stop decided there must not count as the callback's own.
    """
    results: list[Any] = []

    async def callback(message: Message) -> None:
        asyncio.get_running_loop().call_soon(lambda: results.append(h.consumer.cancel()))

    h = Harness(callback)
    h.publish("orders.new", 1)
    h.until(lambda: bool(results) and results[0].called)
    outcomes: list[Any] = []
    results[0].addBoth(outcomes.append)
    assert outcomes == [None]
    assert h.consumer.state == "stopped"


def test_cancel_from_another_thread_stops_the_consumer():
    """A thread of the application's cancels; the Deferred fires once stopped."""
    h = Harness(lambda message: None)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(h.consumer.cancel()))
    thread.start()
    thread.join(WAIT)
    h.until(lambda: results and results[0].called)
    assert h.consumer.state == "stopped"


def test_a_bad_queue_option_is_a_configuration_error_naming_the_key():
    """max_unacked_bytes = 0 is refused with the key and the file named."""
    with pytest.raises(ConfigurationError, match=r"queues\.orders\.max_unacked_bytes"):
        config_from_mapping({"queues": {"orders": {"max_unacked_bytes": 0}}})
    with pytest.raises(ConfigurationError, match=r"queues\.orders\.prefetch_count"):
        config_from_mapping({"queues": {"orders": {"prefetch_count": -1}}})


def test_holds_act_at_once_between_sessions():
    """With no session in charge, a hold returns a fired Deferred."""
    holds = Holds([("orders", False)])
    d = holds.hold("orders", PAUSED)
    assert isinstance(d, defer.Deferred)
    assert d.called


# --- changing queues while running --------------------------------------------------------


def test_an_added_queue_is_declared_bound_consumed_and_restored_after_a_reconnect():
    """add_queue("refunds", bindings): it consumes now, and again on the next connection."""
    seen: list[str] = []
    h = Harness(lambda message: seen.append(message.body), queues={"orders": {}})
    d = h.consumer.add_queue(
        "refunds", bindings=[{"exchange": "amq.topic", "routing_keys": ["refunds.#"]}]
    )
    assert d is not None
    h.until(lambda: d.called)
    assert h.broker.consumer_count("refunds") == 1
    assert "refunds.dead" in h.broker.queues  # its retry queues came with it
    h.publish("refunds.new", 1)
    h.until(lambda: seen == ["refunds.new-0"])
    h.broker.drop_connections()
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    h.until(lambda: h.broker.consumer_count("refunds") == 1)
    h.publish("refunds.new", 2)
    h.until(lambda: len(seen) == 3)
    assert h.changes[0] == ("refunds", True, frozenset())
    h.stop()


def test_a_removed_queue_returns_its_unstarted_deliveries_and_stays_removed():
    """remove_queue: the running message is acked, the others go back; no consumer later."""
    gate = Gate()
    h = Harness(gate, qos={"prefetch_count": 10})
    h.publish("orders.new", 4)
    h.until(lambda: len(gate.seen) == 1 and h.consumer.in_flight == 4)
    d = h.consumer.remove_queue("orders")
    assert d is not None
    h.until(lambda: d.called)
    assert h.broker.consumer_count("orders") == 0
    assert len(h.broker.ready("orders")) == 3
    gate.open.set()
    h.until(lambda: h.consumer.counts["acked"] == 1 and h.consumer.in_flight == 0)
    assert "orders" not in h.consumer.queue_states()
    h.broker.drop_connections()
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    assert h.broker.consumer_count("orders") == 0
    assert h.broker.consumer_count("invoices") == 1
    h.stop()


def test_reconfigure_sets_the_prefetch_and_keeps_it_across_a_reconnect():
    """reconfigure(prefetch_count=2): basic.qos 2 before consuming again, on later channels too."""
    h = Harness(lambda message: None, queues={"orders": {}}, qos={"prefetch_count": 10})

    def prefetches() -> list[int]:
        return [
            channel.prefetch_count
            for connection in h.broker.connections
            for channel in connection.channels
            if channel.is_open and channel.prefetch_count
        ]

    assert prefetches() == [10]
    d = h.consumer.reconfigure("orders", prefetch_count=2)
    assert d is not None
    h.until(lambda: d.called)
    assert prefetches() == [2]
    assert h.broker.consumer_count("orders") == 1
    h.broker.drop_connections()
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    assert prefetches() == [2]
    assert h.consumer.config.queues[0].prefetch_count == 2
    h.stop()


def test_a_bad_reconfigure_or_add_queue_is_refused_in_the_callers_thread():
    """A negative prefetch or a queue already consumed raises at once; nothing changes."""
    h = Harness(lambda message: None)
    with pytest.raises(ConfigurationError, match="prefetch_count"):
        h.consumer.reconfigure("orders", prefetch_count=-1)
    with pytest.raises(ValueError, match="already consumes"):
        h.consumer.add_queue("orders")
    assert h.consumer.config.queues[0].prefetch_count is None
    h.stop()


def test_pausing_an_async_callbacks_queue_sends_its_unstarted_deliveries_back():
    """The asyncio executor hands back the paused queue's unstarted deliveries, not others'."""
    release = threading.Event()
    seen: list[str] = []

    async def callback(message: Message) -> None:
        seen.append(message.body)
        # Waiting in a thread of its own holds this one task, not the loop.
        assert await asyncio.to_thread(release.wait, WAIT)

    h = Harness(callback, qos={"prefetch_count": 10})
    h.publish("orders.new", 4)
    h.publish("invoices.new", 2)
    h.until(lambda: len(seen) == 1 and h.consumer.in_flight == 6)
    d = h.consumer.pause("orders")
    assert d is not None
    h.until(lambda: d.called)
    assert seen == ["orders.new-0"]
    assert len(h.broker.ready("orders")) == 3
    assert h.broker.ready("invoices") == []
    release.set()
    h.until(lambda: h.consumer.in_flight == 0)
    assert seen == ["orders.new-0", "invoices.new-0", "invoices.new-1"]
    h.stop()


def test_a_resume_that_cannot_consume_is_told_to_the_failure_listeners():
    """The paused queue was deleted: resuming fails, listeners hear it, a reconnect mends it."""
    failures: list[tuple[str, Exception]] = []
    seen: list[str] = []
    h = Harness(lambda message: seen.append(message.body))
    h.consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    h.consumer.pause("orders")
    h.broker.delete_queue("orders")
    resumed = h.consumer.resume("orders")
    assert resumed is not None
    outcomes: list[Any] = []
    resumed.addBoth(outcomes.append)
    h.until(lambda: failures != [] and outcomes != [])
    assert outcomes[0].check(BrokerError)  # the resume says so too, never success
    [(queue, error)] = failures
    assert queue == "orders"
    assert "orders" in str(error)
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    h.until(lambda: h.broker.consumer_count("orders") == 1)
    h.stop()


def test_a_callback_sees_would_deadlock_however_late_it_looks():
    """The refusal stays failed while the callback runs, whatever the reactor does meanwhile
    (it used to be handled on the reactor thread, racing the callback's own addErrback).
    """
    called, go = threading.Event(), threading.Event()
    seen: list[Any] = []
    refusals: list[defer.Deferred[None]] = []

    def callback(message: Message) -> None:
        refusals.append(h.consumer.cancel())
        called.set()
        assert go.wait(WAIT)
        refusals[0].addErrback(lambda failure: seen.append(failure.value))

    h = Harness(callback)
    h.publish("orders.new", 1)
    assert called.wait(WAIT)
    for _ in range(20):  # the reactor turns while the callback has not looked yet
        h.clock.run_pending()
    go.set()
    h.until(lambda: h.consumer.state == "stopped")
    [error] = seen
    assert isinstance(error, WouldDeadlock)


def test_a_refusal_the_callback_ignores_is_handled_once_it_ended():
    refusals: list[defer.Deferred[None]] = []

    def callback(message: Message) -> None:
        refusals.append(h.consumer.cancel())

    h = Harness(callback)
    h.publish("orders.new", 1)
    h.until(lambda: h.consumer.state == "stopped")
    [refusal] = refusals
    results: list[Any] = []
    refusal.addBoth(results.append)
    assert results == [None]  # its failure was handled: nothing logged as unhandled


# --- a broker that answers late ---------------------------------------------------------


class SlowAnswers:
    """A ``connect=`` for the in-memory broker whose answers come late, by the clock.

    The broker acts on each request at once (the frame is on the wire); only
    its answer (``qos-ok``, ``consume-ok``, a connection) waits the seconds
    set in :attr:`delays` when the request is made (a refused connection's
    failure too).
    """

    def __init__(self) -> None:
        self.delays = {
            "connect": 0.0,
            "qos": 0.0,
            "consume": 0.0,
            "cancel": 0.0,
            "declare_queue": 0.0,
        }

    def connect_to(self, broker: InMemoryBroker, clock: ThreadedClock) -> Callable[..., Any]:
        def late(result: Any, what: str) -> Any:
            if not self.delays[what]:
                return result
            out: defer.Deferred[Any] = defer.Deferred()
            clock.callLater(self.delays[what], lambda: out.called or out.callback(result))
            return out

        def channel(connection: Any) -> defer.Deferred[Any]:
            def wrap(chan: Any) -> Any:
                qos, consume, declare = chan.qos, chan.consume, chan.declare_queue
                cancel = chan.cancel
                chan.cancel = lambda *args: cancel(*args).addCallback(late, "cancel")
                chan.qos = lambda *args: qos(*args).addCallback(late, "qos")
                chan.consume = lambda *args: consume(*args).addCallback(late, "consume")
                chan.declare_queue = lambda *args: declare(*args).addCallback(late, "declare_queue")
                return chan

            return opened(connection).addCallback(wrap)

        def connect(config: Any = None, reactor: Any = None, url: str | None = None) -> Any:
            def wrap(connection: Any) -> Any:
                nonlocal opened
                opened = type(connection).channel
                connection.channel = lambda: channel(connection)
                return late(connection, "connect")

            def refused(failure: Any) -> Any:
                return late(failure, "connect")  # a refusal comes late too

            return broker.connect(config, reactor, url).addCallbacks(wrap, refused)

        opened: Any = None
        return connect


def test_queues_resumed_together_each_consume_under_their_own_prefetch():
    """Resuming every queue at once, qos-ok late: "invoices" gets its 50, not "orders"' 2."""
    slow = SlowAnswers()
    gate = Gate()
    h = Harness(
        gate,
        queues={"orders": {"prefetch_count": 2}, "invoices": {"prefetch_count": 50}},
        slow=slow,
    )
    h.consumer.pause()
    h.clock.run_pending()
    slow.delays["qos"] = 0.01
    resumed = h.consumer.resume()
    assert resumed is not None
    for _ in range(10):
        h.clock.advance(0.01)
    h.until(lambda: resumed.called)
    h.publish("orders.new", 5)
    h.publish("invoices.new", 5)
    h.until(lambda: h.broker.unacked("orders") == 2 and h.broker.unacked("invoices") == 5)
    gate.open.set()
    h.until(lambda: h.consumer.counts["acked"] == 10)
    h.stop()


def test_a_consume_answered_after_connect_timeout_fails_the_resume_and_leaves_no_consumer():
    """consume-ok 15 s late: the resume fails, the session is dropped, a pause then holds."""
    slow = SlowAnswers()
    seen: list[str] = []
    failures: list[tuple[str, Exception]] = []
    h = Harness(lambda message: seen.append(message.body), queues={"orders": {}}, slow=slow)
    h.consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    h.consumer.pause("orders")
    h.clock.run_pending()
    slow.delays["consume"] = 15.0
    resumed = h.consumer.resume("orders")
    assert resumed is not None
    outcomes: list[Any] = []
    resumed.addBoth(outcomes.append)
    slow.delays["consume"] = 0.0
    h.clock.advance(10.5)  # connect_timeout passes
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    h.clock.advance(5)  # the late consume-ok of the dropped channel
    [outcome] = outcomes
    assert outcome.check(BrokerError)
    assert "did not answer" in str(outcome.value)
    assert [queue for queue, _ in failures] == ["orders"]
    assert h.broker.consumer_count("orders") == 1  # the new session's, nothing orphaned
    paused = h.consumer.pause("orders")
    assert paused is not None
    h.until(lambda: paused.called)
    assert h.broker.consumer_count("orders") == 0
    h.publish("orders.new", 3)
    h.clock.advance(1)
    h.clock.run_pending()
    assert seen == []
    assert h.broker.queue_depth("orders") == 3
    h.stop()


def test_a_pause_whose_waiter_gives_up_is_still_made():
    """Cancelling a pause's Deferred while a resume holds the queue stops the wait only."""
    slow = SlowAnswers()
    failures: list[tuple[str, Exception]] = []
    h = Harness(lambda message: None, queues={"orders": {"prefetch_count": 3}}, slow=slow)
    h.consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    h.consumer.pause("orders")
    h.clock.run_pending()
    slow.delays["consume"] = 2.0
    resumed = h.consumer.resume("orders")
    paused = h.consumer.pause("orders")
    assert resumed is not None
    assert paused is not None
    paused.cancel()
    paused.addErrback(lambda failure: failure.trap(defer.CancelledError))
    h.clock.advance(2.0)
    h.until(lambda: resumed.called)
    h.clock.run_pending()
    assert h.broker.consumer_count("orders") == 0
    assert h.consumer.queue_states()["orders"] == QueueState(False, frozenset({PAUSED}))
    assert failures == []
    h.stop()


def test_a_queue_added_while_reconnecting_stays_and_the_next_connection_consumes_it():
    """add_queue on a lost connection fires at once; the queue is kept and consumed later."""
    gate = Gate()
    h = Harness(gate, queues={"orders": {}})
    h.publish("orders.new", 1)
    h.until(lambda: len(gate.seen) == 1)
    h.broker.drop_connections()  # lost while a callback runs: reconnecting until it ends
    h.clock.run_pending()
    assert h.consumer.state == "reconnecting"
    added = h.consumer.add_queue(
        "refunds", bindings=[{"exchange": "amq.topic", "routing_keys": ["refunds.#"]}]
    )
    assert added is not None
    outcomes: list[Any] = []
    added.addBoth(outcomes.append)
    assert outcomes == [None]
    gate.open.set()
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    assert [queue.name for queue in h.consumer.config.queues] == ["orders", "refunds"]
    assert h.broker.consumer_count("refunds") == 1
    h.stop()


def test_a_queue_refused_while_a_session_opens_fails_alone_and_one_added_meanwhile_consumes():
    """Connecting: "bad" is refused (only its add_queue fails); "audit", added late, consumes."""
    slow = SlowAnswers()
    slow.delays["connect"] = 1.0
    failures: list[tuple[str, Exception]] = []
    h_clock = ThreadedClock()
    broker = InMemoryBroker(h_clock)
    broker.declare_queue("bad", {"x-max-length": 5})  # exists with other arguments
    config = config_from_mapping({"amqp_url": "amqp://in-memory/", "queues": {"orders": {}}})
    consumer = Consumer(
        config, lambda message: None, reactor=h_clock, connect=slow.connect_to(broker, h_clock)
    )
    consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    started = consumer.start()
    assert consumer.state == "connecting"
    outcomes: dict[str, Any] = {}
    bad = consumer.add_queue("bad")
    refunds = consumer.add_queue("refunds")
    assert bad is not None
    assert refunds is not None
    bad.addBoth(lambda result: outcomes.__setitem__("bad", result))

    def add_audit(_: None) -> None:
        audit = consumer.add_queue("audit")  # while the session declares the added queues
        assert audit is not None
        audit.addBoth(lambda result: outcomes.__setitem__("audit", result))

    refunds.addCallback(add_audit)
    h_clock.advance(1.0)
    h_clock.run_until(lambda: started.called and "audit" in outcomes)
    assert consumer.state == "consuming"
    assert outcomes["bad"].check(DeclarationError)
    assert outcomes["audit"] is None
    assert [queue for queue, _ in failures] == ["bad"]
    assert "bad" not in consumer.queue_states()
    assert [queue.name for queue in consumer.config.queues] == ["orders", "refunds", "audit"]
    assert broker.consumer_count("refunds") == 1
    assert broker.consumer_count("audit") == 1
    consumer.cancel()
    h_clock.run_until(lambda: consumer.state == "stopped")


def test_a_connection_lost_while_an_added_queue_is_declared_keeps_the_queue():
    """The loss fails add_queue with ConnectionFailed; the next connection consumes the queue."""
    slow = SlowAnswers()
    h = Harness(lambda message: None, queues={"orders": {}}, slow=slow)
    slow.delays["declare_queue"] = 1.0
    added = h.consumer.add_queue("refunds")
    assert added is not None
    outcomes: list[Any] = []
    added.addBoth(outcomes.append)
    slow.delays["declare_queue"] = 0.0
    h.broker.drop_connections()  # while the broker's declare-ok is on its way
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    h.clock.advance(1.0)
    h.until(lambda: outcomes != [])
    assert outcomes[0].check(ConnectionFailed)
    assert "refunds" in h.consumer.queue_states()
    assert [queue.name for queue in h.consumer.config.queues] == ["orders", "refunds"]
    assert h.broker.consumer_count("refunds") == 1
    h.stop()


def test_a_queue_added_during_a_failed_connection_attempt_is_consumed_by_the_next():
    """The attempt fails: add_queue fails with ConnectionFailed, the next attempt consumes it."""
    slow = SlowAnswers()
    slow.delays["connect"] = 1.0
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    broker.refuse_connections(ConnectionFailed("connection refused"), times=1)
    config = config_from_mapping(
        {
            "amqp_url": "amqp://in-memory/",
            "queues": {"orders": {}},
            "reconnect": {"initial_delay": 1, "jitter": 0},
        }
    )
    consumer = Consumer(
        config, lambda message: None, reactor=clock, connect=slow.connect_to(broker, clock)
    )
    started = consumer.start()
    added = consumer.add_queue("refunds")
    assert added is not None
    outcomes: list[Any] = []
    added.addBoth(outcomes.append)
    clock.advance(1.0)  # the refusal
    [outcome] = outcomes
    assert outcome.check(ConnectionFailed)
    clock.advance(1.0)  # the next attempt, after its backoff
    clock.advance(1.0)  # connected
    clock.run_until(lambda: started.called)
    assert consumer.state == "consuming"
    assert broker.consumer_count("refunds") == 1
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped")


def test_a_queue_added_while_reconnecting_that_the_broker_refuses_fails_alone():
    """The next connection declares it after the others; the refusal drops it, not the consumer."""
    gate = Gate()
    failures: list[tuple[str, Exception]] = []
    h = Harness(gate, queues={"orders": {}})
    h.consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    h.broker.declare_queue("bad", {"x-max-length": 5})  # exists with other arguments
    h.publish("orders.new", 1)
    h.until(lambda: len(gate.seen) == 1)
    h.broker.drop_connections()
    h.clock.run_pending()
    assert h.consumer.state == "reconnecting"
    h.consumer.add_queue("bad")
    h.consumer.add_queue("refunds")
    gate.open.set()
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    [(queue, error)] = failures
    assert queue == "bad"
    assert isinstance(error, DeclarationError)
    assert list(h.consumer.queue_states()) == ["orders", "refunds"]
    assert h.broker.consumer_count("orders") == 1
    assert h.broker.consumer_count("refunds") == 1
    h.stop()


def test_a_cancel_answered_after_connect_timeout_fails_the_pause_and_the_queue_stays_paused():
    """cancel-ok never comes in time: the pause fails, the connection is replaced, still paused."""
    slow = SlowAnswers()
    h = Harness(lambda message: None, queues={"orders": {}}, slow=slow)
    slow.delays["cancel"] = 15.0
    paused = h.consumer.pause("orders")
    assert paused is not None
    outcomes: list[Any] = []
    paused.addBoth(outcomes.append)
    slow.delays["cancel"] = 0.0
    h.clock.advance(10.5)
    h.until(lambda: h.consumer.stats.reconnects == 1 and h.consumer.state == "consuming")
    [outcome] = outcomes
    assert outcome.check(BrokerError)
    assert "cancelling the consumer of 'orders'" in str(outcome.value)
    assert h.consumer.queue_states()["orders"] == QueueState(False, frozenset({PAUSED}))
    assert h.broker.consumer_count("orders") == 0
    h.stop()
