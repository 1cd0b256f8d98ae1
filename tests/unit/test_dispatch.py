"""Tests for fedmq._dispatch: how outcomes are settled.

The Dispatcher is tested on the test's own thread with a fake channel that
records settlements and a fake executor that runs callbacks only when the test
says so. The real executors are in test_executors.py.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from fedmq._delivery import RETURNED, Delivery, Result
from fedmq._dispatch import Dispatcher
from fedmq._executors import run_sync
from fedmq._policy import ErrorPolicy
from fedmq.exceptions import ConsumerError, Drop, HaltConsumer, Nack, PublishReturned, Retry
from fedmq.message import Message, Properties
from tests.unit.fakes import FakeChannel

QUEUE = "things"
TOPIC = "org.example.thing"
EXCHANGE = "amq.topic"
#: How long a thread waits on an Event or Barrier before the test gives up on it.
WAIT = 5.0


def delivery(
    tag: int, body: bytes = b'{"n": 1}', content_type: str = "application/json", queue: str = QUEUE
) -> Delivery:
    """One delivery as the dispatcher hands it to an executor."""
    properties = Properties(content_type=content_type, message_id=f"msg-{tag}")
    return Delivery(tag, False, EXCHANGE, TOPIC, properties, body, queue)


# --- fakes for the Dispatcher ----------------------------------------------


class FakeExecutor:
    """Runs each callback on the test's thread, when the test says so.

    Deliveries wait in ``queued`` until started; ``finish`` runs the real
    :func:`run_sync` on some of them and reports the outcomes as one batch,
    as a real executor's batched wake-up does.
    """

    def __init__(self, callback: Callable[[Message], Any], on_results: Callable) -> None:
        self._callback = callback
        self._on_results = on_results
        self.queued: dict[int, Delivery] = {}
        self.running: dict[int, Delivery] = {}
        self.stop_intake_calls = 0
        self.exited: defer.Deferred[None] = defer.Deferred()

    def submit(self, item: Delivery) -> None:
        self.queued[item[0]] = item

    def start(self, *tags: int) -> None:
        for tag in tags:
            self.running[tag] = self.queued.pop(tag)

    def _take(self, tag: int) -> Delivery:
        return self.running.pop(tag) if tag in self.running else self.queued.pop(tag)

    def finish(self, *tags: int) -> None:
        self._on_results([run_sync(self._callback, self._take(tag)) for tag in tags])

    def return_unrun(self, *tags: int) -> None:
        """Report deliveries a halted worker took but did not run."""
        self._on_results(
            [Result(item[0], RETURNED, None, None, 0.0, item) for item in map(self._take, tags)]
        )

    def stop_intake(self) -> defer.Deferred[list[Delivery]]:
        self.stop_intake_calls += 1
        unstarted = list(self.queued.values())
        self.queued.clear()
        return defer.succeed(unstarted)

    def join(self) -> defer.Deferred[None]:
        return self.exited


class Callback:
    """Records the messages it is called with; raises what the test sets per tag."""

    def __init__(self) -> None:
        self.seen: list[Message] = []
        self.raises: dict[int, BaseException] = {}

    def __call__(self, message: Message) -> None:
        self.seen.append(message)
        exc = self.raises.get(message.delivery_tag)
        if exc is not None:
            raise exc

    @property
    def seen_tags(self) -> list[int | None]:
        return [message.delivery_tag for message in self.seen]


class Harness:
    """A Dispatcher wired to a FakeChannel, a FakeExecutor and recording hooks."""

    def __init__(
        self,
        policy: ErrorPolicy | None = None,
        on_queue_missing: Callable[[Exception], None] | None = None,
    ) -> None:
        self.channel = FakeChannel()
        self.callback = Callback()
        self.halts: list[HaltConsumer] = []
        self.errors: list[tuple[BaseException, Message | None]] = []
        self.dispatcher = Dispatcher(
            self.channel,
            self._make_executor,
            self.halts.append,
            lambda exc, message, _duration, _errors: self.errors.append((exc, message)),
            policy=policy,
            on_queue_missing=on_queue_missing,
        )
        self._deliver = {QUEUE: self.dispatcher.deliver_for(QUEUE)}

    def _make_executor(self, on_results: Callable[[list[Result]], None]) -> FakeExecutor:
        self.executor = FakeExecutor(self.callback, on_results)
        return self.executor

    def receive(
        self,
        *tags: int,
        body: bytes = b'{"n": 1}',
        content_type: str = "application/json",
        queue: str = QUEUE,
    ) -> None:
        if queue not in self._deliver:
            self._deliver[queue] = self.dispatcher.deliver_for(queue)
        for tag in tags:
            _, redelivered, exchange, topic, properties, body_, _ = delivery(
                tag, body, content_type
            )
            self._deliver[queue](tag, redelivered, exchange, topic, properties, body_)

    @property
    def sent(self) -> list[tuple[Any, ...]]:
        return self.channel.sent

    @property
    def counts(self) -> dict[str, int]:
        return self.dispatcher.counts


@pytest.fixture
def harness() -> Harness:
    return Harness()


def counts(
    received: int = 0, acked: int = 0, requeued: int = 0, dropped: int = 0, failed: int = 0
) -> dict[str, int]:
    return {
        "received": received,
        "acked": acked,
        "requeued": requeued,
        "dropped": dropped,
        "failed": failed,
    }


# --- acks ---------------------------------------------------------------------


def test_a_single_finished_delivery_is_acked_alone(harness: Harness):
    """One delivery whose callback returns is acked with multiple=False."""
    harness.receive(1)
    harness.executor.finish(1)
    assert harness.sent == [("ack", 1, False)]
    assert harness.counts == counts(received=1, acked=1)
    assert harness.dispatcher.in_flight == 0


def test_a_contiguous_run_of_finished_deliveries_is_acked_once(harness: Harness):
    """Deliveries finishing together are acked by one ack(multiple=True) at the highest tag."""
    harness.receive(1, 2, 3)
    harness.executor.finish(1, 2, 3)
    assert harness.sent == [("ack", 3, True)]
    assert harness.counts == counts(received=3, acked=3)


def test_each_batch_of_finished_deliveries_is_acked_separately(harness: Harness):
    """Runs finishing in separate batches each get their own ack, covering only that run."""
    harness.receive(1, 2, 3, 4, 5)
    harness.executor.finish(1, 2)
    harness.executor.finish(3)
    harness.executor.finish(4, 5)
    assert harness.sent == [("ack", 2, True), ("ack", 3, False), ("ack", 5, True)]


def test_a_delivery_finishing_before_an_earlier_one_is_acked_alone_at_once(harness: Harness):
    """Tag 2 finishing first is acked alone (multiple=False), without waiting for tag 1."""
    harness.receive(1, 2)
    harness.executor.finish(2)
    assert harness.sent == [("ack", 2, False)]
    assert harness.counts["acked"] == 1
    assert harness.dispatcher.in_flight == 1
    harness.executor.finish(1)
    assert harness.sent == [("ack", 2, False), ("ack", 1, False)]
    assert harness.counts == counts(received=2, acked=2)


def test_no_ack_covers_a_delivery_whose_callback_is_still_running(harness: Harness):
    """With tag 2 still running, tags 1 and 3 are each acked alone; 2 is acked when it ends."""
    harness.receive(1, 2, 3)
    harness.executor.start(1, 2, 3)
    harness.executor.finish(1, 3)
    assert harness.sent == [("ack", 1, False), ("ack", 3, False)]
    harness.executor.finish(2)
    assert harness.sent == [("ack", 1, False), ("ack", 3, False), ("ack", 2, False)]
    assert harness.counts == counts(received=3, acked=3)


def test_a_run_from_the_oldest_is_coalesced_and_later_ones_are_acked_alone(harness: Harness):
    """1, 2, 4, 5 finish while 3 runs: one ack(2, multiple=True), then 4 and 5 alone; 3 later."""
    harness.receive(1, 2, 3, 4, 5)
    harness.executor.start(1, 2, 3, 4, 5)
    harness.executor.finish(1, 2, 4, 5)
    assert harness.sent == [("ack", 2, True), ("ack", 4, False), ("ack", 5, False)]
    harness.executor.finish(3)
    assert harness.sent[3:] == [("ack", 3, False)]
    assert harness.counts == counts(received=5, acked=5)
    assert harness.dispatcher.in_flight == 0


def test_a_later_run_acks_only_the_tags_not_acked_yet(harness: Harness):
    """2 acked alone and 3 nacked while 1 runs; 1 and 4 then end: ack(4, multiple=True).

    On the broker, multiple=True settles only tags still unacked up to 4 (1 and 4); no
    tag is acked twice, and no ack is sent for the nacked 3.
    """
    harness.callback.raises[3] = Nack()
    harness.receive(1, 2, 3, 4, 5)
    harness.executor.start(1, 2, 3, 4, 5)
    harness.executor.finish(2)
    harness.executor.finish(3)
    assert harness.sent == [("ack", 2, False), ("nack", 3, True)]
    harness.executor.finish(1, 4)
    assert harness.sent[2:] == [("ack", 4, True)]
    harness.executor.finish(5)
    assert harness.sent[3:] == [("ack", 5, False)]
    acked = [call[1] for call in harness.sent if call[0] == "ack"]
    assert len(acked) == len(set(acked))
    assert harness.counts == counts(received=5, acked=4, requeued=1)


def test_deliveries_from_two_queues_on_one_channel_share_one_ack_sequence(harness: Harness):
    """Tags are the channel's: deliveries from two queues are acked together, in tag order."""
    harness.receive(1, queue="first")
    harness.receive(2, queue="second")
    harness.executor.finish(1, 2)
    assert harness.sent == [("ack", 2, True)]
    assert [message.queue for message in harness.callback.seen] == ["first", "second"]


