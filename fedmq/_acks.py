"""One channel's delivery tags and their settlement: acks coalesced where they can be.

Deliveries finish in any order. :class:`Acks` acks the run of finished
deliveries that starts at the oldest unsettled one with one ack
(``multiple=True`` when the run holds more than one delivery to ack), and
every other finished delivery with an ack of its own, so that no callback,
however slow, holds back another's ack. Nacks and rejects always settle one
delivery. No tag is settled twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

#: Below this many tags waiting behind an unsettled one, the bookkeeping is never compacted.
COMPACT_AT = 1024


class Acks:
    """The tags of one channel not yet settled, and what settles them.

    Everything here runs on the reactor thread.

    Args:
        channel: where acks, nacks and rejects go.
        counts: the dispatcher's counters; "acked" is counted here.

    """

    def __init__(self, channel: Any, counts: dict[str, int]) -> None:
        self._channel = channel
        self._ack = channel.ack
        self._counts = counts
        #: Every tag received and not yet passed by the run of settled ones, in order.
        self.pending: deque[int] = deque()
        #: tag -> True when it still needs an ack, False once settled alone (nacked,
        #: rejected, acked on its own past an unfinished tag, or left to the broker).
        self.finished: dict[int, bool] = {}
        #: False once the channel is gone: its tags are dead, nothing is sent.
        self.live = True
        self._compact_at = COMPACT_AT

    def to_ack(self, tag: int) -> None:
        """``tag`` finished and is to be acked (by the next :meth:`flush`)."""
        self.finished[tag] = True

    def left(self, tag: int) -> None:
        """``tag`` is left to the broker, which requeues it when the channel closes.

        It stays unfinished here: no ``multiple`` ack may ever cover it (that
        would ack a message fedmq meant to give back), so the tags after it
        are acked alone. The channel is about to go (a reconnect, or the end
        of a drain), and the broker gives the message back then.
        """
        del tag  # nothing to record: an unfinished tag is what it is

    def alone(self, tag: int, *, requeue: bool) -> None:
        """Nack ``tag`` back to its queue (``requeue``) or reject it, now."""
        self.finished[tag] = False
        if not self.live:
            return
        if requeue:
            self._channel.nack(tag, requeue=True)
        else:
            self._channel.reject(tag)

    def flush(self, just_finished: Iterable[int] = ()) -> None:
        """Ack what finished: the run from the oldest pending tag, then each of ``just_finished``.

        ``just_finished`` are the tags that finished since the last flush;
        those still behind an unfinished tag are acked alone.
        """
        self._ack_finished_run()
        if self.finished and self.live:
            self._ack_past_unfinished(just_finished)
            if len(self.pending) > self._compact_at:
                self._compact()

    def _ack_finished_run(self) -> None:
        """Ack the run of finished deliveries from the oldest pending tag, in one ack.

        ``multiple=True`` reaches the run's last tag still to ack: it covers no
        unfinished tag, and tags already settled in the run are skipped.
        """
        pending, finished = self.pending, self.finished
        last_ack = 0
        run = 0
        while pending and pending[0] in finished:
            tag = pending.popleft()
            if finished.pop(tag):
                last_ack = tag
                run += 1
        if run and self.live:
            self._counts["acked"] += run
            self._ack(last_ack, run > 1)

    def _ack_past_unfinished(self, just_finished: Iterable[int]) -> None:
        """Ack alone each of ``just_finished`` that waits behind an unfinished tag.

        Each tag acked here is marked settled, so that the run reaching it
        later neither acks it again nor ends on it.
        """
        finished, ack = self.finished, self._ack
        alone = 0
        for tag in just_finished:
            if finished.get(tag):
                finished[tag] = False
                ack(tag, False)
                alone += 1
        self._counts["acked"] += alone

    def _compact(self) -> None:
        """Forget the tags already settled that wait behind an unsettled one.

        Without this, one message held for long (a slow callback, a
        Settlement kept for minutes) would keep every tag delivered after it,
        and memory would grow with the throughput. Amortised: the next
        compaction waits until the bookkeeping has doubled.
        """
        finished, pending = self.finished, self.pending
        kept = [tag for tag in pending if finished.get(tag) is not False]
        for tag in [tag for tag, needs_ack in finished.items() if not needs_ack]:
            del finished[tag]
        # In place: the delivery handlers hold this deque.
        pending.clear()
        pending.extend(kept)
        self._compact_at = max(COMPACT_AT, 2 * len(kept))
