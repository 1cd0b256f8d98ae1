"""Flow control against a real broker: pause and resume, per-queue options, runtime topology.

Every promise is observed on the broker (its queue counts and its list of
consumers), not in fedmq's own bookkeeping.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer

import fedmq
from fedmq import HaltConsumer, Message, WouldDeadlock
from fedmq._flow import OVER_BYTES, PAUSED
from tests.integration.conftest import wait_for

HELD = 30.0


async def start(config: Any, callback: Any) -> fedmq.Consumer:
    return await fedmq.consume(callback, config=config)


class Gate:
    """A sync callback whose runs wait until the test opens the gate; it records each body."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.seen: list[Any] = []

    def __call__(self, message: Message) -> None:
        self.seen.append(message.body)
        self.open.wait(HELD)


def consumer_arguments(broker: Any, queue: str) -> list[str]:
    """The consume arguments of each consumer of ``queue``, as the broker lists them."""
    listing = broker.node.ctl(
        "list_consumers", "--quiet", "--no-table-headers", "-p", "/", "queue_name", "arguments"
    )
    return [line.split("\t", 1)[1] for line in listing.splitlines() if line.split("\t")[0] == queue]


# --- pause and resume ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pause_stops_deliveries_within_one_prefetch_window_and_resume_restarts_them(
    broker, queue_name, make_config
):
    """Prefetch 5, one callback held: pausing leaves the one running, returns the 4 others."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, list(range(50)))
    gate = Gate()
    consumer = await start(make_config(qos={"prefetch_count": 5}), gate)
    try:
        await wait_for(lambda: broker.counts(queue_name) == (45, 5), what="5 prefetched")
        await wait_for(lambda: consumer.in_flight == 5, what="the 5 received by fedmq")
        await consumer.pause(queue_name)
        assert broker.consumers(queue_name) == []
        await wait_for(lambda: broker.counts(queue_name) == (49, 1), what="4 back, 1 running")
        assert consumer.queue_states()[queue_name].reasons == {PAUSED}
        gate.open.set()
        await wait_for(lambda: broker.counts(queue_name) == (49, 0), what="the one running acked")
        assert len(gate.seen) == 1
        await consumer.resume(queue_name)
        await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="all consumed")
    finally:
        gate.open.set()
    assert sorted(gate.seen) == list(range(50))
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_a_paused_queue_stays_paused_across_a_reconnect(
    rabbit, broker, queue_name, make_config
):
    """The broker closes the connection; the new one consumes the other queue, not the paused."""
    paused, other = f"{queue_name}-p", f"{queue_name}-o"
    for queue in (paused, other):
        broker.declare_queue(queue)
    seen: list[Any] = []
    config = make_config(queues={paused: {"durable": True}, other: {"durable": True}})
    consumer = await start(config, lambda message: seen.append(message.body))
    await consumer.pause(paused)
    [(channel_before, _)] = broker.consumers(other)
    await defer.maybeDeferred(rabbit.close_all_connections, "test closes it")
    await wait_for(
        lambda: [c for c, _ in broker.consumers(other)] not in ([], [channel_before]),
        what="the other queue consumed on a new connection",
    )
    assert broker.consumers(paused) == []
    broker.publish(paused, ["p"])
    broker.publish(other, ["o"])
    await wait_for(lambda: seen == ["o"], what="the other queue's message")
    assert broker.counts(paused) == (1, 0)
    await consumer.resume(paused)
    await wait_for(lambda: sorted(seen) == ["o", "p"], what="the paused queue's message")
    await consumer.cancel()


# --- per-queue options ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_queue_prefetch_count_limits_its_own_consumer_on_the_broker(
    broker, queue_name, make_config
):
    """One queue with prefetch_count 3, one with the [qos] default of 10: callbacks held."""
    small, default = f"{queue_name}-s", f"{queue_name}-d"
    for queue in (small, default):
        broker.declare_queue(queue)
        broker.publish(queue, list(range(20)))
    gate = Gate()
    config = make_config(
        queues={small: {"durable": True, "prefetch_count": 3}, default: {"durable": True}},
        qos={"prefetch_count": 10},
    )
    consumer = await start(config, gate)
    try:
        await wait_for(
            lambda: broker.counts(small) == (17, 3) and broker.counts(default) == (10, 10),
            what="3 and 10 unacknowledged",
        )
        [(_, small_prefetch)] = broker.consumers(small)
        [(_, default_prefetch)] = broker.consumers(default)
        assert (small_prefetch, default_prefetch) == (3, 10)
    finally:
        gate.open.set()
    await wait_for(lambda: broker.counts(small) == broker.counts(default) == (0, 0))
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_the_higher_priority_consumer_gets_the_messages_while_it_has_room(
    broker, queue_name, make_config
):
    """Two consumers of one queue, both with room: x-priority 10 takes 3 of 4 messages (its
    prefetch), the other 1 (round robin would split them 2 and 2); once the first has room
    again, it gets each new message.
    """
    broker.declare_queue(queue_name)
    high_gate, low_seen = Gate(), []
    high = await start(
        make_config(
            queues={queue_name: {"durable": True, "consumer_priority": 10}},
            qos={"prefetch_count": 3},
        ),
        high_gate,
    )
    low = await start(make_config(), lambda message: low_seen.append(message.body))
    try:
        assert '[{"x-priority",10}]' in consumer_arguments(broker, queue_name)
        broker.publish(queue_name, list(range(4)))
        await wait_for(lambda: high.in_flight == 3 and len(low_seen) == 1, what="3 and 1")
        assert broker.counts(queue_name) == (0, 3)
    finally:
        high_gate.open.set()
    await wait_for(lambda: broker.counts(queue_name) == (0, 0))
    assert len(high_gate.seen) == 3
    for n in range(10, 15):
        broker.publish(queue_name, [n])
        await wait_for(lambda n=n: n in high_gate.seen, what=f"message {n} to the high one")
    assert len(low_seen) == 1
    await high.cancel()
    await low.cancel()


@pytest_twisted.ensureDeferred
async def test_the_byte_budget_pauses_a_queue_of_large_messages_and_resumes_it(
    broker, queue_name, make_config
):
    """max_unacked_bytes 25 000, bodies of 10 000 bytes: 3 unacked pause it until settled."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [b"x" * 10_000] * 10, content_type="application/octet-stream")
    gate = Gate()
    changes: list[tuple[str, bool, frozenset[str]]] = []
    config = make_config(
        queues={queue_name: {"durable": True, "max_unacked_bytes": 25_000}},
        qos={"prefetch_count": 3},
        decode=False,
    )
    consumer = await start(config, gate)
    consumer.add_queue_listener(lambda *change: changes.append(change))
    try:
        await wait_for(lambda: broker.consumers(queue_name) == [], what="the queue paused")
        assert broker.counts(queue_name) == (7, 3)
        assert consumer.queue_states()[queue_name].reasons == {OVER_BYTES}
    finally:
        gate.open.set()
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="all consumed")
    assert (queue_name, False, frozenset({OVER_BYTES})) in changes
    assert (queue_name, True, frozenset()) in changes
    await wait_for(lambda: len(broker.consumers(queue_name)) == 1, what="consuming again")
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_reconfigure_applies_a_new_prefetch_count_and_priority_kept_across_a_reconnect(
    rabbit, broker, queue_name, make_config
):
    """reconfigure(prefetch_count=2, consumer_priority=5): the broker lists both, even later."""
    broker.declare_queue(queue_name)
    consumer = await start(make_config(), lambda message: None)
    await consumer.reconfigure(queue_name, prefetch_count=2, consumer_priority=5)
    [(channel_before, prefetch)] = broker.consumers(queue_name)
    assert prefetch == 2
    assert consumer_arguments(broker, queue_name) == ['[{"x-priority",5}]']
    await defer.maybeDeferred(rabbit.close_all_connections, "test closes it")
    await wait_for(
        lambda: [c for c, _ in broker.consumers(queue_name)] not in ([], [channel_before]),
        what="a consumer on a new connection",
    )
    [(_, prefetch)] = broker.consumers(queue_name)
    assert prefetch == 2
    assert consumer_arguments(broker, queue_name) == ['[{"x-priority",5}]']
    await consumer.cancel()