def test_a_callback_gets_the_delivery_details(harness: Harness):
    """The message a callback sees carries its body, topic, exchange, queue and tag."""
    harness.receive(7, body=b'{"hello": "world"}')
    harness.executor.finish(7)
    [message] = harness.callback.seen
    assert message.body == {"hello": "world"}
    assert (message.topic, message.exchange, message.queue) == (TOPIC, EXCHANGE, QUEUE)
    assert message.delivery_tag == 7
    assert message.id == "msg-7"


# --- acks as callbacks end at their own pace, on a Clock ----------------------------------


class TimedExecutor:
    """Runs ``workers`` callbacks at a time, each taking ``durations[tag]`` seconds of ``clock``.

    Callbacks ending at the same moment are reported as one batch, as a real
    executor's batched wake-up does.
    """

    def __init__(
        self,
        clock: Clock,
        workers: int,
        durations: dict[int, float],
        callback: Callable[[Message], Any],
        on_results: Callable[[list[Result]], None],
    ) -> None:
        self._clock, self._workers, self._durations = clock, workers, durations
        self._callback, self._on_results = callback, on_results
        self._waiting: deque[Delivery] = deque()
        self._busy = 0
        self._ended: list[Result] = []

    def submit(self, item: Delivery) -> None:
        self._waiting.append(item)
        self._start()

    def _start(self) -> None:
        while self._busy < self._workers and self._waiting:
            item = self._waiting.popleft()
            self._busy += 1
            self._clock.callLater(self._durations.get(item[0], 0.0), self._end, item)

    def _end(self, item: Delivery) -> None:
        self._busy -= 1
        if not self._ended:
            self._clock.callLater(0, self._report)
        self._ended.append(run_sync(self._callback, item))
        self._start()

    def _report(self) -> None:
        batch, self._ended = self._ended, []
        self._on_results(batch)


