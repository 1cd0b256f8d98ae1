"""The handle by which a callback settles its message later: :class:`Settlement`.

A callback that calls :meth:`fedmq.Message.settle_later` gets one; the
machinery behind it (how its verdict reaches the consumer's dispatcher on
the reactor thread) is :mod:`fedmq._settle_later`.
"""

from __future__ import annotations

import threading
from time import monotonic
from typing import TYPE_CHECKING, Any

from fedmq._delivery import ACK, DROP, NACK, RETRY, Delivery, Outcome, Result
from fedmq.exceptions import Drop, Nack, Retry, SettlementError

if TYPE_CHECKING:
    from fedmq._settle_later import LaterSettlements

__all__ = ["Settlement"]


class Settlement:
    """Settles one delivered message later, from any thread; ``Message.settle_later()`` gives it.

    Call one of :meth:`ack`, :meth:`nack`, :meth:`drop` and :meth:`retry`,
    once, from any thread: a worker thread, a thread of your own, an asyncio
    task, the reactor thread. Each returns at once; the consumer settles the
    message on the reactor thread, exactly as it settles the outcome of a
    callback that returned or raised :class:`~fedmq.Nack`,
    :class:`~fedmq.Drop` or :class:`~fedmq.Retry`. Until then the message is
    in flight: it holds its prefetch slot, and a graceful stop waits for it
    (within ``drain_timeout``).

    When the consumer's connection was lost first (it reconnected, or
    stopped), the call sends nothing and logs a warning: the broker took the
    message back when the connection closed and delivers it again.

    Not built directly: :meth:`fedmq.Message.settle_later` returns it.
    """

    __slots__ = (
        "_adopted",
        "_delivery",
        "_later",
        "_lock",
        "_message",
        "_taken",
        "_verb",
        "_verdict",
    )

    def __init__(self, message: Any, delivery: Delivery) -> None:
        self._message = message
        self._delivery = delivery
        self._lock = threading.Lock()
        self._taken = monotonic()
        self._verb: str | None = None
        self._verdict: Result | None = None
        # Set on the reactor thread when the callback's result reaches the dispatcher.
        self._later: LaterSettlements | None = None
        self._adopted = False

    @property
    def message(self) -> Any:
        """The message this settles (for a schema-class instance, its ``fedmq_message``)."""
        return self._message

    @property
    def settled_with(self) -> str | None:
        """``"ack"``, ``"nack"``, ``"drop"`` or ``"retry"``: the method called; None before."""
        return self._verb

    def ack(self) -> None:
        """Acknowledge the message, as a callback returning does: the broker deletes it.

        Raises:
            SettlementError: the message was already settled through this handle.

        """
        self._settle("ack", ACK, None)

    def nack(self) -> None:
        """Return the message to its queue, as raising :class:`~fedmq.Nack` does.

        Raises:
            SettlementError: the message was already settled through this handle.

        """
        self._settle("nack", NACK, Nack("settled later, with nack()"))

    def drop(self, reason: str = "") -> None:
        """Drop the message, as raising ``Drop(reason)`` does.

        It is copied to the ``drop_exchange`` when there is one, then rejected
        to the queue's dead-letter exchange; ``reason`` goes in the
        ``X-Dropped-Reason`` header and the log line.

        Raises:
            SettlementError: the message was already settled through this handle.

        """
        self._settle("drop", DROP, Drop(_with_reason(reason, "drop")))

    def retry(self, reason: str = "") -> None:
        """Retry the message later, as raising ``Retry(reason)`` does.

        It waits in the queue's next retry queue, or is parked in its dead
        queue after ``retry.max_attempts`` runs; ``reason`` goes in the
        ``X-Processing-Exception`` header.

        Raises:
            SettlementError: the message was already settled through this handle.

        """
        self._settle("retry", RETRY, Retry(_with_reason(reason, "retry")))

    def _settle(self, verb: str, outcome: Outcome, error: BaseException | None) -> None:
        item = self._delivery
        with self._lock:
            if self._verb is not None:
                raise SettlementError(
                    f"{describe(item)} cannot be settled with {verb}(): {self._verb}() was "
                    "already called on its Settlement, and a message is settled once"
                )
            self._verb = verb
            self._verdict = Result(
                item.delivery_tag, outcome, error, self._message, monotonic() - self._taken, item
            )
            later = self._later
        if later is not None:
            later.send(self)

    def __repr__(self) -> str:
        item = self._delivery
        message_id = getattr(item.properties, "message_id", None)
        state = f"settled with {self._verb}()" if self._verb else "not settled yet"
        return f"<Settlement of message {message_id!r} (queue {item.queue!r}): {state}>"


def _with_reason(reason: str, verb: str) -> str:
    said = f"settled later, with {verb}()"
    return f"{reason} ({said})" if reason else said


def describe(item: Delivery) -> str:
    """The delivery as log lines and errors name it: its id, topic and queue."""
    message_id = getattr(item.properties, "message_id", None)
    return f"message {message_id} (topic {item.routing_key!r}, queue {item.queue!r})"
