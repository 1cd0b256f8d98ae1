"""The in-memory broker's model: exchanges, bindings, queues, routing and dead-lettering.

Nothing here knows of connections or channels (see :mod:`fedmq.testing.memory`):
a message is routed to queues, waits there, expires on the broker's clock,
and is dead-lettered as RabbitMQ dead-letters it.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fedmq.exceptions import DeclarationError
from fedmq.message import Properties
from fedmq.testing.routing import headers_match, topic_matches

EXCHANGE_TYPES = ("direct", "fanout", "topic", "headers")

#: Exchanges every vhost has, as RabbitMQ predeclares them.
PREDECLARED = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}


@dataclass
class Stored:
    """One message in a queue."""

    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    redelivered: bool = False
    expires_at: float | None = None
    #: Times it went back to its queue unsettled (a quorum queue's delivery count).
    returns: int = 0


class Binding(NamedTuple):
    """A binding from an exchange to a queue or to another exchange."""

    destination: str
    to_exchange: bool
    routing_key: str
    arguments: Mapping[str, Any]


class DeadLettered(NamedTuple):
    """A message dead-lettered (or discarded, with no dead-letter exchange)."""

    queue: str
    reason: str
    message: Stored
    exchange: str | None


@dataclass
class Exchange:
    name: str
    type: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    durable: bool = True
    auto_delete: bool = False
    bindings: list[Binding] = field(default_factory=list)

    def matches(
        self, binding: Binding, routing_key: str, headers: Mapping[str, Any] | None
    ) -> bool:
        if self.type == "fanout":
            return True
        if self.type == "topic":
            return topic_matches(binding.routing_key, routing_key)
        if self.type == "headers":
            return headers_match(binding.arguments, headers)
        return binding.routing_key == routing_key


@dataclass
class Queue:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    messages: deque[Stored] = field(default_factory=deque)

    @property
    def delivery_limit(self) -> int | None:
        """``x-delivery-limit``, which only quorum queues honour."""
        limit = self.arguments.get("x-delivery-limit")
        if self.arguments.get("x-queue-type") == "quorum" and isinstance(limit, int):
            return limit
        return None


def _refused(code: int, text: str) -> DeclarationError:
    return DeclarationError(f"The broker refused it: {code} {text}", code, text)


class Model:
    """Exchanges and queues of one virtual host, and how messages move between them.

    Args:
        now: the time in seconds (the broker's clock).
        call_later: schedules a call on the broker's clock.
        on_enqueued: told of each queue a message was added to.

    """

    def __init__(
        self,
        now: Callable[[], float],
        call_later: Callable[..., Any],
        on_enqueued: Callable[[str], None],
    ) -> None:
        self._now = now
        self._call_later = call_later
        self._on_enqueued = on_enqueued
        self.exchanges: dict[str, Exchange] = {"": Exchange("", "direct")}
        self.exchanges.update({name: Exchange(name, kind) for name, kind in PREDECLARED.items()})
        self.queues: dict[str, Queue] = {}
        self.dead_lettered: list[DeadLettered] = []
        self._names = itertools.count(1)

    # --- declaring ---------------------------------------------------------

    def declare_exchange(
        self, name: str, kind: str, arguments: Mapping[str, Any], passive: bool = False
    ) -> None:
        existing = self.exchanges.get(name)
        if passive or existing is not None:
            if existing is None:
                raise _refused(404, f"NOT_FOUND - no exchange '{name}' in vhost '/'")
            if not passive and existing.type != kind:
                raise _refused(
                    406,
                    f"PRECONDITION_FAILED - inequivalent arg 'type' for exchange '{name}' in "
                    f"vhost '/': received '{kind}' but current is '{existing.type}'",
                )
            return
        if kind not in EXCHANGE_TYPES:
            raise _refused(503, f"COMMAND_INVALID - unknown exchange type '{kind}'")
        if name.startswith("amq."):
            raise _refused(403, f"ACCESS_REFUSED - exchange name '{name}' contains reserved prefix")
        self.exchanges[name] = Exchange(name, kind, dict(arguments))

    def declare_queue(self, name: str, arguments: Mapping[str, Any], passive: bool = False) -> str:
        if not name and not passive:
            name = f"amq.gen-{next(self._names)}"
        existing = self.queues.get(name)
        if existing is None:
            if passive:
                raise _refused(404, f"NOT_FOUND - no queue '{name}' in vhost '/'")
            self.queues[name] = Queue(name, dict(arguments))
            return name
        if not passive and dict(existing.arguments) != dict(arguments):
            raise _refused(
                406, f"PRECONDITION_FAILED - inequivalent arguments for queue '{name}' in vhost '/'"
            )
        return name

    def bind(
        self,
        destination: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any],
        to_exchange: bool = False,
    ) -> None:
        source = self.exchanges.get(exchange)
        if source is None or not exchange:
            raise _refused(404 if source is None else 403, f"no exchange '{exchange}' to bind to")
        if (self.exchanges if to_exchange else self.queues).get(destination) is None:
            what = "exchange" if to_exchange else "queue"
            raise _refused(404, f"NOT_FOUND - no {what} '{destination}' in vhost '/'")
        if source.type == "headers":
            headers_match(arguments, {})  # refuses a bad x-match now, as the broker does
        binding = Binding(destination, to_exchange, routing_key, dict(arguments))
        if binding not in source.bindings:
            source.bindings.append(binding)

    def delete_queue(self, name: str) -> None:
        self.queues.pop(name, None)
        for exchange in self.exchanges.values():
            exchange.bindings = [
                b for b in exchange.bindings if b.to_exchange or b.destination != name
            ]

    # --- routing -----------------------------------------------------------

    def route(self, exchange: str, routing_key: str, headers: Mapping[str, Any] | None) -> set[str]:
        """The queues a message published to ``exchange`` goes to.

        Raises:
            KeyError: no such exchange.

        """
        if exchange == "":
            return {routing_key} if routing_key in self.queues else set()
        return self._route(self.exchanges[exchange], routing_key, headers, set())

    def _route(
        self,
        exchange: Exchange,
        routing_key: str,
        headers: Mapping[str, Any] | None,
        visited: set[str],
    ) -> set[str]:
        visited.add(exchange.name)
        queues: set[str] = set()
        for binding in exchange.bindings:
            if not exchange.matches(binding, routing_key, headers):
                continue
            if not binding.to_exchange:
                queues.add(binding.destination)
            elif binding.destination not in visited and binding.destination in self.exchanges:
                target = self.exchanges[binding.destination]
                queues |= self._route(target, routing_key, headers, visited)
        alternate = exchange.arguments.get("alternate-exchange")
        if not queues and alternate in self.exchanges and alternate not in visited:
            queues = self._route(self.exchanges[alternate], routing_key, headers, visited)
        return queues

    def enqueue(self, queues: set[str], message: Stored) -> None:
        """Put a copy of ``message`` in each queue, with its TTL, if any, running."""
        for name in sorted(queues):
            queue = self.queues[name]
            copy = Stored(message.exchange, message.routing_key, message.body, message.properties)
            ttl = _ttl_seconds(queue, message.properties)
            if ttl is not None:
                copy.expires_at = self._now() + ttl
                self._call_later(ttl, self.expire, name)
            queue.messages.append(copy)
            self._on_enqueued(name)

    # --- leaving a queue ---------------------------------------------------

    def expire(self, name: str) -> None:
        """Dead-letter the messages at the head of ``name`` whose time is up."""
        queue = self.queues.get(name)
        now = self._now()
        while queue is not None and queue.messages:
            head = queue.messages[0]
            if head.expires_at is None or head.expires_at > now:
                break
            queue.messages.popleft()
            self.dead_letter(queue, head, "expired")

    def give_back(self, name: str, message: Stored) -> None:
        """A delivery came back unsettled: to the head of its queue, or past its limit."""
        queue = self.queues.get(name)
        if queue is None:
            return
        message.redelivered = True
        message.returns += 1
        limit = queue.delivery_limit
        if limit is not None and message.returns > limit:
            self.dead_letter(queue, message, "delivery_limit")
            return
        queue.messages.appendleft(message)
        self._on_enqueued(name)

    def dead_letter(self, queue: Queue, message: Stored, reason: str) -> None:
        """Send to the queue's dead-letter exchange, with an ``x-death`` entry, or discard."""
        exchange = queue.arguments.get("x-dead-letter-exchange")
        self.dead_lettered.append(DeadLettered(queue.name, reason, message, exchange))
        if exchange is None or exchange not in self.exchanges:
            return
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        properties = Properties.from_object(message.properties)
        headers = dict(properties.headers or {})
        headers["x-death"] = _x_death(headers.get("x-death"), queue.name, reason, message)
        headers.setdefault("x-first-death-queue", queue.name)
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-exchange", message.exchange)
        properties.headers = headers
        if reason == "expired":
            properties.expiration = None
        copy = Stored(exchange, routing_key, message.body, properties)
        self.enqueue(self.route(exchange, routing_key, headers), copy)


def _ttl_seconds(queue: Queue, properties: Properties) -> float | None:
    ttls = []
    queue_ttl = queue.arguments.get("x-message-ttl")
    if isinstance(queue_ttl, int):
        ttls.append(queue_ttl)
    if properties.expiration is not None:
        ttls.append(int(properties.expiration))
    return min(ttls) / 1000 if ttls else None


def _x_death(previous: Any, queue: str, reason: str, message: Stored) -> list[dict[str, Any]]:
    deaths = [dict(entry) for entry in previous] if isinstance(previous, list) else []
    for entry in deaths:
        if entry.get("queue") == queue and entry.get("reason") == reason:
            entry["count"] = entry.get("count", 0) + 1
            deaths.remove(entry)
            return [entry, *deaths]
    entry = {
        "queue": queue,
        "reason": reason,
        "count": 1,
        "exchange": message.exchange,
        "routing-keys": [message.routing_key],
    }
    return [entry, *deaths]
