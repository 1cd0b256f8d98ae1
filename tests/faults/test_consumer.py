"""The consumer itself fails or struggles mid-stream; no confirmed message is lost."""

from __future__ import annotations

import time

from tests.faults.harness import HEARTBEAT, declare_queue, message_ids, take_all, wait_until

N = 10_000


def test_a_consumer_killed_mid_batch_and_started_again_loses_no_message(fault_node, scenario):
    """D. What a SIGKILLed consumer had not acked is processed by the next one."""
    run = scenario("d. consumer SIGKILLed and started again", N)
    run.publish(fault_node.url)
    # Four callbacks at once, fifty prefetched: a batch is in flight when it dies.
    first = run.start_consumer([fault_node.url], concurrency=4)
    run.wait_for_progress(0.3)

    run.fault()
    first.kill()
    second = run.start_consumer([fault_node.url], concurrency=4)

    recovered = run.wait_recovered(second)
    run.wait_done(fault_node)
    run.finish(recovered, note="concurrency 4, prefetch 50")


def test_a_callback_longer_than_three_heartbeats_keeps_its_connection(fault_node, scenario):
    """G. A callback running 7 s with a 2 s heartbeat neither loses the connection nor
    has its message redelivered.
    """
    seconds = 3.5 * HEARTBEAT
    run = scenario("g. callback runs 7 s, heartbeat 2 s", N)
    slow = run.ids[N // 3]
    run.publish(fault_node.url)
    started = time.monotonic()
    run.start_consumer([fault_node.url], options=["--slow", slow, str(seconds)])
    connections_at_start = connection_names(fault_node)

    run.wait_done(fault_node)
    connections_at_end = connection_names(fault_node)
    tally = run.finish(None, note="one callback of 7 s")

    assert time.monotonic() - started > seconds, "the slow callback was not slow"
    # The broker saw one connection, the same from start to end: it never reconnected.
    assert len(connections_at_start) == 1
    assert connections_at_end == connections_at_start
    assert tally.duplicates == 0


def connection_names(node) -> list[str]:
    """The broker's names of its client connections (address and port of each end)."""
    listing = node.ctl("list_connections", "--quiet", "--no-table-headers", "name")
    return sorted(line for line in listing.splitlines() if line)


def test_a_poison_message_is_dead_lettered_and_the_rest_processed(fault_node, scenario):
    """F. Messages the callback always refuses go to the dead-letter queue after the
    delivery limit; every other message is processed.
    """
    limit = 3
    run = scenario("f. poison messages", N)
    dead_letters = f"{run.queue}.dlx"  # not .dead: that is fedmq's own dead queue
    run.arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": limit,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dead_letters,
    }
    # Five of the N are poison, spread through the stream.
    poison = message_ids(5, prefix="poison")
    for index, message_id in enumerate(poison):
        run.ids[(index + 1) * N // 6] = message_id
    declare_queue(fault_node.url, dead_letters)
    run.publish(fault_node.url)
    consumer = run.start_consumer([fault_node.url], options=["--nack", "poison-"])

    run.wait_done(fault_node, expected=set(run.ids) - set(poison))
    dead = dict(take_all(fault_node.url, dead_letters))
    deliveries = len(consumer.events("nack")) / len(poison)
    run.finish(
        None,
        note=f"{len(dead)} poison messages dead-lettered after {deliveries:g} deliveries "
        f"each (x-delivery-limit {limit})",
        accounted=dead,
    )

    assert sorted(dead) == poison
    for headers in dead.values():
        reasons = [death["reason"] for death in headers["x-death"]]
        assert reasons in (["delivery_limit"], [b"delivery_limit"]), headers


def test_retries_survive_a_consumer_killed_mid_stream(fault_node, scenario):
    """I. Each message's first run raises Retry; the consumer is SIGKILLed mid-stream and
    started again. Every message comes back from its wait queue and is processed; none is
    lost between the confirmed copy and the ack, and none is parked.
    """
    count = N // 2
    run = scenario("i. every message retried once; consumer SIGKILLed", count)
    run.publish(fault_node.url)
    retry = {"delays": [0.5], "max_attempts": 4}
    first = run.start_consumer(
        [fault_node.url], options=["--retry-first"], concurrency=4, retry=retry
    )
    run.wait_for_progress(0.3)

    run.fault()
    first.kill()
    second = run.start_consumer(
        [fault_node.url], options=["--retry-first"], concurrency=4, retry=retry
    )

    recovered = run.wait_recovered(second)
    run.wait_done(fault_node)
    wait_queue = f"{run.queue}.retry.0.5s"
    wait_until(
        lambda: (
            fault_node.queue_counts(wait_queue) == (0, 0)
            and fault_node.queue_counts(run.queue) == (0, 0)
        ),
        "the retry queue empty (duplicate copies come back too)",
        30,
        processes=run.running(),
    )
    parked = take_all(fault_node.url, f"{run.queue}.dead")
    run.finish(recovered, note="a 0.5 s retry queue, concurrency 4", accounted=dict(parked))
    assert parked == []