def timed_dispatcher(
    clock: Clock, workers: int, durations: dict[int, float]
) -> tuple[Dispatcher, FakeChannel]:
    channel = FakeChannel()
    dispatcher = Dispatcher(
        channel,
        lambda on_results: TimedExecutor(clock, workers, durations, Callback(), on_results),
        lambda halt: None,
        lambda exc, message, duration, errors: None,
    )
    return dispatcher, channel


def receive_in_order(dispatcher: Dispatcher, tags: range) -> None:
    on_delivery = dispatcher.deliver_for(QUEUE)
    for tag in tags:
        _, redelivered, exchange, topic, properties, body, _ = delivery(tag)
        on_delivery(tag, redelivered, exchange, topic, properties, body)


def test_a_slow_callback_holds_up_no_other_delivery_s_ack():
    """Concurrency 4, tag 1 taking 6 s: tags 2 to 20 are each acked as they end, at once."""
    clock = Clock()
    dispatcher, channel = timed_dispatcher(clock, workers=4, durations={1: 6.0})
    receive_in_order(dispatcher, range(1, 21))
    clock.advance(0)
    assert channel.sent == [("ack", tag, False) for tag in range(2, 21)]
    assert dispatcher.counts["acked"] == 19
    assert dispatcher.in_flight == 1
    clock.advance(6)
    assert channel.sent[19:] == [("ack", 1, False)]
    assert dispatcher.counts["acked"] == 20


