"""What became of each message published on a confirm channel: the bookkeeping.

The broker numbers the messages of a confirm channel 1, 2, 3... and answers
with basic.ack or basic.nack for one tag, or for every tag up to one
(``multiple``). A mandatory message that no queue matched comes back first
as basic.return (which names no tag), then is acked. :class:`Confirms`
turns that into one :class:`Ack` per message, and times out those the
broker leaves unanswered, with a single timer for them all.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, NamedTuple

from fedmq._reactor_types import Clock
from fedmq.acks import ERRORS, Ack, AckStatus, OnAck
from fedmq.exceptions import BrokerError, PublishError, PublishRefused


class Outgoing(NamedTuple):
    """One message on its way: where to, what, and who to tell."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Any
    mandatory: bool
    deadline: float
    on_ack: OnAck

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id  # type: ignore[no-any-return]

    def describe(self) -> str:
        return (
            f"message {self.message_id} to exchange {self.exchange!r} "
            f"with routing key {self.routing_key!r}"
        )


def settle(
    item: Outgoing, status: AckStatus, reason: str = "", cause: BaseException | None = None
) -> None:
    """Tell ``item``'s ``on_ack`` its status; ``reason`` ends the error's text.

    ``cause`` (why no connection could be opened, say) becomes the error's ``__cause__``.
    """
    error: PublishError | None = None
    if status is not AckStatus.SUCCESS:
        error = ERRORS[status](_TEXTS[status].format(what=item.describe(), reason=reason))
        error.__cause__ = cause
    item.on_ack(Ack(item.message_id, status, error))


def refuse(item: Outgoing, refusal: BrokerError) -> None:
    """Tell ``item``'s ``on_ack`` the broker refused it, closing the channel."""
    code, text = refusal.reply_code, refusal.reply_text
    error = PublishRefused(f"The broker refused {item.describe()}: {code} {text}", code, text)
    item.on_ack(Ack(item.message_id, AckStatus.NACKED, error))


_TEXTS = {
    AckStatus.NACKED: "The broker refused (nacked) {what}{reason}",
    AckStatus.RETURNED: "The broker could not route the mandatory {what} to any queue{reason}",
    AckStatus.TIMEOUT: "The broker did not confirm {what} in time{reason}",
    AckStatus.NOT_CONNECTED: "No confirm for {what}: {reason}",
    AckStatus.CANCELED: "The publisher closed before the broker confirmed {what}{reason}",
}


class Confirms:
    """The messages sent on one confirm channel and not yet confirmed, by delivery tag.

    Args:
        clock: an ``IReactorTime``: its ``seconds`` and ``callLater``.
        on_settled: called with (messages, bytes) freed after each confirm or
            failure, so the publisher can let waiting posts in.

    """

    def __init__(self, clock: Clock, on_settled: Callable[[int, int], None]) -> None:
        self._clock = clock
        self._on_settled = on_settled
        self._pending: dict[int, Outgoing] = {}
        self._returned: set[int] = set()
        self._next_tag = 1
        self._lowest = 1  # every tag below this one is settled
        self._deadlines: list[tuple[float, int]] = []
        self._timer: Any = None

    def __len__(self) -> int:
        return len(self._pending)

    def sent(self, item: Outgoing) -> None:
        """Record ``item`` as just written to the channel (it gets the next tag)."""
        tag = self._next_tag
        self._next_tag = tag + 1
        self._pending[tag] = item
        heapq.heappush(self._deadlines, (item.deadline, tag))
        timer = self._timer
        if timer is None:
            self._timer = self._clock.callLater(
                max(0.0, item.deadline - self._clock.seconds()), self._expire
            )
        elif item.deadline < timer.getTime():
            # A shorter timeout than those already waiting: the one timer goes off sooner.
            timer.reset(max(0.0, item.deadline - self._clock.seconds()))

    def returned(self, message_id: str | None) -> None:
        """basic.return: the message (by id; else the oldest mandatory one) is not routed."""
        fallback = None
        for tag, item in self._pending.items():
            if not item.mandatory or tag in self._returned:
                continue
            if message_id is not None and item.message_id == message_id:
                self._returned.add(tag)
                return
            if fallback is None:
                fallback = tag
        if fallback is not None:
            self._returned.add(fallback)

    def confirmed(self, acked: bool, tag: int, multiple: bool) -> None:
        """basic.ack (``acked``) or basic.nack for ``tag``, or up to it with ``multiple``."""
        if multiple:
            tags = [t for t in range(self._lowest, tag + 1) if t in self._pending]
            self._lowest = max(self._lowest, tag + 1)
        else:
            tags = [tag] if tag in self._pending else []
            if tag == self._lowest:
                self._lowest = tag + 1
        count = size = 0
        for settled_tag in tags:
            item = self._pending.pop(settled_tag)
            count += 1
            size += len(item.body)
            if not acked:
                self._returned.discard(settled_tag)
                settle(item, AckStatus.NACKED)
            elif settled_tag in self._returned:
                self._returned.discard(settled_tag)
                settle(item, AckStatus.RETURNED)
            else:
                settle(item, AckStatus.SUCCESS)
        # Drop the deadlines of confirmed messages from the front of the heap.
        deadlines, pending = self._deadlines, self._pending
        while deadlines and deadlines[0][1] not in pending:
            heapq.heappop(deadlines)
        if not pending:
            self._stop_timer()  # no timer outlives the last message it watches
        if count:
            self._on_settled(count, size)

    def fail_all(
        self, status: AckStatus, reason: str = "", refusal: BrokerError | None = None
    ) -> None:
        """Settle every pending message with ``status``: the channel is gone, or closing.

        With ``refusal`` (the broker closed the channel refusing a publish),
        each message gets NACKED and a :class:`~fedmq.PublishRefused` with the reply.
        """
        pending, self._pending = self._pending, {}
        self._returned.clear()
        # A new channel numbers its messages from 1 again.
        self._next_tag = self._lowest = 1
        self._stop_timer()
        self._deadlines = []
        for item in pending.values():
            if refusal is None:
                settle(item, status, reason)
            else:
                refuse(item, refusal)
        if pending:
            self._on_settled(len(pending), sum(len(item.body) for item in pending.values()))

    def _expire(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        expired: list[Outgoing] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _deadline, tag = heapq.heappop(self._deadlines)
            item = self._pending.pop(tag, None)
            if item is not None:
                self._returned.discard(tag)
                expired.append(item)
        # Deadlines of messages already confirmed stay in the heap until they pass.
        while self._deadlines and self._deadlines[0][1] not in self._pending:
            heapq.heappop(self._deadlines)
        if self._deadlines:
            delay = max(0.0, self._deadlines[0][0] - now)
            self._timer = self._clock.callLater(delay, self._expire)
        for item in expired:
            settle(item, AckStatus.TIMEOUT)
        if expired:
            self._on_settled(len(expired), sum(len(item.body) for item in expired))

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


__all__ = ["Confirms", "Outgoing", "settle"]
