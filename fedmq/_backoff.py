"""How long to wait before the next connection attempt."""

from __future__ import annotations

import random
from collections.abc import Callable

from fedmq.config import ReconnectConfig


def reconnect_delay(
    attempt: int, policy: ReconnectConfig, uniform: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after the ``attempt``-th consecutive failure (1 for the first).

    Exponential: ``initial_delay * factor ** (attempt - 1)``, capped at
    ``max_delay``, then spread by up to ``jitter`` of itself either way so that
    many consumers cut off together do not come back together.

    Args:
        attempt: consecutive failures so far, at least 1.
        policy: the ``[reconnect]`` settings.
        uniform: a source of numbers in [0, 1); tests pin it.
    """
    base = min(policy.max_delay, policy.initial_delay * policy.factor ** max(attempt - 1, 0))
    spread = base * policy.jitter * (2 * uniform() - 1)
    return max(0.0, min(policy.max_delay, base + spread))