def test_callbacks_ending_out_of_order_are_each_acked_when_they_end():
    """4 ends first (acked alone), 1 and 2 together (one ack(2, multiple=True)), 3 last."""
    clock = Clock()
    dispatcher, channel = timed_dispatcher(clock, workers=4, durations={1: 1, 2: 1, 3: 2})
    receive_in_order(dispatcher, range(1, 5))
    clock.advance(0)
    assert channel.sent == [("ack", 4, False)]
    clock.advance(1)
    assert channel.sent == [("ack", 4, False), ("ack", 2, True)]
    clock.advance(1)
    assert channel.sent == [("ack", 4, False), ("ack", 2, True), ("ack", 3, False)]
    assert dispatcher.counts["acked"] == 4


# --- nacks and rejects ------------------------------------------------------


def test_nack_requeues_that_delivery_alone(harness: Harness):
    """A callback raising Nack gets nack(tag, requeue=True) for that delivery only."""
    harness.callback.raises[1] = Nack()
    harness.receive(1)
    harness.executor.finish(1)
    assert harness.sent == [("nack", 1, True)]
    assert harness.counts == counts(received=1, requeued=1)


def test_a_nack_of_an_older_delivery_leaves_a_newer_one_acked_once(harness: Harness):
    """Tag 2 is acked alone while tag 1 runs; tag 1's Nack later settles it alone, no re-ack."""
    harness.callback.raises[1] = Nack()
    harness.receive(1, 2)
    harness.executor.finish(2)
    assert harness.sent == [("ack", 2, False)]
    harness.executor.finish(1)
    assert harness.sent == [("ack", 2, False), ("nack", 1, True)]
    assert harness.counts == counts(received=2, acked=1, requeued=1)


def test_a_nacked_delivery_between_acked_ones_is_never_acked(harness: Harness):
    """Tags 1 ack, 2 Nack, 3 ack: 2 is nacked alone and one ack(3, multiple=True) covers 1 and 3."""
    harness.callback.raises[2] = Nack()
    harness.receive(1, 2, 3)
    harness.executor.finish(1, 2, 3)
    assert harness.sent == [("nack", 2, True), ("ack", 3, True)]
    assert ("ack", 2, False) not in harness.sent
    assert harness.counts == counts(received=3, acked=2, requeued=1)


def test_drop_rejects_without_requeue(harness: Harness, caplog: pytest.LogCaptureFixture):
    """A callback raising Drop gets reject(tag): the message goes to the dead-letter exchange."""
    harness.callback.raises[1] = Drop("not for us")
    harness.receive(1)
    with caplog.at_level(logging.INFO, logger="fedmq"):
        harness.executor.finish(1)
    assert harness.sent == [("reject", 1)]
    assert harness.counts == counts(received=1, dropped=1)
    assert "message msg-1" in caplog.text
    assert "not for us" in caplog.text


def test_an_undecodable_body_is_rejected_without_calling_the_callback(
    harness: Harness, caplog: pytest.LogCaptureFixture
):
    """A JSON message whose body is not JSON is rejected, logged, and never reaches the callback."""
    harness.receive(1, body=b"{bad", content_type="application/json")
    with caplog.at_level(logging.ERROR, logger="fedmq"):
        harness.executor.finish(1)
    assert harness.callback.seen == []
    assert harness.sent == [("reject", 1)]
    assert harness.counts == counts(received=1, dropped=1)
    assert "undecodable message msg-1" in caplog.text


