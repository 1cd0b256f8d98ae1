"""Small fakes shared by unit tests of what watches a consumer."""

from __future__ import annotations

from typing import Any

from fedmq._stats import ConsumerStats


class FakeConsumer:
    """Stands in for fedmq.Consumer: a state, its listeners, its statistics."""

    def __init__(self, state: str = "consuming", queues: tuple[str, ...] = ("orders",)):
        self.state = state
        self.queues = queues
        self.in_flight = 0
        self.stats = ConsumerStats()
        self.listeners: list[Any] = []

    def add_state_listener(self, listener: Any) -> None:
        self.listeners.append(listener)

    def become(self, state: str) -> None:
        self.state = state
        for listener in list(self.listeners):
            listener(state)


class FakeConsumerService:
    """Stands in for fedmq.service.ConsumerService: what holds the consumer."""

    def __init__(self, consumer: FakeConsumer | None):
        self.consumer = consumer
