"""The network between consumer and broker fails mid-stream; no confirmed message is lost.

A proxy in the test carries the consumer's connection, so the cut is real
TCP behaviour on loopback, not a mock.
"""

from __future__ import annotations

import re

from tests.faults.harness import HEARTBEAT, wait_until
from tests.faults.proxy import TCPProxy

N = 10_000


def test_a_silent_network_cut_is_noticed_by_heartbeats_and_loses_no_message(fault_node, scenario):
    """c. A connection that goes silent (no FIN, no RST) is dropped and replaced."""
    run = scenario("c. network cut, blackhole (no FIN)", N)
    run.publish(fault_node.url)
    with TCPProxy(fault_node.amqp_port) as proxy:
        consumer = run.start_consumer([proxy.url])
        run.wait_for_progress(0.3)

        run.fault()
        assert proxy.blackhole() == 1

        recovered = run.wait_recovered(consumer, timeout=60)
        run.wait_done(fault_node)
        run.finish(recovered, note=f"heartbeat {HEARTBEAT} s")
    assert run.exits["consumer-1"]["reconnects"] == 1


def test_a_reset_connection_loses_no_message(fault_node, scenario):
    """c. A connection reset (RST) mid-stream is replaced at once."""
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
    """c. The connection is reset and, for a while, attempts to reconnect hang (the TCP
    connect succeeds, the handshake gets no answer): each attempt times out and is logged
    as such, and the consumer resumes once the broker answers again."""
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