# --- runtime topology ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_add_queue_declares_binds_and_consumes_and_a_reconnect_restores_it(
    rabbit, broker, queue_name, make_config
):
    """A queue added at runtime is declared, bound to amq.topic, consumed, and again later."""
    broker.declare_queue(queue_name)
    added = f"{queue_name}-added"
    seen: list[Any] = []
    consumer = await start(make_config(), lambda message: seen.append(message.body))
    await consumer.add_queue(
        added, bindings=[{"exchange": "amq.topic", "routing_keys": [f"{added}.#"]}]
    )
    assert len(broker.consumers(added)) == 1
    broker.publish(f"{added}.x", ["first"], exchange="amq.topic")
    await wait_for(lambda: seen == ["first"])
    [(channel_before, _)] = broker.consumers(added)
    await defer.maybeDeferred(rabbit.close_all_connections, "test closes it")
    await wait_for(
        lambda: [c for c, _ in broker.consumers(added)] not in ([], [channel_before]),
        what="the added queue consumed on a new connection",
    )
    broker.publish(f"{added}.x", ["second"], exchange="amq.topic")
    await wait_for(lambda: seen == ["first", "second"])
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_remove_queue_cancels_it_and_returns_its_unstarted_deliveries(
    broker, queue_name, make_config
):
    """The one running finishes and is acked; the prefetched ones are ready again."""
    kept, removed = f"{queue_name}-k", f"{queue_name}-r"
    for queue in (kept, removed):
        broker.declare_queue(queue)
    broker.publish(removed, list(range(6)))
    gate = Gate()
    config = make_config(
        queues={kept: {"durable": True}, removed: {"durable": True}}, qos={"prefetch_count": 4}
    )
    consumer = await start(config, gate)
    try:
        await wait_for(lambda: broker.counts(removed) == (2, 4), what="4 prefetched")
        await wait_for(lambda: consumer.in_flight == 4, what="the 4 received by fedmq")
        await consumer.remove_queue(removed)
        assert broker.consumers(removed) == []
        await wait_for(lambda: broker.counts(removed) == (5, 1), what="3 back, 1 running")
        assert removed not in consumer.queue_states()
    finally:
        gate.open.set()
    await wait_for(lambda: broker.counts(removed) == (5, 0), what="the one running acked")
    assert len(broker.consumers(kept)) == 1
    await consumer.cancel()


