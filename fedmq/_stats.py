"""What a consumer has done, counted cheaply on the per-message path.

Plain counters updated on the reactor thread; the metrics endpoint reads
them when scraped, so nothing here formats, locks or allocates per message.
"""

from __future__ import annotations

import time
from bisect import bisect_left

from fedmq._delivery import Outcome

#: Upper bounds (seconds) of the callback duration histogram's buckets.
DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

QUEUE_COUNTERS = ("received", "acked", "requeued", "dropped", "failed", "retried", "parked")


class ConsumerStats:
    """Counters of one consumer, across all its connections.

    Attributes:
        queues: per queue, messages ``received``, ``acked``, ``requeued``,
            ``dropped``, ``failed``, ``retried`` and ``parked``.
        duration_buckets: per bucket of :data:`DURATION_BUCKETS` (plus one for
            longer), how many callbacks took that long (not cumulative).
        duration_sum: seconds spent in callbacks, in all.
        duration_count: callbacks timed.
        reconnects: connections made after the first.
        last_message_time: UNIX time a callback last finished, or None.

    """

    def __init__(self) -> None:
        self.queues: dict[str, dict[str, int]] = {}
        self.duration_buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.duration_count = 0
        self.reconnects = 0
        self.last_message_time: float | None = None

    def queue(self, name: str) -> dict[str, int]:
        """The counters of queue ``name``, created at zero."""
        counters = self.queues.get(name)
        if counters is None:
            counters = self.queues[name] = dict.fromkeys(QUEUE_COUNTERS, 0)
        return counters

    def record(self, queue: str, outcome: Outcome, duration: float) -> None:
        """Count one settled delivery (on the reactor thread)."""
        self.queue(queue)[outcome.stat] += 1
        if duration:
            self.duration_buckets[bisect_left(DURATION_BUCKETS, duration)] += 1
            self.duration_sum += duration
            self.duration_count += 1

    def batch_done(self) -> None:
        """Note that callbacks just finished (once per batch of results)."""
        self.last_message_time = time.time()
