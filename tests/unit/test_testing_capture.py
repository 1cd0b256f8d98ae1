"""fedmq.testing.capture_publishes: what code publishes, recorded and asserted on, never sent."""

from __future__ import annotations

import asyncio
import threading

import pytest
from twisted.internet import defer, task

import fedmq
from fedmq import Message
from fedmq.testing import capture_publishes


def test_a_blocking_publish_is_recorded_and_returns_at_once():
    """The blocking fedmq.publish() (off the reactor thread) returns None, sending nothing."""
    returned = []
    with capture_publishes() as published:
        worker = threading.Thread(
            target=lambda: returned.append(fedmq.publish(Message({"n": 1}, "org.example.a")))
        )
        worker.start()
        worker.join(10)
    assert returned == [None]
    assert published.topics == ["org.example.a"]


def test_a_twisted_publish_gets_a_fired_deferred():
    """With a reactor given, publish() returns a Deferred that has already fired."""
    with capture_publishes() as published:
        d = fedmq.publish(Message("x", "t"), reactor=task.Clock())
    assert isinstance(d, defer.Deferred) and d.called
    assert len(published) == 1


def test_an_awaited_publish_completes_inside_a_task():
    """In async code, publish() returns an awaitable that completes at once."""

    async def code() -> None:
        await fedmq.publish(Message("x", "org.example.async"))

    with capture_publishes() as published:
        asyncio.run(code())
    published.assert_published("org.example.async")


def test_publishes_from_other_threads_are_recorded():
    """A publish from a worker thread (a sync callback's) is captured too."""
    with capture_publishes() as published:
        worker = threading.Thread(target=fedmq.publish, args=(Message(1, "org.example.t"),))
        worker.start()
        worker.join()
    published.assert_published("org.example.t", body=1, count=1)


def test_topic_patterns_use_amqp_syntax():
    """'#' matches zero or more words and '*' exactly one, as RabbitMQ binds them."""
    with capture_publishes() as published:
        fedmq.publish(Message(1, "org.example"))
        fedmq.publish(Message(2, "org.example.build.done"))
    published.assert_published("org.example.#", count=2)
    published.assert_published("org.*", count=1)
    published.assert_published("*.example.*.done", body=2)


def test_headers_match_when_the_message_has_them_with_those_values():
    """headers= checks the named headers only; a different value does not match."""
    with capture_publishes() as published:
        fedmq.publish(Message(1, "t", {"owner": "carol", "extra": True}))
    published.assert_published(headers={"owner": "carol"})
    with pytest.raises(AssertionError, match="headers \\{'owner': 'bob'\\}, found 0"):
        published.assert_published(headers={"owner": "bob"})


def test_a_failed_assertion_says_what_was_published():
    """The error names the criteria, the count found and every message published."""
    with capture_publishes() as published:
        fedmq.publish(Message({"n": 1}, "org.example.a"))
    with pytest.raises(AssertionError) as error:
        published.assert_published("org.example.b", count=1)
    assert str(error.value) == (
        "Expected 1 message(s) matching topic 'org.example.b', found 0; "
        "published: 'org.example.a' {'n': 1}"
    )


def test_a_count_that_differs_fails():
    """count=1 fails when two messages match."""
    with capture_publishes() as published:
        fedmq.publish(Message(1, "a"))
        fedmq.publish(Message(1, "a"))
    with pytest.raises(AssertionError, match="Expected 1 message"):
        published.assert_published("a", count=1)


def test_nothing_published_is_asserted():
    """assert_nothing_published passes on silence and fails on any publish."""
    with capture_publishes() as published:
        pass
    published.assert_nothing_published()
    with capture_publishes() as published:
        fedmq.publish(Message(1, "a"))
    with pytest.raises(AssertionError, match="Expected nothing published; published: 'a' 1"):
        published.assert_nothing_published()


def test_strict_order_is_opt_in():
    """assert_topics checks order and count; assert_published does not care for order."""
    with capture_publishes() as published:
        fedmq.publish(Message(1, "b.created"))
        fedmq.publish(Message(2, "a.created"))
    published.assert_published("a.created")
    published.assert_topics("b.*", "a.#")
    with pytest.raises(AssertionError, match="in this order"):
        published.assert_topics("a.#", "b.*")
