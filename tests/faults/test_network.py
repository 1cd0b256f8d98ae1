"""The network between consumer and broker fails mid-stream; no confirmed message is lost.

A proxy in the test carries the consumer's connection, so the cut is real
TCP behaviour on loopback, not a mock.
"""

from __future__ import annotations

from tests.faults.harness import HEARTBEAT
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
