"""fedmq._acks: coalesced acks, acks past an unfinished tag, and bounded bookkeeping."""

from __future__ import annotations

from fedmq._acks import COMPACT_AT, Acks
from tests.unit.fakes import FakeChannel


def received(acks: Acks, *tags: int) -> None:
    acks.pending.extend(tags)


def test_a_run_from_the_oldest_tag_is_one_multiple_ack():
    channel = FakeChannel()
    acks = Acks(channel, {"acked": 0})
    received(acks, 1, 2, 3)
    for tag in (3, 1, 2):
        acks.to_ack(tag)
    acks.flush((3, 1, 2))
    assert channel.sent == [("ack", 3, True)]


def test_a_tag_behind_an_unfinished_one_is_acked_alone_and_never_again():
    channel = FakeChannel()
    counts = {"acked": 0}
    acks = Acks(channel, counts)
    received(acks, 1, 2, 3)
    acks.to_ack(2)
    acks.flush((2,))
    acks.to_ack(1)
    acks.to_ack(3)
    acks.flush((1, 3))
    # 1 alone (2 was acked on its own), 3 alone past nothing: the run 1..3 acks 1 and 3 once.
    assert channel.sent == [("ack", 2, False), ("ack", 3, True)]
    assert counts["acked"] == 3


def test_one_message_held_for_long_keeps_the_bookkeeping_bounded():
    """Tag 1 never finishes while 20,000 others are acked: what is kept stays bounded."""
    channel = FakeChannel()
    acks = Acks(channel, {"acked": 0})
    received(acks, 1)
    for tag in range(2, 20_002):
        received(acks, tag)
        acks.to_ack(tag)
        acks.flush((tag,))
    assert len(acks.pending) <= COMPACT_AT + 1
    assert len(acks.finished) <= COMPACT_AT
    assert channel.sent[-1] == ("ack", 20_001, False)
    # The held one settles last, alone: nothing else is acked twice.
    acks.to_ack(1)
    acks.flush((1,))
    assert channel.sent[-1] == ("ack", 1, False)
    assert len(channel.sent) == 20_001
    assert not acks.pending
    assert not acks.finished


def test_a_nack_settles_one_tag_and_the_run_passes_it():
    channel = FakeChannel()
    acks = Acks(channel, {"acked": 0})
    received(acks, 1, 2)
    acks.alone(1, requeue=True)
    acks.to_ack(2)
    acks.flush((2,))
    assert channel.sent == [("nack", 1, True), ("ack", 2, False)]


def test_nothing_is_sent_once_the_channel_is_gone():
    channel = FakeChannel()
    acks = Acks(channel, {"acked": 0})
    received(acks, 1, 2)
    acks.live = False
    acks.alone(1, requeue=True)
    acks.to_ack(2)
    acks.flush((2,))
    assert channel.sent == []


def test_a_tag_left_to_the_broker_is_never_covered_by_a_multiple_ack():
    """1 is left (its retry queue is gone); 2 and 3 finish together: each is acked alone.

    A multiple ack of 3 would ack 1 on the broker, and the message meant to go
    back to its queue would be lost.
    """
    channel = FakeChannel()
    acks = Acks(channel, {"acked": 0})
    received(acks, 1, 2, 3)
    acks.left(1)
    acks.flush()
    acks.to_ack(2)
    acks.to_ack(3)
    acks.flush((2, 3))
    assert channel.sent == [("ack", 2, False), ("ack", 3, False)]
