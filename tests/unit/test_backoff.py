"""The wait between connection attempts grows, is capped, and is spread."""

from __future__ import annotations

from fedmq._backoff import reconnect_delay
from fedmq.config import ReconnectConfig

POLICY = ReconnectConfig(initial_delay=1.0, max_delay=60.0, factor=2.0, jitter=0.5)


def test_the_delay_doubles_from_the_initial_delay_without_jitter():
    middle = lambda: 0.5  # noqa: E731 - no spread
    assert [reconnect_delay(n, POLICY, middle) for n in range(1, 6)] == [1, 2, 4, 8, 16]


def test_the_delay_never_exceeds_max_delay():
    assert reconnect_delay(30, POLICY, lambda: 0.999) == 60.0
    assert reconnect_delay(7, POLICY, lambda: 0.5) == 60.0


def test_jitter_spreads_the_delay_by_its_fraction_either_way():
    assert reconnect_delay(3, POLICY, lambda: 0.0) == 2.0  # 4 - 50%
    assert reconnect_delay(3, POLICY, lambda: 0.75) == 5.0  # 4 + 25%


def test_no_jitter_gives_exact_delays():
    policy = ReconnectConfig(initial_delay=0.5, max_delay=10, factor=3, jitter=0)
    assert [reconnect_delay(n, policy) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.5, 10]
