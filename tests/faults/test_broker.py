"""The broker goes away, or blocks publishers, under a consumer mid-stream; no confirmed
message is lost.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import message_ids, take_all, wait_until

N = 10_000


def test_a_broker_stopped_and_started_again_loses_no_message(fault_node, scenario):
    """A. Every message is processed although the broker restarts mid-stream."""
    run = scenario("a. broker stopped and started", N)
    run.publish(fault_node.url)
    consumer = run.start_consumer([fault_node.url])
    run.wait_for_progress(0.3)

    run.fault()
    fault_node.restart()

    recovered = run.wait_recovered(consumer)
    run.wait_done(fault_node)
    run.finish(recovered)
    assert run.exits["consumer-1"]["reconnects"] >= 1


@pytest.mark.parametrize("callback", ["plain", "async"])
def test_a_connection_closed_by_the_broker_loses_no_message(fault_node, scenario, callback):
    """B. Every message is processed although the broker closes the connection mid-stream,
    whether the callback is a plain function or an ``async def`` one.
    """
    name = "b. connection closed by the broker" + (
        " (async callback)" if callback == "async" else ""
    )
    run = scenario(name, N)
    run.publish(fault_node.url)
    options = ["--async"] if callback == "async" else []
    consumer = run.start_consumer([fault_node.url], options=options)
    run.wait_for_progress(0.3)

    run.fault()
    fault_node.close_all_connections("fault injection: close_all_connections")

    recovered = run.wait_recovered(consumer)
    run.wait_done(fault_node)
    run.finish(recovered)
    assert run.exits["consumer-1"]["reconnects"] == 1


def test_a_broker_killed_and_started_again_loses_no_message(fault_node, scenario):
    """K. Every confirmed message is processed although the broker is SIGKILLed mid-stream
    (a crash: no clean shutdown, recent acks perhaps never written) and started again.
    """
    count = N // 2
    run = scenario("k. broker SIGKILLed and started again", count)
    run.publish(fault_node.url)
    consumer = run.start_consumer([fault_node.url])
    run.wait_for_progress(0.3)

    run.fault()
    fault_node.kill()
    assert fault_node.pids() == [], "the broker survived SIGKILL"
    fault_node.start()

    recovered = run.wait_recovered(consumer)
    run.wait_done(fault_node)
    tally = run.finish(recovered, note="SIGKILL to every process of the node")
    assert run.exits["consumer-1"]["reconnects"] >= 1
    assert tally.processed == count


def test_a_memory_alarm_blocks_publishing_only_and_loses_no_message(fault_node, scenario):
    """L. A memory alarm mid-stream, one message in ten retried through a wait queue.

    The broker blocks the consumer's publishing connection, so retry copies wait,
    but the consuming connection goes on acking the other messages until every
    prefetch slot holds an original whose copy waits; once the alarm clears,
    everything flows. A stop during a second alarm ends within its timeouts: the
    drain waits drain_timeout for the copies' confirms, the publisher's close
    connect_timeout more (the copies end CANCELED, their originals go back to the
    queue) and the close of its blocked connection, which the broker does not read,
    connect_timeout again before it is aborted. The next consumer processes what
    the first left in the queue: nothing is lost.
    """
    count = 4_000
    drain_timeout, connect_timeout = 3, 2
    # The drain, then the publisher's wait for its confirms; its blocked connection is
    # aborted, not closed; and a second to exit.
    stop_bound = drain_timeout + connect_timeout + 1
    run = scenario("l. memory alarm during consuming, with retries", count)
    retried = message_ids(count // 10, prefix="retry")
    for index, message_id in enumerate(retried):
        run.ids[index * 10 + 5] = message_id
    run.publish(fault_node.url)
    # A window of 100 fills with retried messages after about 1,000 processed: some
    # seconds, however long rabbitmqctl takes to raise the alarm on a busy machine.
    settings = {
        "qos": {"prefetch_count": 100},
        "retry": {"delays": [0.5], "max_attempts": 4},
        "drain_timeout": drain_timeout,
        "connect_timeout": connect_timeout,
    }
    # 5 ms a plain message, so that the alarm comes while the window has room.
    plain = run.ids[0].split("-")[0] + "-"
    options = ["--retry", "retry-", "--slow", plain, "0.005"]
    first = run.start_consumer([fault_node.url], options=options, **settings)
    run.wait_for_progress(0.2)

    run.fault()
    with fault_node.memory_alarm:
        on = time.monotonic()
        depth, done = fault_node.queue_depth(run.queue), len(run.records)
        # The consuming connection still acks: the broker's count of the queue falls.
        wait_until(
            lambda: depth - fault_node.queue_depth(run.queue) >= 50,
            "50 messages acked during the alarm",
            30,
            processes=[first],
        )
        stalled = wait_stalled(fault_node, run.queue, [first])
        assert stalled > 0, "every message was processed during the alarm"
        acked, processed = depth - stalled, len(run.records) - done
        # Sorted: the publishing connection is "blocked"; the consuming one, still read,
        # "blocking" (as RabbitMQ 3.x lists it) or "running".
        publisher, consumer = connection_states(fault_node)
        clearing = time.monotonic()
    alarm_seconds = clearing - on
    done = len(run.records)
    wait_until(lambda: len(run.records) > done, "a message processed after the alarm", 30, [first])
    recovered = time.monotonic() - clearing
    # Only the publishing connection was blocked; the consumer never was.
    assert publisher == "blocked", (publisher, consumer)
    assert consumer in {"blocking", "running"}, (publisher, consumer)
    assert "blocked" not in [state for _when, state in first.events("state")]

    # A stop during a second alarm, with copies waiting for their confirms.
    with fault_node.memory_alarm:
        wait_stalled(fault_node, run.queue, [first])
        left = fault_node.queue_depth(run.queue)
        stop_seconds, status = first.terminate(timeout=60)
    assert left > 0, "every message was processed before the stop"
    assert stop_seconds <= stop_bound, (stop_seconds, first.diagnostics())
    # It stopped through its drain (its counters are written once the result fires),
    # forced (status 1) because the copies' confirms were still due at drain_timeout.
    assert status in (0, 1), first.diagnostics()
    assert first.events("exit"), first.diagnostics()

    second = run.start_consumer([fault_node.url], options=options, **settings)
    run.wait_done(fault_node)
    wait_queue = f"{run.queue}.retry.0.5s"
    wait_until(
        lambda: fault_node.queue_depth(wait_queue) == 0 and fault_node.queue_depth(run.queue) == 0,
        "the wait queue and the queue empty",
        30,
        processes=[second],
    )
    parked = take_all(fault_node.url, f"{run.queue}.dead")
    run.finish(
        recovered,
        note=f"alarm of {alarm_seconds:.1f} s: {acked} acked and {processed} processed during it "
        f"(then every prefetch slot held a retried message); a stop during a second alarm "
        f"took {stop_seconds:.1f} s (drain_timeout {drain_timeout} s + connect_timeout "
        f"{connect_timeout} s)",
        accounted=dict(parked),
    )
    assert parked == []


def wait_stalled(node, queue, processes, timeout=30):
    """Wait until the queue's depth is the same at two readings a second apart; that depth."""
    previous = node.queue_depth(queue)

    def still() -> bool:
        nonlocal previous
        depth = node.queue_depth(queue)
        same, previous = depth == previous, depth
        return same

    wait_until(still, f"the consumer of {queue!r} to stall", timeout, processes, interval=0.5)
    return previous


def connection_states(node) -> list[str]:
    """The state of each client connection ("running", "blocking", "blocked"), sorted."""
    listing = node.ctl("list_connections", "--quiet", "--no-table-headers", "state")
    return sorted(line.strip() for line in listing.splitlines() if line.strip())
