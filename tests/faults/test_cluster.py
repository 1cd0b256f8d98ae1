"""A three-node cluster with quorum queues: failover, and consumers sharing a queue."""

from __future__ import annotations

import json
import secrets

from tests.faults.harness import Records, take_all, wait_until

N = 10_000
QUORUM = {"x-queue-type": "quorum"}


def connection_nodes(cluster, connection_name):
    """The nodes holding a client connection called ``connection_name``."""
    by_port = {node.amqp_port: node for node in cluster}
    running = next(node for node in cluster if node.running)
    listed = json.loads(
        running.ctl("list_connections", "port", "client_properties", "--formatter", "json")
    )
    return [
        by_port[connection["port"]]
        for connection in listed
        if ["connection_name", "longstr", connection_name] in connection["client_properties"]
    ]


def queue_leader(node, queue):
    """The node name of the quorum queue's leader."""
    listed = json.loads(node.ctl("list_queues", "name", "leader", "--formatter", "json"))
    return next(entry["leader"] for entry in listed if entry["name"] == queue)


def test_two_consumers_share_a_quorum_queue_and_together_process_everything(cluster, scenario):
    """Two consumer processes, on different nodes, compete for one quorum queue; between
    them every message is processed once.
    """
    run = scenario("h. two competing consumers, 3-node cluster", N, arguments=QUORUM)
    urls = [node.url for node in cluster]
    records = [Records(run.directory / f"processed-{n}") for n in (1, 2)]
    # Each lists every node, starting from a different one.
    run.start_consumer(urls, record=records[0].path)
    run.start_consumer(urls[1:] + urls[:1], record=records[1].path)
    run.publish(urls[2])

    run.wait_done(cluster[0], records=records)
    shares = [len(set(record.refresh())) for record in records]
    tally = run.finish(None, note=f"processed {shares[0]:,} + {shares[1]:,}", records=records)

    assert all(shares), f"one consumer got nothing: {shares}"
    assert tally.duplicates == 0


def test_a_consumer_fails_over_when_the_node_it_uses_stops(cluster, scenario):
    """E. The consumer's node is stopped mid-stream; the consumer moves to another node
    through amqp_urls and finishes the queue.
    """
    run = scenario("e. 3-node cluster, the consumer's node stopped", N, arguments=QUORUM)
    urls = [node.url for node in cluster]
    run.publish(urls[0])
    # Asked before consuming: each rabbitmqctl call takes a second or two, in which an
    # unhindered consumer could finish the queue before the fault.
    leader = queue_leader(cluster[0], run.queue)
    connection_name = f"fault-e-{secrets.token_hex(3)}"
    # Half a millisecond per message: the queue lasts at least 5 s, however fast the machine.
    prefix = run.ids[0].split("-")[0]
    consumer = run.start_consumer(
        urls,
        options=["--slow", prefix, "0.0005"],
        client_properties={"connection_name": connection_name},
    )
    [victim] = connection_nodes(cluster, connection_name)
    survivor = next(node for node in cluster if node is not victim)
    was_leader = leader == victim.nodename
    run.wait_for_progress(0.3)

    run.fault()
    victim.stop()

    recovered = run.wait_recovered(consumer)
    run.wait_done(survivor)
    [now_on] = connection_nodes(cluster, connection_name)
    run.finish(
        recovered,
        note=f"stopped {victim.name}{' (the queue leader)' if was_leader else ''}, "
        f"failed over to {now_on.name}",
    )
    assert now_on is not victim
    assert run.exits["consumer-1"]["reconnects"] >= 1


def test_retries_survive_the_loss_of_the_consumers_node(cluster, scenario):
    """J. Every message's first run raises Retry, through a quorum wait queue; the
    consumer's node is stopped mid-stream. The consumer fails over, declares its wait
    queues again on the surviving nodes, and every message comes back and is processed.
    """
    count = N // 2
    run = scenario("j. every message retried once; 3-node cluster, a node stopped", count)
    run.arguments = QUORUM
    urls = [node.url for node in cluster]
    run.publish(urls[0])
    connection_name = f"fault-j-{secrets.token_hex(3)}"
    consumer = run.start_consumer(
        urls,
        options=["--retry-first"],
        client_properties={"connection_name": connection_name},
        retry={"delays": [0.5], "max_attempts": 4},
    )
    [victim] = connection_nodes(cluster, connection_name)
    survivor = next(node for node in cluster if node is not victim)
    run.wait_for_progress(0.3)

    run.fault()
    victim.stop()

    recovered = run.wait_recovered(consumer)
    run.wait_done(survivor)
    wait_until(
        lambda: survivor.queue_counts(f"{run.queue}.retry.0.5s") == (0, 0),
        "the retry queue empty",
        30,
        processes=run.running(),
    )
    parked = take_all(survivor.url, f"{run.queue}.dead")
    run.finish(
        recovered, note=f"quorum wait queue of 0.5 s; stopped {victim.name}", accounted=dict(parked)
    )
    assert parked == []