def test_the_log_line_for_an_undecodable_delivery_names_its_message(
    harness: Harness, caplog: pytest.LogCaptureFixture
):
    """The error logged for an undecodable body names the message id, topic and queue."""
    harness.receive(1, body=b"{bad", content_type="application/json")
    with caplog.at_level(logging.ERROR, logger="fedmq"):
        harness.executor.finish(1)
    assert "msg-1" in caplog.text
    assert TOPIC in caplog.text
    assert QUEUE in caplog.text


def test_undecodable_deliveries_do_not_stop_the_others(harness: Harness):
    """A bad body among good ones is rejected alone; the good ones are still acked."""
    harness.receive(1)
    harness.receive(2, body=b"{bad")
    harness.receive(3)
    harness.executor.finish(1, 2, 3)
    assert harness.sent == [("reject", 2), ("ack", 3, True)]
    assert harness.callback.seen_tags == [1, 3]


# --- halt and errors ----------------------------------------------------------


def test_halt_acks_the_message_and_reports_the_halt(harness: Harness):
    """HaltConsumer() acks its message and hands the exception to on_halt."""
    halt = HaltConsumer(exit_code=0, reason="done for today")
    harness.callback.raises[1] = halt
    harness.receive(1)
    harness.executor.finish(1)
    assert harness.sent == [("ack", 1, False)]
    assert harness.halts == [halt]
    assert harness.counts == counts(received=1, acked=1)


def test_halt_acks_its_message_at_once_while_an_older_one_runs(harness: Harness):
    """HaltConsumer() from tag 2 while tag 1 still runs: 2 is acked alone, at once."""
    harness.callback.raises[2] = HaltConsumer(exit_code=0)
    harness.receive(1, 2)
    harness.executor.start(1)
    harness.executor.finish(2)
    assert harness.sent == [("ack", 2, False)]
    assert len(harness.halts) == 1


def test_halt_with_requeue_nacks_the_message_and_reports_the_halt(harness: Harness):
    """HaltConsumer(requeue=True) returns its message to the queue and hands itself to on_halt."""
    halt = HaltConsumer(exit_code=3, requeue=True)
    harness.callback.raises[1] = halt
    harness.receive(1)
    harness.executor.finish(1)
    assert harness.sent == [("nack", 1, True)]
    assert harness.halts == [halt]
    assert harness.counts == counts(received=1, requeued=1)


@pytest.mark.parametrize(
    "boom", [RuntimeError("database is down"), ConsumerError("database is down")]
)
def test_a_consumer_error_requeues_that_message_and_reports_it(harness: Harness, boom: Exception):
    """An unexpected exception or ConsumerError nacks its tag alone and calls on_error with it."""
    harness.callback.raises[2] = boom
    harness.receive(1, 2, 3)
    harness.executor.finish(1, 2, 3)
    assert harness.sent == [("nack", 2, True), ("ack", 3, True)]
    [(exc, message)] = harness.errors
    assert exc is boom
    assert message is not None and message.delivery_tag == 2
    assert harness.counts == counts(received=3, acked=2, failed=1)


def test_returned_deliveries_are_requeued(harness: Harness):
    """Deliveries a halted worker hands back unrun are nacked with requeue, one by one."""
    harness.receive(1, 2)
    harness.executor.return_unrun(1, 2)
    assert harness.sent == [("nack", 1, True), ("nack", 2, True)]
    assert harness.callback.seen == []
    assert harness.counts == counts(received=2, requeued=2)
    assert harness.dispatcher.in_flight == 0


