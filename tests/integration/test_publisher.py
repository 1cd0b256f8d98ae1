"""fedmq.Publisher and fedmq.publish() on the suite's broker: every message gets one status."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

import fedmq
from fedmq.acks import Ack, AckStatus
from fedmq.config import config_from_mapping
from tests.integration.conftest import wait_for
from tests.integration.processes import environment, write_config
from tests.integration.processes import fedmq as fedmq_cli

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self

SCRIPT = Path(__file__).parent / "scripts" / "publishing.py"


def unused_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


def settings(url: str, **keys: Any) -> fedmq.Config:
    return config_from_mapping({"amqp_url": url, "connect_timeout": 5, **keys})


def run_script(tmp_path: Path, url: str, *args: str, **popen: Any) -> subprocess.Popen[str]:
    config = write_config(tmp_path / "config.toml", {"amqp_url": url, "connect_timeout": 5})
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        env=environment(FEDMQ_CONFIG=str(config), PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def last_json(out: str) -> Any:
    return json.loads(out.strip().splitlines()[-1])


class Alarm:
    """A memory alarm on the node: it blocks every publishing connection."""

    def __init__(self, node: Any):
        self.node = node

    def __enter__(self) -> Self:
        self.node.ctl("set_vm_memory_high_watermark", "0.0000001")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.node.ctl("set_vm_memory_high_watermark", "0.4")


def alarm_raised(node: Any) -> bool:
    return "memory" in node.ctl("eval", "rabbit_alarm:get_alarms().")


async def settle_all(publisher: fedmq.Publisher, messages: list[fedmq.Message], **post: Any):
    acks: list[Ack] = []
    for message in messages:
        publisher.post(message, on_ack=acks.append, **post)
    await wait_for(lambda: len(acks) == len(messages), what="a status for every message")
    return acks


# --- statuses ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_posts_from_the_reactor_each_get_success_and_reach_the_queue(broker, queue_name):
    """200 posts pipelined from Twisted: 200 SUCCESS statuses, 200 messages in order."""
    broker.declare_queue(queue_name)
    publisher = fedmq.Publisher(settings(broker.url))
    messages = [fedmq.Message({"n": n}) for n in range(200)]
    acks = await settle_all(publisher, messages, exchange="", routing_key=queue_name)
    await publisher.close()
    assert [ack.status for ack in acks] == [AckStatus.SUCCESS] * 200
    assert [ack.message_id for ack in acks] == [message.id for message in messages]
    assert broker.drain(queue_name) == [{"n": n} for n in range(200)]


@pytest_twisted.ensureDeferred
async def test_a_full_reject_publish_queue_nacks_and_publish_raises_publish_nacked(
    broker, queue_name
):
    """x-max-length 1 with reject-publish: the first is SUCCESS, the others NACKED."""
    broker.declare_queue(queue_name, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    publisher = fedmq.Publisher(settings(broker.url))
    messages = [fedmq.Message({"n": n}) for n in range(3)]
    acks = await settle_all(publisher, messages, exchange="", routing_key=queue_name)
    status = {ack.message_id: ack.status for ack in acks}
    assert [status[message.id] for message in messages] == [
        AckStatus.SUCCESS,
        AckStatus.NACKED,
        AckStatus.NACKED,
    ]
    with pytest.raises(fedmq.PublishNacked):
        await publisher.publish(fedmq.Message({"n": 3}), exchange="", routing_key=queue_name)
    await publisher.close()


@pytest_twisted.ensureDeferred
async def test_a_mandatory_message_no_queue_matches_is_returned_and_others_succeed(
    broker, queue_name
):
    """Mandatory posts: the unroutable one gets RETURNED, the routed ones SUCCESS."""
    broker.declare_queue(queue_name)
    publisher = fedmq.Publisher(settings(broker.url))
    routed = fedmq.Message({"routed": True})
    lost = fedmq.Message({"routed": False})
    acks: list[Ack] = []
    publisher.post(routed, exchange="", routing_key=queue_name, mandatory=True, on_ack=acks.append)
    publisher.post(
        lost, exchange="", routing_key="no-such-queue", mandatory=True, on_ack=acks.append
    )
    publisher.post(routed, exchange="", routing_key=queue_name, mandatory=True, on_ack=acks.append)
    await wait_for(lambda: len(acks) == 3)
    await publisher.close()
    assert sorted(ack.status.name for ack in acks) == ["RETURNED", "SUCCESS", "SUCCESS"]
    [returned] = [ack for ack in acks if ack.status is AckStatus.RETURNED]
    assert isinstance(returned.error, fedmq.PublishReturned)
    assert returned.message_id == lost.id


@pytest_twisted.ensureDeferred
async def test_with_no_broker_listening_a_post_gets_not_connected(broker):
    """Nothing listens at the URL: the message gets NOT_CONNECTED, a PublishConnectionLost."""
    publisher = fedmq.Publisher(settings(unused_url()))
    [ack] = await settle_all(publisher, [fedmq.Message({})], exchange="", routing_key="q")
    await publisher.close()
    assert ack.status is AckStatus.NOT_CONNECTED
    assert isinstance(ack.error, fedmq.PublishConnectionLost)
    assert "guest:guest" not in str(ack.error)


@pytest_twisted.ensureDeferred
async def test_under_a_memory_alarm_the_bound_holds_and_unconfirmed_messages_time_out(
    broker, rabbit_node, queue_name
):
    """Blocked by the broker: never more than max_unconfirmed sent; each message gets TIMEOUT."""
    broker.declare_queue(queue_name)
    publisher = fedmq.Publisher(settings(broker.url), max_unconfirmed=5)
    await publisher.publish(fedmq.Message({"warm": True}), exchange="", routing_key=queue_name)
    acks: list[Ack] = []
    seen_unconfirmed: list[int] = []
    with Alarm(rabbit_node):
        await wait_for(lambda: alarm_raised(rabbit_node), what="the memory alarm")
        for n in range(20):
            publisher.post(
                fedmq.Message({"n": n}),
                exchange="",
                routing_key=queue_name,
                timeout=1.5,
                on_ack=acks.append,
            )
            seen_unconfirmed.append(publisher.unconfirmed)
        await wait_for(
            lambda: seen_unconfirmed.append(publisher.unconfirmed) or len(acks) == 20,
            what="a status for all 20",
        )
    await publisher.close(5)
    assert max(seen_unconfirmed) == 5
    assert {ack.status for ack in acks} == {AckStatus.TIMEOUT}
    assert isinstance(acks[0].error, fedmq.PublishTimeout)


@pytest_twisted.ensureDeferred
async def test_closing_before_the_confirm_cancels_and_a_lost_connection_is_not_connected(
    broker, rabbit_node, queue_name
):
    """Under an alarm: close(0.5) gives CANCELED; a dropped connection gives NOT_CONNECTED."""
    broker.declare_queue(queue_name)
    closing = fedmq.Publisher(settings(broker.url))
    dropped = fedmq.Publisher(settings(broker.url, heartbeat=0))
    for publisher in (closing, dropped):
        await publisher.publish(fedmq.Message({}), exchange="", routing_key=queue_name)
    canceled: list[Ack] = []
    lost: list[Ack] = []
    with Alarm(rabbit_node):
        await wait_for(lambda: alarm_raised(rabbit_node), what="the memory alarm")
        closing.post(fedmq.Message({}), exchange="", routing_key=queue_name, on_ack=canceled.append)
        dropped.post(fedmq.Message({}), exchange="", routing_key=queue_name, on_ack=lost.append)
        await closing.close(0.5)
        await defer.maybeDeferred(rabbit_node.close_all_connections)
        await wait_for(lambda: lost, what="the status of the message on the dropped connection")
    await dropped.close(5)
    assert [ack.status for ack in canceled] == [AckStatus.CANCELED]
    assert isinstance(canceled[0].error, fedmq.PublishCanceled)
    assert [ack.status for ack in lost] == [AckStatus.NOT_CONNECTED]
    assert isinstance(lost[0].error, fedmq.PublishConnectionLost)


@pytest_twisted.ensureDeferred
async def test_a_threads_post_over_the_bound_blocks_until_confirms_make_room_or_its_timeout(
    broker, rabbit_node, queue_name
):
    """max_unconfirmed=2 and a broker blocked by an alarm: a worker thread's third post()
    returns after its timeout (1 s) with TIMEOUT, unsent; a fourth blocks until the alarm
    clears and confirms make room, then is sent.
    """
    broker.declare_queue(queue_name)
    publisher = fedmq.Publisher(settings(broker.url), max_unconfirmed=2)
    await publisher.publish(fedmq.Message({"warm": True}), exchange="", routing_key=queue_name)
    acks: dict[str, Ack] = {}

    def post(n: int, timeout: float) -> float:
        """In a worker thread: post message n; the monotonic time at which it returned."""
        message = fedmq.Message({"n": n}, message_id=f"m{n}")
        publisher.post(
            message,
            exchange="",
            routing_key=queue_name,
            timeout=timeout,
            on_ack=lambda ack: acks.__setitem__(ack.message_id, ack),
        )
        return time.monotonic()

    with Alarm(rabbit_node):
        await wait_for(lambda: alarm_raised(rabbit_node), what="the memory alarm")
        for n in (1, 2):  # within the bound: posted at once
            started = time.monotonic()
            assert await threads.deferToThread(post, n, 60) - started < 5
        started = time.monotonic()
        returned = await threads.deferToThread(post, 3, 1)
        assert 1 <= returned - started < 10
        await wait_for(lambda: "m3" in acks, what="the status of the message that found no room")
        assert acks["m3"].status is AckStatus.TIMEOUT
        assert "no room in 1 s" in str(acks["m3"].error)
        blocked = threads.deferToThread(post, 4, 60)
        # The broker holds the two sent messages' confirms: it shows the
        # publisher's connection as blocked, and all that while post() waits.
        await wait_for(
            lambda: "blocked" in rabbit_node.ctl("list_connections", "state"),
            what="the broker blocking the publisher",
        )
        assert not blocked.called
        assert publisher.unconfirmed == 2
        lifted = time.monotonic()
    returned = await blocked.addTimeout(30, reactor)
    assert returned >= lifted
    await publisher.flush(30)
    await publisher.close()
    assert [acks[f"m{n}"].status for n in (1, 2, 4)] == [AckStatus.SUCCESS] * 3
    assert broker.drain(queue_name) == [{"warm": True}, {"n": 1}, {"n": 2}, {"n": 4}]


# --- amqp_urls ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_publish_with_only_amqp_urls_fails_over_to_the_broker_that_answers(
    broker, queue_name
):
    """amqp_urls = [a dead node, the broker]: publish() reaches the second."""
    broker.declare_queue(queue_name)
    config = config_from_mapping({"amqp_urls": [unused_url(), broker.url], "connect_timeout": 5})
    await fedmq.publish(fedmq.Message({"via": "urls"}), "", queue_name, config=config)
    assert broker.drain(queue_name) == [{"via": "urls"}]


def test_the_one_shot_commands_use_amqp_urls(broker, tmp_path, queue_name):
    """Fedmq publish and fedmq get work with a config that lists only amqp_urls."""
    broker.declare_queue(queue_name)
    config = write_config(
        tmp_path / "config.toml", {"amqp_urls": [unused_url(), broker.url], "connect_timeout": 5}
    )
    published = fedmq_cli(
        "publish", "-c", str(config), "--exchange", "", "--routing-key", queue_name,
        "--body", '{"n": 1}', cwd=tmp_path,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    got = fedmq_cli("get", "-c", str(config), "--queue", queue_name, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout.splitlines()[0])["body"] == {"n": 1}


# --- scripts ------------------------------------------------------------------------


def test_four_threads_posting_at_once_get_exactly_one_status_per_message(
    broker, tmp_path, queue_name
):
    """A script posts 4 x 500 messages from threads and flushes: 2,000 ids, one SUCCESS each."""
    broker.declare_queue(queue_name)
    process = run_script(tmp_path, broker.url, "threads", queue_name, "500")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    statuses = last_json(out)["statuses"]
    assert len(statuses) == 2000
    assert all(seen == ["SUCCESS"] for seen in statuses.values())
    assert broker.ready(queue_name) == 2000


def test_a_thousand_publishes_with_a_config_path_use_one_connection(
    rabbit_node, vhost, vhost_name, tmp_path
):
    """publish(config="path") 1,000 times: the broker sees one connection, not 1,000."""
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(vhost))
    connection.channel().queue_declare("leak", durable=True)
    connection.close()
    process = run_script(tmp_path, vhost, "blocking-loop", "leak", "1000", stdin=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert json.loads(line) == {"published": 1000}, process.stderr
        listed = rabbit_node.ctl("list_connections", "-q", "vhost")
        assert [row.strip() for row in listed.splitlines()].count(vhost_name) == 1
    finally:
        process.communicate("\n", timeout=60)
    assert process.returncode == 0


def test_a_blocking_publish_raises_the_error_of_its_status_and_returns_on_success(
    broker, tmp_path, queue_name
):
    """From a script: an unroutable mandatory publish raises PublishReturned; a routed one
    returns None and its message is in the queue.
    """
    broker.declare_queue(queue_name)
    process = run_script(tmp_path, broker.url, "blocking-errors", queue_name)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert last_json(out)["raised"] == {"unroutable": "PublishReturned", "routed": None}
    assert broker.ready(queue_name) == 1


def test_an_asyncio_program_awaits_publish_post_and_flush_without_knowing_twisted(
    broker, tmp_path, queue_name
):
    """asyncio.run() and `async with fedmq.Publisher()`: awaited publish(), 49 posts with
    on_ack, an awaited post future and flush(): 50 SUCCESS, 51 messages queued; an
    unroutable mandatory publish raises PublishReturned in the coroutine.
    """
    broker.declare_queue(queue_name)
    process = run_script(tmp_path, broker.url, "asyncio", queue_name, "50")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    result = last_json(out)
    assert result["statuses"] == ["SUCCESS"] * 50
    assert result["raised"] == "PublishReturned"
    assert broker.drain(queue_name) == [{"n": n} for n in range(51)]


def test_publish_after_a_blocking_consume_returned_fails_at_once(broker, tmp_path, queue_name):
    """Once consume() has returned (reactor stopped), publish() raises within seconds."""
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"first": True}])
    process = run_script(tmp_path, broker.url, "after-consume", queue_name)
    started = time.monotonic()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    result = last_json(out)
    assert result["error"] == "PublishError"
    assert "reactor has stopped" in result["text"]
    assert result["seconds"] < 5
    assert time.monotonic() - started < 60


# --- a consumer's own publisher ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_consumer_retries_through_a_connection_apart_from_the_one_it_consumes_on(
    rabbit_node, vhost, vhost_name
):
    """A callback raising Retry: the broker sees two connections, and the message comes back."""
    runs: list[int] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.attempt)
        if message.attempt == 1:
            raise fedmq.Retry("once more")

    config = config_from_mapping(
        {
            "amqp_url": vhost,
            "queues": {"jobs": {"durable": True}},
            "bindings": [],
            "retry": {"delays": [0.2], "max_attempts": 3},
            "connect_timeout": 5,
        }
    )
    consumer = await fedmq.consume(callback, config=config)
    await fedmq.publish(fedmq.Message({"job": 1}), "", "jobs", config=config)
    await wait_for(lambda: len(runs) == 2, what="the retried run")
    listed = rabbit_node.ctl("list_connections", "-q", "vhost")
    connections = [row.strip() for row in listed.splitlines()].count(vhost_name)
    await consumer.cancel()
    assert runs == [1, 2]
    # The consumer's, its own publisher's, and the one publish() above used.
    assert connections == 3
