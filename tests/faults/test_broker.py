"""The broker goes away under a consumer mid-stream; no confirmed message is lost."""

from __future__ import annotations

import pytest

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