def test_the_counts_add_up_over_every_outcome(harness: Harness):
    """Counts and in_flight follow each delivery from receipt to settlement."""
    harness.callback.raises.update({2: Nack(), 3: Drop(), 4: ValueError("bad")})
    harness.receive(1, 2, 3, 4)
    harness.receive(5, body=b"{bad")
    harness.receive(6, 7)
    assert harness.counts == counts(received=7)
    assert harness.dispatcher.in_flight == 7
    harness.executor.finish(1, 2, 3, 4, 5)
    assert harness.dispatcher.in_flight == 2
    harness.executor.return_unrun(6)
    harness.executor.finish(7)
    assert harness.dispatcher.in_flight == 0
    assert harness.counts == counts(received=7, acked=2, requeued=2, dropped=2, failed=1)


# --- stopping -------------------------------------------------------------------


def test_stop_returns_unstarted_deliveries_one_by_one(harness: Harness):
    """stop() nacks each delivery not yet started, individually, and waits for the running one."""
    harness.receive(1, 2, 3)
    harness.executor.start(1)
    stopped = harness.dispatcher.stop()
    assert sorted(harness.sent) == [("nack", 2, True), ("nack", 3, True)]
    assert harness.dispatcher.in_flight == 1
    assert not stopped.called
    harness.executor.finish(1)
    assert harness.sent[-1] == ("ack", 1, False)
    assert not stopped.called
    harness.executor.exited.callback(None)
    assert stopped.called
    assert harness.dispatcher.in_flight == 0
    assert harness.counts == counts(received=3, acked=1, requeued=2)


def test_stop_returns_an_unstarted_delivery_older_than_a_finished_one(harness: Harness):
    """A delivery finished before an older, unstarted one is acked at once; stop nacks the older."""
    harness.receive(1, 2)
    harness.executor.start(2)
    harness.executor.finish(2)
    assert harness.sent == [("ack", 2, False)]
    harness.dispatcher.stop()
    assert harness.sent == [("ack", 2, False), ("nack", 1, True)]


def test_stop_twice_stops_the_executor_once(harness: Harness):
    """Calling stop() again returns another Deferred for the same stop."""
    first = harness.dispatcher.stop()
    second = harness.dispatcher.stop()
    assert harness.executor.stop_intake_calls == 1
    harness.executor.exited.callback(None)
    assert first.called and second.called


def test_after_abandon_nothing_more_is_sent_on_the_channel(harness: Harness):
    """Once the channel is gone, no settlement is sent: its tags are dead."""
    harness.callback.raises[2] = Nack()
    harness.callback.raises[3] = Drop()
    harness.receive(1, 2, 3, 4, 5)
    harness.executor.start(1, 2, 3)
    abandoned = harness.dispatcher.abandon()
    harness.executor.finish(1, 2, 3)
    harness.executor.exited.callback(None)
    assert harness.sent == []
    assert abandoned.called
    assert harness.dispatcher.in_flight == 0


def test_abandon_after_stop_sends_nothing_more(harness: Harness):
    """A stop that loses its channel part way settles nothing after the loss."""
    harness.receive(1, 2)
    harness.executor.start(1)
    harness.dispatcher.stop()
    assert harness.sent == [("nack", 2, True)]
    harness.dispatcher.abandon()
    harness.executor.finish(1)
    assert harness.sent == [("nack", 2, True)]


# --- republishing: retries, parking, the drop exchange -------------------------------


