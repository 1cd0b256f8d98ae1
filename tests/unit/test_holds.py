"""Holds whose listeners change them, and holds of a queue removed meanwhile.

The bookkeeping alone (:class:`fedmq._flow.Holds`, :class:`~fedmq._flow.ByteBudget`),
then a consumer on :class:`fedmq.testing.InMemoryBroker` whose
:class:`~fedmq.testing.ThreadedClock` runs what other threads hand over
when the test says.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from fedmq._flow import HOST_UNHEALTHY, OVER_BYTES, PAUSED, ByteBudget, Holds, QueueState
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.testing import InMemoryBroker, ThreadedClock

WAIT = 10.0

Change = tuple[str, bool, frozenset[str]]


# --- a listener that changes the holds ----------------------------------------------------


def test_a_change_a_listener_makes_reaches_every_listener_after_the_one_that_caused_it():
    """Each listener hears both changes in the order they were made, and ends on the truth."""
    holds = Holds([("orders", False)])
    first: list[Change] = []
    last: list[Change] = []

    def hold_what_is_added(queue: str, consuming: bool, reasons: frozenset[str]) -> None:
        first.append((queue, consuming, reasons))
        if consuming:
            holds.hold(queue, HOST_UNHEALTHY)

    holds.add_listener(hold_what_is_added)
    holds.add_listener(lambda *change: last.append(change))
    holds.add("invoices")
    holds.changed("invoices")
    told = [
        ("invoices", True, frozenset()),
        ("invoices", False, frozenset({HOST_UNHEALTHY})),
    ]
    assert first == told
    assert last == told
    assert holds.states()["invoices"] == QueueState(False, frozenset({HOST_UNHEALTHY}))


def test_a_listener_that_raises_while_others_change_the_holds_stops_no_telling(
    caplog: pytest.LogCaptureFixture,
):
    """A failing listener is logged; the changes queued behind it are still told."""
    holds = Holds([("orders", False)])
    seen: list[Change] = []

    def pause_then_fail(queue: str, consuming: bool, _reasons: frozenset[str]) -> None:
        if consuming:
            holds.hold(queue, PAUSED)
        raise RuntimeError("listener bug")

    holds.add_listener(pause_then_fail)
    holds.add_listener(lambda *change: seen.append(change))
    holds.changed("orders")
    assert seen == [("orders", True, frozenset()), ("orders", False, frozenset({PAUSED}))]
    assert caplog.text.count("A queue listener failed") == 2
    holds.release("orders", PAUSED)  # the telling is not stuck
    assert seen[-1] == ("orders", False, frozenset({PAUSED}))
    assert holds.states()["orders"] == QueueState(False, frozenset({PAUSED}))


# --- holds of a queue removed meanwhile ---------------------------------------------------


def test_holding_or_releasing_a_removed_queue_changes_nothing_and_raises_nothing(
    caplog: pytest.LogCaptureFixture,
):
    holds = Holds([("orders", False), ("invoices", False)])
    seen: list[Change] = []
    holds.add_listener(lambda *change: seen.append(change))
    holds.remove("orders")
    with caplog.at_level(logging.DEBUG, logger="fedmq"):
        held = holds.hold("orders", PAUSED)
        released = holds.release("orders", OVER_BYTES)
    assert held.called
    assert released.called
    assert seen == []
    assert "orders" not in holds
    assert holds.states() == {"invoices": QueueState(True, frozenset())}
    assert "Queue 'orders' was removed: its 'paused' hold changes nothing" in caplog.text


def test_a_byte_budget_still_counting_a_removed_queue_settles_without_raising():
    """Between remove_queue and its budget's retirement, settling raises nothing.

    The dispatcher settles a batch of results through the budgets: an
    exception there would leave the rest of the batch, of every queue,
    unacked.
    """
    holds = Holds([("orders", False), ("invoices", False)])
    budget = ByteBudget("orders", 1000, holds.hold, holds.release)
    budget.received(1500)
    assert holds.reasons("orders") == {OVER_BYTES}
    holds.remove("orders")
    budget.settled(1200)  # under the low-water mark: it releases
    budget.received(2000)  # over the limit: it holds
    assert "orders" not in holds
    assert holds.states() == {"invoices": QueueState(True, frozenset())}


# --- on a running consumer -----------------------------------------------------------------


def make_consumer() -> tuple[Consumer, ThreadedClock, InMemoryBroker]:
    clock = ThreadedClock()
    broker = InMemoryBroker(clock)
    settings = config_from_mapping(
        {"amqp_url": "amqp://in-memory/", "queues": {"orders": {}, "invoices": {}}}
    )
    consumer = Consumer(settings, lambda message: None, reactor=clock, connect=broker.connect)
    started = consumer.start()
    clock.run_until(lambda: started.called, timeout=WAIT)
    return consumer, clock, broker


def test_a_pause_handed_over_from_a_thread_for_a_queue_removed_meanwhile_changes_nothing():
    """The pause reaches the reactor thread after the removal: it is dropped, quietly."""
    consumer, clock, broker = make_consumer()
    results: list[Any] = []
    worker = threading.Thread(target=lambda: results.append(consumer.pause("orders")))
    worker.start()
    worker.join(WAIT)
    assert results == [None]  # handed over to the reactor thread, not made yet
    removed = consumer.remove_queue("orders")
    assert removed is not None
    clock.run_until(lambda: removed.called, timeout=WAIT)
    clock.run_pending()  # the pause, handed over before the removal
    assert consumer.queue_states() == {"invoices": QueueState(True, frozenset())}
    assert (broker.consumer_count("orders"), broker.consumer_count("invoices")) == (0, 1)
    assert consumer.state == "consuming"
    consumer.cancel()
    clock.run_until(lambda: consumer.state == "stopped", timeout=WAIT)
