"""Where a delivered message came from, and who settles it: the delivery side of a message.

:class:`DeliveryAttributes` is the base of :class:`fedmq.Message` that holds
what only a delivered message has (its queue, exchange, delivery tag and
redelivered flag, which attempt this is) and :meth:`settle_later`, by which
its callback takes over settling it. A message built to publish has None,
False and 1 here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedmq._headers import PROCESSING_EXCEPTIONS

if TYPE_CHECKING:
    from fedmq._delivery import Delivery
    from fedmq.message import Properties
    from fedmq.settlement import Settlement


class DeliveryAttributes:
    """The delivery-side attributes of a message, and :meth:`settle_later`."""

    __slots__ = ("_deferral", "_delivery_tag", "_exchange", "_queue", "_redelivered")

    # While a callback runs on the message: the Delivery it came from. After
    # settle_later(): its Settlement. Otherwise None: nothing can take it over.
    _deferral: Delivery | Settlement | None
    _delivery_tag: int | None
    _exchange: str | None
    _queue: str | None
    _redelivered: bool

    # Provided by the class this is the base of.
    if TYPE_CHECKING:

        @property
        def properties(self) -> Properties: ...

        @property
        def id(self) -> str | None: ...

        @property
        def topic(self) -> str: ...

    @property
    def queue(self) -> str | None:
        """The queue it was consumed from; None for a message to publish."""
        return self._queue

    @property
    def exchange(self) -> str | None:
        """The exchange it was published to; None for a message to publish."""
        return self._exchange

    @property
    def attempt(self) -> int:
        """Which run of the callback this is: 1 at first, 2 after one :class:`~fedmq.Retry`...

        It is read from the ``X-Processing-Exceptions`` header, so it counts
        across restarts of the consumer.
        """
        failed = (self.properties.headers or {}).get(PROCESSING_EXCEPTIONS)
        if isinstance(failed, int) and not isinstance(failed, bool) and failed > 0:
            return failed + 1
        return 1

    @property
    def redelivered(self) -> bool:
        """Whether the broker delivered it before; False for a message to publish."""
        return self._redelivered

    @property
    def delivery_tag(self) -> int | None:
        """The channel's tag for this delivery; None for a message to publish."""
        return self._delivery_tag

    def settle_later(self) -> Settlement:
        """Take over settling this delivered message: the callback's return no longer acks it.

        Call it in the callback, before the callback returns. The message
        stays unsettled, and in flight, until one of the returned handle's
        :meth:`~fedmq.Settlement.ack`, :meth:`~fedmq.Settlement.nack`,
        :meth:`~fedmq.Settlement.drop` or :meth:`~fedmq.Settlement.retry` is
        called, once, from any thread. What the callback returns or raises
        afterwards settles nothing (see "Settling later" in the docs).

        Returns:
            The message's :class:`~fedmq.Settlement`.

        Raises:
            SettlementError: no callback is running on this message (it was
                built to publish, or its callback already returned), or
                ``settle_later()`` was already called for it.

        """
        from fedmq._settle_later import take_over

        return take_over(self)
