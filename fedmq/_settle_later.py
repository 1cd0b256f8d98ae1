"""Settling later: a callback hands its message's settlement to a handle, settled from any thread.

The path of a message settled later:

1. In its callback (a worker thread, or an asyncio task),
   ``message.settle_later()`` (:func:`take_over`) swaps the
   :class:`~fedmq._delivery.Delivery` a message holds while its callback runs
   for a :class:`Settlement`, and returns it.
2. The callback ends. The executor reports DEFERRED (or, when the callback
   raised afterwards, the outcome of what it raised, so that the error
   window and a halt work as usual); on the reactor thread the dispatcher
   hands that result to its :class:`LaterSettlements`, which adopts the
   Settlement. The message stays in flight, holding its prefetch slot.
3. One of the Settlement's methods, called from any thread, records its
   verdict once and, once the Settlement is adopted, sends it to the reactor
   thread with ``callFromThread``; the dispatcher settles the verdict as it
   settles a callback's result (the same acks, the same retry, park and drop
   paths). A verdict given before the callback ended is sent at adoption.

No lock is held across a call out and nothing waits for the reactor, so
settling deadlocks from no thread, the reactor's included. Once the
connection is lost (the consumer reconnected, or stopped) the dispatcher's
:class:`LaterSettlements` is dead: a verdict given then is logged once, at
WARNING, and sent nowhere; the broker delivers the message again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from fedmq._deferreds import chain
from fedmq._delivery import CONSUMER_ERROR, ERROR, HALT, Delivery, Result
from fedmq._error_window import ErrorCount, ErrorWindow
from fedmq.exceptions import HaltConsumer, SettlementError
from fedmq.settlement import Settlement, describe

if TYPE_CHECKING:
    from fedmq._message_delivery import DeliveryAttributes

log = logging.getLogger("fedmq")

__all__ = ["LaterSettlements", "callback_ended", "settlement_of", "take_over", "taken_over"]


# --- the message side -----------------------------------------------------------


def take_over(message: DeliveryAttributes) -> Settlement:
    """What ``message.settle_later()`` does: its Settlement, in place of the running delivery.

    Raises:
        SettlementError: no callback is running on the message, or it was taken over already.

    """
    deferral = message._deferral  # noqa: SLF001 - the message's own state, kept here
    if isinstance(deferral, Settlement):
        raise SettlementError(
            f"settle_later() was already called for {describe(deferral._delivery)}"  # noqa: SLF001
        )
    if deferral is None:
        raise SettlementError(
            f"message {message.id} (topic {message.topic!r}, queue {message.queue!r}) cannot be "
            "settled later: settle_later() is for the callback the consumer runs on the "
            "message, before it returns"
        )
    settlement = Settlement(message, deferral)
    message._deferral = settlement  # noqa: SLF001
    return settlement


def callback_ended(message: Any, item: Delivery) -> None:
    """Close ``message`` to settle_later() once its callback ended without calling it."""
    if getattr(message, "_deferral", None) is item:
        message._deferral = None  # noqa: SLF001


def settlement_of(message: Any) -> Settlement | None:
    """The Settlement ``message``'s callback took over, or None."""
    deferral = getattr(message, "_deferral", None)
    return deferral if type(deferral) is Settlement else None


def taken_over(message: Any) -> bool:
    """``message``'s callback called settle_later(), and its result is not yet adopted.

    On the reactor thread: a callback's result for which this holds goes to
    :meth:`LaterSettlements.adopt`; a Settlement's own verdict, sent after
    the adoption, is settled as any result is.
    """
    settlement = settlement_of(message)
    return settlement is not None and not settlement._adopted  # noqa: SLF001


# --- the dispatcher side ----------------------------------------------------------