class FakePublish:
    """Stands in for the consumer's confirmed publish; the test confirms or fails each one."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes, Properties]] = []
        self.pending: list[defer.Deferred[None]] = []

    def __call__(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties
    ) -> defer.Deferred[None]:
        self.sent.append((exchange, routing_key, body, properties))
        d: defer.Deferred[None] = defer.Deferred()
        self.pending.append(d)
        return d

    def confirm(self) -> None:
        self.pending.pop(0).callback(None)

    def fail(self, reason: Exception) -> None:
        self.pending.pop(0).errback(reason)


def republishing_harness(
    on_queue_missing: Callable[[Exception], None] | None = None, **keys: Any
) -> tuple[Harness, FakePublish]:
    publish = FakePublish()
    keys.setdefault("retry_queues", [QUEUE])
    harness = Harness(ErrorPolicy(name="worker", publish=publish, **keys), on_queue_missing)
    return harness, publish


def test_a_retried_message_is_acked_only_once_its_copy_is_confirmed():
    """Retry: the copy goes to the wait queue; the original is acked after the broker confirms."""
    harness, publish = republishing_harness()
    harness.callback.raises[1] = Retry("later")
    harness.receive(1, 2)
    harness.executor.finish(1, 2)
    [(exchange, routing_key, body, properties)] = publish.sent
    assert (exchange, routing_key, body) == ("", f"{QUEUE}.retry.1s", b'{"n": 1}')
    assert properties.headers["X-Processing-Exceptions"] == 1
    assert harness.sent == [("ack", 2, False)]  # 2 does not wait for 1's copy
    assert harness.dispatcher.in_flight == 1
    publish.confirm()
    assert harness.sent == [("ack", 2, False), ("ack", 1, False)]
    assert harness.dispatcher.in_flight == 0
    assert harness.dispatcher.stats.queue(QUEUE)["retried"] == 1


def test_deliveries_after_one_awaiting_its_copy_s_confirm_are_acked_meanwhile():
    """2 raises Retry; 1 and 3 are acked before 2's copy is confirmed, and 2 after it."""
    harness, publish = republishing_harness()
    harness.callback.raises[2] = Retry("later")
    harness.receive(1, 2, 3)
    harness.executor.finish(1, 2, 3)
    assert harness.sent == [("ack", 1, False), ("ack", 3, False)]
    publish.confirm()
    assert harness.sent == [("ack", 1, False), ("ack", 3, False), ("ack", 2, False)]
    assert harness.counts == counts(received=3, acked=3)


def test_a_retried_message_is_acked_on_its_copy_s_confirm_while_an_older_one_runs():
    """2 raises Retry while 1 runs: the confirm of 2's copy acks 2 at once, not after 1."""
    harness, publish = republishing_harness()
    harness.callback.raises[2] = Retry("later")
    harness.receive(1, 2)
    harness.executor.start(1)
    harness.executor.finish(2)
    assert harness.sent == []
    publish.confirm()
    assert harness.sent == [("ack", 2, False)]
    harness.executor.finish(1)
    assert harness.sent == [("ack", 2, False), ("ack", 1, False)]


def test_a_delivery_after_one_copied_to_the_drop_exchange_is_acked_before_its_reject():
    """1 raises Drop (copied to the drop exchange); 2 is acked meanwhile; 1 is rejected after."""
    harness, publish = republishing_harness(drop_exchange="drops")
    harness.callback.raises[1] = Drop("no customer")
    harness.receive(1, 2)
    harness.executor.finish(1, 2)
    assert harness.sent == [("ack", 2, False)]
    publish.confirm()
    assert harness.sent == [("ack", 2, False), ("reject", 1)]
    assert harness.counts == counts(received=2, acked=1, dropped=1)


def test_a_copy_that_fails_to_publish_leaves_the_original_requeued():
    """A nacked, unroutable or timed-out copy: the original goes back to its queue."""
    harness, publish = republishing_harness()
    harness.callback.raises[1] = Retry("later")
    harness.receive(1)
    harness.executor.finish(1)
    publish.fail(RuntimeError("the broker nacked it"))
    assert harness.sent == [("nack", 1, True)]
    assert harness.counts == counts(received=1, requeued=1)


def test_a_dropped_message_is_rejected_after_its_copy_reaches_the_drop_exchange():
    """Drop with a drop exchange: the copy first, then reject (so the DLX gets it too)."""
    harness, publish = republishing_harness(drop_exchange="drops")
    harness.callback.raises[1] = Drop("no customer")
    harness.receive(1)
    harness.executor.finish(1)
    [(exchange, routing_key, _, properties)] = publish.sent
    assert (exchange, routing_key) == ("drops", TOPIC)
    assert properties.headers["X-Dropped-Reason"] == "the callback raised Drop: no customer"
    assert harness.sent == []
    publish.confirm()
    assert harness.sent == [("reject", 1)]
    assert harness.counts == counts(received=1, dropped=1)


