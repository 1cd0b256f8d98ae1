"""The confirm bookkeeping: one status per message, from the broker's acks, nacks and returns."""

from __future__ import annotations

from typing import Any

from twisted.internet import task

import fedmq
from fedmq._confirms import Confirms, Outgoing
from fedmq.acks import Ack, AckStatus


class Recorder:
    def __init__(self) -> None:
        self.acks: list[Ack] = []
        self.freed: list[tuple[int, int]] = []

    def on_settled(self, count: int, size: int) -> None:
        self.freed.append((count, size))

    def statuses(self) -> dict[str | None, AckStatus]:
        return {ack.message_id: ack.status for ack in self.acks}


def make() -> tuple[Confirms, Recorder, task.Clock]:
    clock = task.Clock()
    recorder = Recorder()
    return Confirms(clock, recorder.on_settled), recorder, clock


def send(
    confirms: Confirms,
    recorder: Recorder,
    clock: Any,
    message_id: str,
    mandatory: bool = False,
    timeout: float = 30.0,
) -> None:
    properties = fedmq.Properties()
    properties.message_id = message_id
    confirms.sent(
        Outgoing(
            "amq.topic",
            "key",
            b"body",
            properties,
            mandatory,
            clock.seconds() + timeout,
            recorder.acks.append,
        )
    )


def test_a_multiple_ack_confirms_every_message_up_to_its_tag():
    """basic.ack with multiple=True gives SUCCESS to each message up to the tag, once."""
    confirms, recorder, clock = make()
    for n in range(1, 6):
        send(confirms, recorder, clock, f"m{n}")
    confirms.confirmed(True, 3, True)
    assert recorder.statuses() == {
        "m1": AckStatus.SUCCESS,
        "m2": AckStatus.SUCCESS,
        "m3": AckStatus.SUCCESS,
    }
    confirms.confirmed(True, 5, True)
    assert [ack.message_id for ack in recorder.acks] == ["m1", "m2", "m3", "m4", "m5"]
    assert len(confirms) == 0
    assert recorder.freed == [(3, 12), (2, 8)]


def test_a_multiple_nack_refuses_every_message_up_to_its_tag_with_a_publish_nacked():
    """basic.nack with multiple=True gives NACKED, with a PublishNacked naming the message."""
    confirms, recorder, clock = make()
    for n in range(1, 4):
        send(confirms, recorder, clock, f"m{n}")
    confirms.confirmed(True, 1, False)
    confirms.confirmed(False, 3, True)
    assert recorder.statuses() == {
        "m1": AckStatus.SUCCESS,
        "m2": AckStatus.NACKED,
        "m3": AckStatus.NACKED,
    }
    error = recorder.acks[-1].error
    assert isinstance(error, fedmq.PublishNacked)
    assert "m3" in str(error)


def test_single_acks_out_of_order_then_a_multiple_one_settle_each_message_once():
    """Acks for tags 2 then 1, then multiple up to 3: three statuses, none twice."""
    confirms, recorder, clock = make()
    for n in range(1, 4):
        send(confirms, recorder, clock, f"m{n}")
    confirms.confirmed(True, 2, False)
    confirms.confirmed(True, 1, False)
    confirms.confirmed(True, 3, True)
    assert [ack.message_id for ack in recorder.acks] == ["m2", "m1", "m3"]


def test_a_return_marks_its_own_message_even_when_it_is_not_the_oldest():
    """A basic.return for the third mandatory message makes it RETURNED, not the oldest."""
    confirms, recorder, clock = make()
    for n in range(1, 4):
        send(confirms, recorder, clock, f"m{n}", mandatory=True)
    confirms.returned("m3")
    confirms.returned("m2")
    confirms.confirmed(True, 3, True)
    assert recorder.statuses() == {
        "m1": AckStatus.SUCCESS,
        "m2": AckStatus.RETURNED,
        "m3": AckStatus.RETURNED,
    }
    assert isinstance(recorder.acks[-1].error, fedmq.PublishReturned)


def test_a_return_without_a_message_id_marks_the_oldest_mandatory_message():
    """A returned message with no id is the oldest mandatory one not yet returned."""
    confirms, recorder, clock = make()
    send(confirms, recorder, clock, "plain")
    send(confirms, recorder, clock, "first", mandatory=True)
    send(confirms, recorder, clock, "second", mandatory=True)
    confirms.returned(None)
    confirms.confirmed(True, 3, True)
    assert recorder.statuses() == {
        "plain": AckStatus.SUCCESS,
        "first": AckStatus.RETURNED,
        "second": AckStatus.SUCCESS,
    }


def test_a_message_the_broker_leaves_unconfirmed_times_out_alone():
    """With one timer, the message past its deadline gets TIMEOUT, the later one waits."""
    confirms, recorder, clock = make()
    send(confirms, recorder, clock, "short", timeout=5)
    send(confirms, recorder, clock, "long", timeout=60)
    clock.advance(5)
    assert recorder.statuses() == {"short": AckStatus.TIMEOUT}
    assert isinstance(recorder.acks[0].error, fedmq.PublishTimeout)
    clock.advance(50)
    assert len(recorder.acks) == 1
    confirms.confirmed(True, 2, False)
    assert recorder.statuses()["long"] is AckStatus.SUCCESS
    clock.advance(10)
    assert len(recorder.acks) == 2
    assert not clock.getDelayedCalls()


def test_a_late_ack_for_a_timed_out_message_changes_nothing():
    """Once TIMEOUT is told, the broker's late ack gives no second status."""
    confirms, recorder, clock = make()
    send(confirms, recorder, clock, "m1", timeout=1)
    clock.advance(1)
    confirms.confirmed(True, 1, False)
    assert [ack.status for ack in recorder.acks] == [AckStatus.TIMEOUT]


def test_losing_the_channel_fails_every_pending_message_and_numbers_from_one_again():
    """Each waiting message gets the status; the next channel numbers from tag 1 again."""
    confirms, recorder, clock = make()
    send(confirms, recorder, clock, "lost1")
    send(confirms, recorder, clock, "lost2")
    confirms.fail_all(AckStatus.NOT_CONNECTED, "the connection was lost")
    assert recorder.statuses() == {
        "lost1": AckStatus.NOT_CONNECTED,
        "lost2": AckStatus.NOT_CONNECTED,
    }
    error = recorder.acks[0].error
    assert isinstance(error, fedmq.PublishConnectionLost)
    assert isinstance(error, fedmq.ConnectionFailed)
    send(confirms, recorder, clock, "next")
    confirms.confirmed(True, 1, False)
    assert recorder.statuses()["next"] is AckStatus.SUCCESS
    assert not clock.getDelayedCalls()


def test_a_channel_closed_refusing_a_publish_nacks_what_waits_with_the_reply_code():
    """404 from the broker: each waiting message is NACKED with a PublishRefused naming it."""
    confirms, recorder, clock = make()
    send(confirms, recorder, clock, "refused")
    refusal = fedmq.BrokerError("closed", 404, "NOT_FOUND - no exchange 'x' in vhost '/'")
    confirms.fail_all(AckStatus.NACKED, "closed", refusal=refusal)
    [ack] = recorder.acks
    assert ack.status is AckStatus.NACKED
    assert isinstance(ack.error, fedmq.PublishRefused)
    assert isinstance(ack.error, fedmq.BrokerError) and isinstance(ack.error, fedmq.PublishError)
    assert (ack.error.reply_code, ack.error.reply_text) == (404, refusal.reply_text)
    assert "message refused" in str(ack.error) and "404 NOT_FOUND" in str(ack.error)
