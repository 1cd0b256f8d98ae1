"""When and where the next connection attempt goes: backoff, and rotation through the URLs."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

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


class Attempts:
    """A consumer's connection attempts: which URL is next, and how long to wait for it.

    Args:
        urls: the brokers, tried in turn (a failed attempt moves to the next).
        policy: the ``[reconnect]`` settings.
        uniform: a source of numbers in [0, 1) for the jitter; tests pin it.

    """

    def __init__(
        self,
        urls: Sequence[str],
        policy: ReconnectConfig,
        uniform: Callable[[], float] = random.random,
    ) -> None:
        self._urls = urls
        self._policy = policy
        self._uniform = uniform
        self._next = 0
        #: Consecutive failed attempts.
        self.failures = 0
        #: Sessions opened so far.
        self.sessions = 0

    @property
    def url(self) -> str:
        """The broker the next attempt goes to."""
        return self._urls[self._next % len(self._urls)]

    def opened(self) -> None:
        """An attempt succeeded: the failures are forgotten."""
        self.failures = 0
        self.sessions += 1

    def failed(self) -> float | None:
        """An attempt failed: the seconds to wait before the next, or None to give up."""
        self.failures += 1
        if self._policy.max_attempts and self.failures >= self._policy.max_attempts:
            return None
        self._next += 1
        return reconnect_delay(self.failures, self._policy, self._uniform)