@pytest_twisted.ensureDeferred
async def test_adding_a_queue_the_broker_refuses_fails_that_call_only(
    broker, queue_name, make_config
):
    """A mismatched declaration fails add_queue with DeclarationError; consuming goes on."""
    broker.declare_queue(queue_name)
    clash = f"{queue_name}-clash"
    broker.declare_queue(clash, **{"x-max-length": 5})
    seen: list[Any] = []
    consumer = await start(make_config(), lambda message: seen.append(message.body))
    with pytest.raises(fedmq.DeclarationError, match=clash):
        await consumer.add_queue(clash)
    assert clash not in consumer.queue_states()
    broker.publish(queue_name, ["still"])
    await wait_for(lambda: seen == ["still"])
    assert consumer.state == "consuming"
    await consumer.cancel()


# --- calling fedmq from a callback -----------------------------------------------------------


class FromCallback:
    """Callbacks that call fedmq: on "go", pause, resume and add a queue, then publish
    "end" to it; on "end", cancel (recording what waiting for it gave) or halt.
    """

    def __init__(self, queue: str, ending: str) -> None:
        self.queue, self.added, self.ending = queue, f"{queue}-added", ending
        self.record: dict[str, Any] = {}
        self.consumer: fedmq.Consumer

    def first(self) -> None:
        consumer, record = self.consumer, self.record
        record["pause"] = consumer.pause(self.queue)
        record["resume"] = consumer.resume(self.queue)
        record["add"] = consumer.add_queue(
            self.added, bindings=[{"exchange": "amq.topic", "routing_keys": [f"{self.added}.#"]}]
        )

    def sync(self, message: Message) -> None:
        if message.body == "go":
            self.first()
            # The added queue is declared and bound soon after; wait for it, bounded.
            declared = threading.Event()
            for _ in range(3000):
                if self.added in self.consumer.queues:
                    break
                declared.wait(0.01)
            fedmq.publish(Message("end", f"{self.added}.end"), exchange="amq.topic")
        elif self.ending == "halt":
            raise HaltConsumer(exit_code=0)
        else:
            waited = threading.Event()
            self.consumer.cancel().addBoth(
                lambda result: (self.record.setdefault("cancel", result), waited.set())
            )
            assert waited.wait(HELD)

    async def run_async(self, message: Message) -> None:
        if message.body == "go":
            self.first()
            for _ in range(3000):
                if self.added in self.consumer.queues:
                    break
                await asyncio.sleep(0.01)
            await fedmq.publish(Message("end", f"{self.added}.end"), exchange="amq.topic")
        elif self.ending == "halt":
            raise HaltConsumer(exit_code=0)
        else:
            try:
                await self.consumer.cancel()
            except WouldDeadlock as exc:
                self.record["cancel"] = exc


@pytest.mark.parametrize("concurrency", [1, 3])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("ending", ["cancel", "halt"])
@pytest_twisted.ensureDeferred
async def test_a_callback_pauses_resumes_adds_a_queue_publishes_and_stops_without_deadlock(
    broker, queue_name, make_config, concurrency, kind, ending
):
    """From inside callbacks: pause, resume, add_queue, publish, then cancel or HaltConsumer.

    None of them waits for itself; waiting for cancel()'s drain gives WouldDeadlock.
    """
    broker.declare_queue(queue_name)
    calls = FromCallback(queue_name, ending)
    callback = calls.sync if kind == "sync" else calls.run_async
    calls.consumer = await start(make_config(concurrency=concurrency), callback)
    broker.publish(queue_name, ["go"])
    assert await calls.consumer.result is None
    assert [calls.record[key] for key in ("pause", "resume", "add")] == [None, None, None]
    if ending == "cancel":
        cancelled = calls.record["cancel"]
        error = cancelled.value if kind == "sync" else cancelled
        assert isinstance(error, WouldDeadlock)
    assert broker.counts(queue_name) == (0, 0)
    assert broker.counts(calls.added) == (0, 0)
