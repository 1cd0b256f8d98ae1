"""``fedmq requeue-dead`` against the suite's broker: parked messages go home."""

from __future__ import annotations

import gzip
import json

from tests.helpers import one_line
from tests.integration.processes import fedmq, write_config

VERDICT = {
    "X-Dropped-By": "orders-consumer",
    "X-Dropped-Reason": "gave up after 4 runs",
    "X-Dropped-Timestamp": "2026-11-23T12:00:00+00:00",
    "X-Processing-Exception": "the database said no",
    "X-Processing-Exceptions": 4,
}


def config_file(tmp_path, url):
    return str(write_config(tmp_path / "config.toml", {"amqp_url": url}))


def park(broker, queue, count):
    """Declare ``queue`` and ``queue.dead`` and park ``count`` JSON messages; their ids."""
    broker.declare_queue(queue)
    broker.declare_queue(f"{queue}.dead")
    return broker.publish(f"{queue}.dead", [{"n": n} for n in range(count)], headers=VERDICT)


def test_parked_messages_go_back_to_their_queue_without_the_verdict_headers(
    broker, tmp_path, queue_name
):
    """The moved messages keep their order, their X-Original-* headers, their
    other properties and their exact body bytes (a gzipped body stays gzipped);
    the X-Dropped-* and X-Processing-* headers are gone.
    """
    broker.declare_queue(queue_name)
    broker.declare_queue(f"{queue_name}.dead")
    original = {
        "X-Original-Exchange": "amq.topic",
        "X-Original-Routing-Key": "orders.created",
        "X-Original-Queue": queue_name,
        "source": "shop",
    }
    headers = {**original, **VERDICT}
    plain = json.dumps({"n": 1}).encode()
    # mtime pinned, so that the bytes compare equal to a fresh compression too.
    compressed = gzip.compress(json.dumps({"n": 2}).encode(), mtime=0)
    text = b"third, as text"
    ids = broker.publish(f"{queue_name}.dead", [plain], headers=headers, type="orders.created")
    ids += broker.publish(
        f"{queue_name}.dead", [compressed], headers=headers, content_encoding="gzip"
    )
    ids += broker.publish(f"{queue_name}.dead", [text], headers=headers, content_type="text/plain")

    result = fedmq(
        "requeue-dead", queue_name, "-c", config_file(tmp_path, broker.url), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Moved 3 messages from '{queue_name}.dead' to '{queue_name}'\n"
    assert broker.counts(f"{queue_name}.dead") == (0, 0)
    moved = broker.take_all(queue_name)
    assert [props.message_id for props, _ in moved] == ids
    assert [body for _, body in moved] == [plain, compressed, text]
    for props, _ in moved:
        assert props.headers == original
        assert props.delivery_mode == 2
    assert moved[0][0].type == "orders.created"
    assert moved[1][0].content_encoding == "gzip"
    assert moved[2][0].content_type == "text/plain"


def test_limit_moves_that_many_and_leaves_the_rest_parked(broker, tmp_path, queue_name):
    ids = park(broker, queue_name, 5)
    config = config_file(tmp_path, broker.url)

    result = fedmq("requeue-dead", queue_name, "--limit", "2", "-c", config, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Moved 2 messages from '{queue_name}.dead' to '{queue_name}'\n"
    assert [props.message_id for props, _ in broker.take_all(queue_name)] == ids[:2]
    assert [props.message_id for props, _ in broker.take_all(f"{queue_name}.dead")] == ids[2:]


def test_an_empty_dead_queue_moves_nothing_and_exits_0(broker, tmp_path, queue_name):
    park(broker, queue_name, 0)
    config = config_file(tmp_path, broker.url)

    result = fedmq("requeue-dead", queue_name, "-c", config, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"Moved 0 messages from '{queue_name}.dead' to '{queue_name}'\n"
    assert broker.counts(queue_name) == (0, 0)


def test_a_missing_dead_queue_exits_3_naming_it(broker, tmp_path, queue_name):
    broker.declare_queue(queue_name)
    config = config_file(tmp_path, broker.url)

    result = fedmq("requeue-dead", queue_name, "-c", config, cwd=tmp_path)

    assert result.returncode == 3
    line = one_line(result)
    assert f"'{queue_name}.dead'" in line and "404" in line
    assert result.stdout == ""


def test_a_missing_queue_exits_3_naming_it(broker, tmp_path, queue_name):
    broker.declare_queue(f"{queue_name}.dead")
    broker.publish(f"{queue_name}.dead", [{"n": 1}], headers=VERDICT)
    config = config_file(tmp_path, broker.url)

    result = fedmq("requeue-dead", queue_name, "-c", config, cwd=tmp_path)

    assert result.returncode == 3
    line = one_line(result)
    assert f"'{queue_name}'" in line and "404" in line
    assert broker.counts(f"{queue_name}.dead") == (1, 0)


def test_a_refused_republish_exits_8_and_the_message_stays_parked(broker, tmp_path, queue_name):
    """The queue takes one message and refuses (nacks) the next: one moves,
    the other two stay parked, and the error says how many moved.
    """
    broker.declare_queue(queue_name, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    broker.declare_queue(f"{queue_name}.dead")
    ids = broker.publish(f"{queue_name}.dead", [{"n": n} for n in range(3)], headers=VERDICT)
    config = config_file(tmp_path, broker.url)

    result = fedmq("requeue-dead", queue_name, "-c", config, cwd=tmp_path)

    assert result.returncode == 8
    line = one_line(result)
    assert "nacked" in line and "1 message moved" in line and f"'{queue_name}.dead'" in line
    assert result.stdout == ""
    assert [props.message_id for props, _ in broker.take_all(queue_name)] == ids[:1]
    parked = broker.take_all(f"{queue_name}.dead")
    assert sorted(props.message_id for props, _ in parked) == sorted(ids[1:])
    assert all(props.headers == VERDICT for props, _ in parked)
