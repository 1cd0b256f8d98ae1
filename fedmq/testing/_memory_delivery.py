"""The in-memory broker's consumers: who consumes from which queue, and delivering to them.

A message waiting in a queue goes to the next consumer of that queue, in
turn, that has room under its own prefetch count (the channel's ``basic.qos``
when it began consuming, as RabbitMQ applies it) among those of the highest
``x-priority``, at once, in the caller's turn (see :meth:`Deliveries.pump`).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedmq.testing._memory_channel import MemoryChannel, Subscription
    from fedmq.testing._memory_model import Model


class Deliveries:
    """The consumers of every queue, and the pump that feeds them.

    Args:
        model: the queues the messages wait in.

    """

    def __init__(self, model: Model) -> None:
        self._model = model
        self._subscriptions: dict[str, list[Subscription]] = {}
        self._turn = itertools.count()
        self._pumping = False
        self._waiting: set[str] = set()

    def consumer_count(self, queue: str) -> int:
        """Consumers on ``queue`` now."""
        return len(self._subscriptions.get(queue, []))

    def subscribe(self, subscription: Subscription) -> None:
        """A consumer starts; what waits in its queue is delivered."""
        self._subscriptions.setdefault(subscription.queue, []).append(subscription)
        self.enqueued(subscription.queue)

    def unsubscribe(self, tag: str) -> None:
        """The consumer ``tag`` is cancelled by its channel."""
        for subscriptions in self._subscriptions.values():
            subscriptions[:] = [s for s in subscriptions if s.tag != tag]

    def channel_closed(self, channel: MemoryChannel) -> None:
        """``channel`` closed: its consumers are gone."""
        for subscriptions in self._subscriptions.values():
            subscriptions[:] = [s for s in subscriptions if s.channel is not channel]

    def queue_deleted(self, queue: str) -> None:
        """``queue`` was deleted: its consumers are cancelled, as RabbitMQ does."""
        for subscription in self._subscriptions.pop(queue, []):
            subscription.on_cancelled()

    def enqueued(self, queue: str) -> None:
        """A message was added to ``queue``: deliver it if a consumer has room."""
        self._waiting.add(queue)
        self.pump()

    def pump(self) -> None:
        """Deliver what waits to consumers with room, until nothing more can move.

        A call made while a delivery is under way only adds to the work of
        the one running.
        """
        if self._pumping:
            return
        self._pumping = True
        # A settlement makes room on its channel: every consumed queue may move.
        self._waiting.update(name for name, subscribed in self._subscriptions.items() if subscribed)
        try:
            while self._waiting:
                self._deliver_from(self._waiting.pop())
        finally:
            self._pumping = False

    def _deliver_from(self, name: str) -> None:
        queue = self._model.queues.get(name)
        while queue is not None and queue.messages:
            self._model.expire(name)
            subscriptions = [s for s in self._subscriptions.get(name, []) if s.channel.has_room(s)]
            if not subscriptions or not queue.messages:
                return
            # Consumer priorities: the highest with room get the messages, in turn.
            top = max(s.priority for s in subscriptions)
            subscriptions = [s for s in subscriptions if s.priority == top]
            subscription = subscriptions[next(self._turn) % len(subscriptions)]
            subscription.channel.deliver(subscription, queue.messages.popleft())
