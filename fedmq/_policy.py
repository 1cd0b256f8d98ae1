"""What happens to a message its callback did not accept: retry, park, drop.

The dispatcher decides *that* a message is retried, parked or dropped; this
module decides *where* it goes and with which headers, and owns the queues
that make retries wait (one per delay, since a classic queue expires
messages only from its head) and the dead queue where messages are parked.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

from twisted.internet import defer

from fedmq import _tracing
from fedmq._delivery import Delivery, Route
from fedmq._headers import (
    DROPPED_BY,
    DROPPED_REASON,
    DROPPED_TIMESTAMP,
    ORIGINAL_EXCHANGE,
    ORIGINAL_QUEUE,
    ORIGINAL_ROUTING_KEY,
    PROCESSING_EXCEPTION,
    PROCESSING_EXCEPTIONS,
)
from fedmq.config import QueueConfig, RetryConfig
from fedmq.message import Properties

#: Header values longer than this are cut: an exception's text can be huge.
_MAX_TEXT = 2000

#: Publishes (exchange, routing_key, body, properties) with confirms and mandatory.
PublishFunction = Callable[[str, str, bytes, Properties], "defer.Deferred[None]"]


def wait_queue_name(queue: str, delay: float) -> str:
    """The queue where a message of ``queue`` waits ``delay`` seconds to be retried."""
    # Whole seconds without a decimal point or an exponent: orders.retry.3600s.
    seconds = str(int(delay)) if delay == int(delay) else repr(float(delay))
    return f"{queue}.retry.{seconds}s"


def dead_queue_name(queue: str) -> str:
    """The queue where messages of ``queue`` are parked."""
    return f"{queue}.dead"


def has_retry_queues(queue: QueueConfig, retry: RetryConfig) -> bool:
    """Whether fedmq gives ``queue`` wait queues and a dead queue.

    A server-named, exclusive or auto-delete queue does not outlive its
    consumer, so queues that point back at it could only leak.
    """
    if queue.arguments.get("x-queue-type") == "stream":
        return False  # a stream keeps what it is given: nothing to retry from, no TTL
    return retry.enabled and bool(queue.name) and not (queue.exclusive or queue.auto_delete)


def retry_queues(queue: QueueConfig, retry: RetryConfig) -> list[QueueConfig]:
    """The wait queues and the dead queue to declare for ``queue``.

    They are of the queue's own type: a quorum queue's survive the loss of
    a cluster node as it does, where classic ones would be unreachable
    while their node is down. Quorum wait queues dead-letter at least once
    (which needs ``x-overflow = reject-publish``), so that a message whose
    time is up is not lost if the queue it returns to is briefly unavailable.
    """
    kind = queue.arguments.get("x-queue-type")
    typed: dict[str, object] = {"x-queue-type": kind} if kind else {}
    safe_return: dict[str, object] = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if kind == "quorum"
        else {}
    )
    wait = [
        QueueConfig(
            name=wait_queue_name(queue.name, delay),
            durable=queue.durable,
            arguments={
                **typed,
                "x-message-ttl": int(delay * 1000),
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": queue.name,
                **safe_return,
            },
        )
        for delay in retry.delays
    ]
    dead = QueueConfig(name=dead_queue_name(queue.name), durable=True, arguments=typed)
    return [*wait, dead]


def _text(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class ErrorPolicy:
    """Where the messages a consumer does not accept go.

    Args:
        name: the consumer's name, written in ``X-Dropped-By``.
        retry: the ``[retry]`` table.
        retry_queues: the consumed queues that have wait queues and a dead queue.
        drop_exchange: the exchange dropped messages are copied to; "" for none.
        message_types: the AMQP types the callback accepts; None accepts any.
        drop_invalid_messages: drop a message of another type (else it is a consumer error).
        publish: how to republish; None where nothing is ever republished (tests).

    """

    def __init__(
        self,
        name: str = "fedmq",
        retry: RetryConfig | None = None,
        retry_queues: Iterable[str] = (),
        drop_exchange: str = "",
        message_types: Iterable[str] | None = None,
        drop_invalid_messages: bool = True,
        publish: PublishFunction | None = None,
    ) -> None:
        self.name = name
        self.retry = retry if retry is not None else RetryConfig()
        self.retry_queues = frozenset(retry_queues)
        self.drop_exchange = drop_exchange
        self.message_types = frozenset(message_types) if message_types else None
        self.drop_invalid_messages = drop_invalid_messages
        self._publish = publish

    def publish(self, route: Route, body: bytes) -> defer.Deferred[None]:
        """Republish ``body`` along ``route``; fires once the broker confirms it."""
        if self._publish is None:
            return defer.fail(RuntimeError("this consumer cannot republish messages"))
        return self._publish(route.exchange, route.routing_key, body, route.properties)

    def retry_route(self, delivery: Delivery, exc: BaseException) -> Route | None:
        """The wait queue for a delivery whose callback raised Retry, or its dead queue.

        None when its queue has no wait queues.
        """
        queue = delivery.queue
        if queue not in self.retry_queues:
            return None
        properties, headers = self._copy(delivery)
        previous = headers.get(PROCESSING_EXCEPTIONS)
        failed = 1 + (previous if _is_count(previous) else 0)
        headers[PROCESSING_EXCEPTIONS] = failed
        headers[PROCESSING_EXCEPTION] = _text(exc) or type(exc).__name__
        if failed >= self.retry.max_attempts:
            self._mark_dropped(
                headers, f"Retry raised on each of {failed} attempts; the last: {_text(exc)}"
            )
            return Route("", dead_queue_name(queue), properties, "parked")
        delays = self.retry.delays
        delay = delays[min(failed, len(delays)) - 1]
        return Route("", wait_queue_name(queue, delay), properties, "retried")

    def park_route(self, delivery: Delivery, reason: str) -> Route | None:
        """The dead queue of the delivery's queue, or None when it has none."""
        queue = delivery.queue
        if queue not in self.retry_queues:
            return None
        properties, headers = self._copy(delivery)
        self._mark_dropped(headers, reason)
        return Route("", dead_queue_name(queue), properties, "parked")

    def drop_route(self, delivery: Delivery, reason: str) -> Route | None:
        """The drop exchange, with the routing key the message was first published with."""
        if not self.drop_exchange:
            return None
        properties, headers = self._copy(delivery)
        self._mark_dropped(headers, reason)
        return Route(self.drop_exchange, headers[ORIGINAL_ROUTING_KEY], properties, "dropped")

    def invalid_type(self, properties: Any) -> str | None:
        """Why a message of this type is not accepted, or None when it is."""
        types = self.message_types
        if types is None:
            return None
        kind = getattr(properties, "type", None)
        if kind in types:
            return None
        accepted = ", ".join(map(repr, sorted(types)))
        return f"its type {kind!r} is not one of the accepted message_types ({accepted})"

    def _copy(self, delivery: Delivery) -> tuple[Properties, dict[str, Any]]:
        """The delivery's properties, copied, with the X-Original-* headers set once."""
        _tag, _redelivered, exchange, routing_key, raw_properties, _body, queue = delivery
        properties = Properties.from_object(raw_properties)
        headers = dict(properties.headers or {})
        headers.setdefault(ORIGINAL_EXCHANGE, exchange)
        headers.setdefault(ORIGINAL_ROUTING_KEY, routing_key)
        headers.setdefault(ORIGINAL_QUEUE, queue)
        _tracing.forget_carried_context(headers)
        properties.headers = headers
        return properties, headers

    def _mark_dropped(self, headers: dict[str, Any], reason: str) -> None:
        headers[DROPPED_BY] = self.name
        headers[DROPPED_REASON] = _text(reason)
        headers[DROPPED_TIMESTAMP] = _now()


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
