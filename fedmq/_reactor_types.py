"""What fedmq needs of a reactor, as Protocols that Twisted's reactors and ``Clock`` meet.

Twisted's own interfaces (``IReactorTime``, ``IReactorCore``,
``IReactorThreads``) are zope interfaces, which mypy does not check without a
plugin. These Protocols name the methods fedmq calls, so mypy checks each call
and what is passed: the global reactor and ``twisted.internet.task.Clock``
both fit the ones about time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime


class DelayedCall(Protocol):
    """What ``callLater`` returns (Twisted's ``IDelayedCall``), as far as fedmq uses it."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class Clock(Protocol):
    """The reactor's time and timers (Twisted's ``IReactorTime``), as far as fedmq uses them."""

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> DelayedCall: ...


class ThreadHopClock(Clock, Protocol):
    """A :class:`Clock` that other threads hand calls to (``IReactorThreads``)."""

    def callFromThread(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> None: ...


class RunningClock(Clock, Protocol):
    """A :class:`Clock` that also calls back once it runs (``IReactorCore.callWhenRunning``)."""

    def callWhenRunning(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any: ...


class ReactorControl(Protocol):
    """What a service asks of the reactor (``IReactorCore``, ``IReactorThreads``)."""

    def callWhenRunning(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Any: ...

    def callFromThread(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> None: ...

    def stop(self) -> None: ...


def as_reactor_time(clock: Clock) -> IReactorTime:
    """``clock`` where Twisted's own API asks for an ``IReactorTime``.

    A reactor or a ``Clock`` provides it; mypy cannot see zope's declarations
    of what a class provides, so this says it once, here.
    """
    return cast("IReactorTime", clock)