class LaterSettlements:
    """The messages of one channel that Settlements settle, on the reactor thread.

    Args:
        call_from_thread: runs a function on the reactor thread, from any thread.
        settle: settles a verdict on the reactor thread, as a callback's result.
        on_halt: the dispatcher's: a callback raised HaltConsumer after settle_later().
        on_error: the dispatcher's: a consumer error after settle_later().
        errors: the consumer's error window.
        live: false for a channel already lost.

    """

    def __init__(
        self,
        call_from_thread: Callable[..., Any],
        settle: Callable[[Result], None],
        on_halt: Callable[[HaltConsumer], None],
        on_error: Callable[[BaseException, Any, float, ErrorCount], None],
        errors: ErrorWindow,
        live: bool = True,
    ) -> None:
        self._call_from_thread = call_from_thread
        self._settle = settle
        self._on_halt = on_halt
        self._on_error = on_error
        self._errors = errors
        #: False once the channel is lost: verdicts are then logged, not sent.
        self.live = live
        self._waiting: dict[int, Settlement] = {}
        self._idle: defer.Deferred[None] | None = None

    @property
    def waiting(self) -> int:
        """Messages whose Settlement has not settled them yet."""
        return len(self._waiting)

    def adopt(self, result: Result) -> bool:
        """The callback of a message it took over ended with ``result``.

        What the callback raised after ``settle_later()`` acts on the
        consumer, never on the message: HaltConsumer stops the consumer; any
        other exception but Nack, Drop and Retry is a consumer error, logged
        and counted towards ``max_errors``; Nack, Drop and Retry are ignored
        with a warning.

        Returns:
            True when the message stays in flight until its Settlement settles it.

        """
        settlement = settlement_of(result.message)
        if settlement is None:
            raise TypeError(f"delivery {result.delivery_tag} was not taken over")
        with settlement._lock:  # noqa: SLF001 - the two halves of one mechanism
            settlement._adopted = True  # noqa: SLF001
            settlement._later = self  # noqa: SLF001
            given = settlement._verdict is not None  # noqa: SLF001
        self._callback_raised(result)
        if not self.live:
            if given:
                _stale(settlement)
            return False
        self._waiting[result.delivery_tag] = settlement
        if given:
            self._call_from_thread(self._arrived, settlement)
        return True

    def _callback_raised(self, result: Result) -> None:
        error, outcome = result.error, result.outcome
        if error is None:
            return
        if outcome == HALT and isinstance(error, HaltConsumer):
            self._on_halt(error)
        elif outcome in (ERROR, CONSUMER_ERROR):
            errors = result.errors if result.errors is not None else self._errors.record()
            self._on_error(error, result.message, result.duration, errors)
        else:
            log.warning(
                "The callback raised %s on %s after settle_later(); ignored: its Settlement "
                "settles the message",
                type(error).__name__,
                describe(result.delivery),
            )

    def send(self, settlement: Settlement) -> None:
        """From any thread: settle ``settlement``'s verdict on the reactor thread."""
        if self.live:
            self._call_from_thread(self._arrived, settlement)
        else:
            _stale(settlement)

    def _arrived(self, settlement: Settlement) -> None:
        if not self.live:
            _stale(settlement)
            return
        verdict = settlement._verdict  # noqa: SLF001
        if verdict is None or self._waiting.pop(verdict.delivery_tag, None) is None:
            return
        self._settle(verdict)
        if not self._waiting and self._idle is not None:
            idle, self._idle = self._idle, None
            idle.callback(None)

    def settled(self) -> defer.Deferred[None]:
        """Fires once no message waits for its Settlement (or the channel is lost)."""
        if not self._waiting:
            return defer.succeed(None)
        if self._idle is None:
            self._idle = defer.Deferred()
        return chain(self._idle)

    def abandon(self) -> int:
        """The channel is lost: settle nothing more. Returns how many messages were waiting."""
        self.live = False
        waiting = len(self._waiting)
        self._waiting.clear()
        if self._idle is not None:
            idle, self._idle = self._idle, None
            idle.callback(None)
        return waiting


def _stale(settlement: Settlement) -> None:
    log.warning(
        "Settlement.%s() of %s came after its connection was lost (the consumer reconnected "
        "or stopped): nothing was sent, and the broker delivers the message again",
        settlement.settled_with,
        describe(settlement._delivery),  # noqa: SLF001
    )
