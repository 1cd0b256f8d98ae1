"""The network between consumer and broker fails mid-stream; no confirmed message is lost.

A proxy in the test carries the consumer's connection, so the cut is real
TCP behaviour on loopback, not a mock.
"""

from __future__ import annotations

import re

import pytest

from tests.faults.harness import HEARTBEAT, RECONNECT, wait_until
from tests.faults.proxy import TCPProxy

N = 10_000


#: Beyond the two heartbeat intervals and a reconnect delay: opening a connection,
#: declaring, consuming and processing one message, on a busy two-core machine.
RECOVERY_MARGIN = 3.0


@pytest.mark.parametrize("heartbeat", [HEARTBEAT, 5])
def test_a_silent_network_cut_is_noticed_within_two_heartbeats_and_loses_no_message(
    fault_node, scenario, heartbeat
):
    """C. A connection that goes silent (no FIN, no RST) is given up after two heartbeat
    intervals without data and replaced: the first message is processed on the new
    connection within 2 x heartbeat + a reconnect delay + a margin of the cut.
    """
    run = scenario("c. network cut, blackhole (no FIN)", N)
    run.publish(fault_node.url)
    with TCPProxy(fault_node.amqp_port) as proxy:
        consumer = run.start_consumer([proxy.url], heartbeat=heartbeat)
        run.wait_for_progress(0.3)

        run.fault()
        assert proxy.blackhole() == 1

        first_delivery = run.wait_first_delivery(consumer, timeout=60)
        recovered = run.wait_recovered(consumer, timeout=5)
        run.wait_done(fault_node)
        bound = 2 * heartbeat + RECONNECT["initial_delay"] * (1 + RECONNECT["jitter"])
        bound += RECOVERY_MARGIN
        run.finish(
            recovered,
            note=f"heartbeat {heartbeat} s; first message done {first_delivery:.2f} s after "
            f"the cut (bound {bound:g} s)",
        )
    assert run.exits["consumer-1"]["reconnects"] == 1
    assert first_delivery <= bound
    assert any(
        f"no data from the broker for {2 * heartbeat} s (2 heartbeat intervals)" in line
        for line in consumer.output()
    ), consumer.diagnostics()


def test_a_reset_connection_loses_no_message(fault_node, scenario):
    """C. A connection reset (RST) mid-stream is replaced at once."""
    run = scenario("c. network cut, reset (RST)", N)
    run.publish(fault_node.url)
    with TCPProxy(fault_node.amqp_port) as proxy:
        consumer = run.start_consumer([proxy.url])
        run.wait_for_progress(0.3)

        run.fault()
        assert proxy.reset() == 1

        recovered = run.wait_recovered(consumer)
        run.wait_done(fault_node)
        run.finish(recovered)
    assert run.exits["consumer-1"]["reconnects"] == 1


def test_connection_attempts_that_hang_time_out_and_are_retried(fault_node, scenario):
    """C. The connection is reset and, for a while, attempts to reconnect hang (the TCP
    connect succeeds, the handshake gets no answer): each attempt times out and is logged
    as such, and the consumer resumes once the broker answers again.
    """
    run = scenario("c. reset, then reconnects hang", N)
    run.publish(fault_node.url)
    with TCPProxy(fault_node.amqp_port) as proxy:
        consumer = run.start_consumer([proxy.url], connect_timeout=3)
        run.wait_for_progress(0.3)

        run.fault()
        proxy.hang_new_connections()
        assert proxy.reset() == 1
        failures = wait_until(
            lambda: [line for line in consumer.output() if "trying again" in line],
            "a reconnect attempt to time out",
            timeout=30,
            processes=[consumer],
        )
        proxy.forward_new_connections()

        recovered = run.wait_recovered(consumer)
        run.wait_done(fault_node)
        run.finish(recovered, note="connect_timeout 3 s")
    for line in failures:
        _time, _level, message = line.split(" ", 2)
        assert re.search(r"(?i)time|within", message), f"the log does not say it timed out: {line}"