def test_an_undecodable_message_is_parked_and_acked():
    """With a dead queue, an undecodable body is parked there, then acked."""
    harness, publish = republishing_harness()
    harness.receive(1, body=b"{bad")
    harness.executor.finish(1)
    [(_, routing_key, body, properties)] = publish.sent
    assert (routing_key, body) == (f"{QUEUE}.dead", b"{bad")
    assert properties.headers["X-Dropped-Reason"].startswith("undecodable message msg-1")
    publish.confirm()
    assert harness.sent == [("ack", 1, False)]
    assert harness.dispatcher.stats.queue(QUEUE)["parked"] == 1


def test_stop_waits_for_copies_still_unconfirmed():
    """A graceful stop fires only once every republished copy is confirmed and settled."""
    harness, publish = republishing_harness()
    harness.callback.raises[1] = Retry("later")
    harness.receive(1)
    harness.executor.finish(1)
    harness.executor.exited.callback(None)
    stopped = harness.dispatcher.stop()
    assert not stopped.called
    publish.confirm()
    assert stopped.called
    assert harness.sent == [("ack", 1, False)]


def test_an_abandoned_channel_settles_nothing_after_a_copy_is_confirmed():
    """The channel went away: the broker requeues the original; no ack is sent on a dead tag."""
    harness, publish = republishing_harness()
    harness.callback.raises[1] = Retry("later")
    harness.receive(1)
    harness.executor.finish(1)
    harness.dispatcher.abandon()
    publish.confirm()
    assert harness.sent == []


def test_a_message_of_a_type_not_accepted_never_reaches_the_callback():
    """message_types: the delivery is dropped on arrival; the callback never sees it."""
    harness, publish = republishing_harness(message_types=["order.created"])
    harness.receive(1)  # its type is None
    assert harness.callback.seen == []
    assert harness.sent == [("reject", 1)]
    assert harness.counts == counts(received=1, dropped=1)
    assert publish.sent == []


def test_with_drop_invalid_messages_off_a_wrong_type_is_a_consumer_error():
    harness, _ = republishing_harness(message_types=["order.created"], drop_invalid_messages=False)
    harness.receive(1)
    assert harness.sent == [("nack", 1, True)]
    [(exc, message)] = harness.errors
    assert isinstance(exc, ConsumerError) and message is None
    assert "is not one of the accepted message_types" in str(exc)


def test_a_copy_the_drop_exchange_cannot_route_is_parked_instead():
    """An unbound drop exchange: requeueing would loop, so the message is parked."""
    harness, publish = republishing_harness(drop_exchange="drops")
    harness.callback.raises[1] = Drop("no customer")
    harness.receive(1)
    harness.executor.finish(1)
    publish.fail(PublishReturned("no queue bound"))
    [_, (exchange, routing_key, _, properties)] = publish.sent
    assert (exchange, routing_key) == ("", f"{QUEUE}.dead")
    assert properties.headers["X-Dropped-Reason"] == "the callback raised Drop: no customer"
    publish.confirm()
    assert harness.sent == [("reject", 1)]


def test_a_missing_retry_queue_makes_the_consumer_declare_it_again():
    """A wait queue deleted under fedmq: nothing is settled, and the consumer reconnects."""
    missing: list[Exception] = []
    harness, publish = republishing_harness(missing.append)
    harness.callback.raises[1] = Retry("later")
    harness.receive(1)
    harness.executor.finish(1)
    publish.fail(PublishReturned("no route"))
    assert harness.sent == []
    [reason] = missing
    assert f"queue '{QUEUE}.retry.1s' does not exist" in str(reason)


def test_a_message_whose_retry_queue_is_gone_is_never_acked_by_a_later_run():
    """Its copy came back unroutable: it is left for the broker to requeue, and 2 and 3,
    finishing together later, are acked alone (a multiple ack of 3 would ack 1 too).
    """
    missing: list[Exception] = []
    harness, publish = republishing_harness(missing.append)
    harness.callback.raises[1] = Retry("later")
    harness.receive(1, 2, 3)
    harness.executor.finish(1)
    publish.fail(PublishReturned("no route"))
    harness.executor.finish(2, 3)
    assert harness.sent == [("ack", 2, False), ("ack", 3, False)]
    assert len(missing) == 1
