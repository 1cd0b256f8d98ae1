"""Tests for fedmq._error_window: when too many consumer errors stop a consumer."""

from __future__ import annotations

from twisted.internet.task import Clock

from fedmq._error_window import ErrorWindow


def test_the_error_window_counts_only_recent_errors():
    """Errors older than the window fall out of the count."""
    clock = Clock()
    window = ErrorWindow(3, 60, clock.seconds)
    assert window.add() == 1
    clock.advance(30)
    assert window.add() == 2
    clock.advance(31)  # the first is now 61 s old
    assert window.add() == 2
    clock.advance(0.5)
    assert window.add() == 3


def test_errors_exactly_a_window_apart_do_not_add_up():
    clock = Clock()
    window = ErrorWindow(2, 10, clock.seconds)
    window.add()
    clock.advance(10)
    assert window.add() == 1


def test_the_error_that_reaches_max_errors_is_the_one_that_stops_the_consumer():
    """With max_errors 3, the third error stops the consumer; later ones do not stop it again."""
    window = ErrorWindow(3, 60, Clock().seconds)
    counted = [window.record() for _ in range(5)]
    assert [error.in_window for error in counted] == [1, 2, 3, 4, 5]
    assert [error.stops for error in counted] == [False, False, True, False, False]
    assert window.closed


def test_errors_spread_wider_than_the_window_never_stop_the_consumer():
    """Two errors 11 s apart with max_errors 2 and a 10 s window leave the consumer running."""
    clock = Clock()
    window = ErrorWindow(2, 10, clock.seconds)
    window.record()
    clock.advance(11)
    assert not window.record().stops
    assert not window.closed
