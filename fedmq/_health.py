"""Host health inside a consumer: the poller of ``health_check``, and what a change does.

:class:`HealthPoller` calls the configured check every ``health_interval``
seconds in a thread of its own (a check may block: it reads a file, asks a
local service), each call bounded by ``health_timeout`` on the consumer's
clock, and tells a :class:`~fedmq.HealthMonitor` what it found. One call runs
at a time: a check that hangs keeps the host unhealthy, and is not called
again until it returns.

:class:`HostHealth` follows a monitor on the reactor thread: unhealthy, it
emits ``host_unhealthy``, holds every queue marked
``suspend_on_bad_host_health`` (reason :data:`HOST_UNHEALTHY`) and makes the
consumer "suspended"; healthy, the reverse.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall

from fedmq._callback import import_object
from fedmq._flow import HOST_UNHEALTHY, Holds
from fedmq._reactor_types import Clock, ThreadHopClock, as_reactor_time
from fedmq.events import Event, HostHealthy, HostUnhealthy
from fedmq.exceptions import CallbackError, ConfigurationError
from fedmq.health import ConsumerSuspended, HealthMonitor

if TYPE_CHECKING:
    from fedmq._events import EventBus
    from fedmq._queue_control import QueueControl

log = logging.getLogger("fedmq")


def load_health_check(path: str, source: str) -> Callable[[], Any]:
    """Import the ``health_check`` callable, or fail naming the key and the file."""
    try:
        check = import_object(path)
    except CallbackError as error:
        text = str(error).replace("The callback", "the callable", 1)
        raise ConfigurationError(f"{source}: health_check: {text}") from None
    if not callable(check):
        raise ConfigurationError(f"{source}: health_check: {path!r} is not callable")
    return check  # type: ignore[no-any-return]


class HealthPoller:
    """Polls ``check`` and tells ``monitor``; see the module's docstring.

    Args:
        check: called with no arguments in a worker thread; a true value
            means healthy, a false one or an exception unhealthy.
        name: how log lines and reasons name the check.
        monitor: told what each call found, on the reactor thread.
        interval: seconds between calls.
        timeout: seconds a call may take before the host counts as unhealthy.
        clock: the consumer's clock: the interval and the timeout run on it.
        reactor: the worker thread answers through its ``callFromThread``.

    """

    def __init__(
        self,
        check: Callable[[], Any],
        name: str,
        monitor: HealthMonitor,
        interval: float,
        timeout: float,
        clock: Clock,
        reactor: ThreadHopClock,
    ) -> None:
        self._check = check
        self._name = name
        self._monitor = monitor
        self._timeout = timeout
        self._clock = clock
        self._reactor = reactor
        self._timer = LoopingCall(self.poll)
        self._timer.clock = as_reactor_time(clock)
        self._interval = interval
        # The number of the call running (None: none is), and its deadline.
        self._calls = 0
        self._running: int | None = None
        self._deadline: Any = None

    @property
    def calling(self) -> bool:
        """A call of the check is running (its answer has not reached the reactor thread)."""
        return self._running is not None

    def start(self) -> None:
        """Call the check now, then every ``interval`` seconds."""
        if not self._timer.running:
            self._timer.start(self._interval, now=True)

    def stop(self) -> None:
        """Call the check no more; an answer still due is ignored."""
        if self._timer.running:
            self._timer.stop()
        self._cancel_deadline()
        self._running = None

    def poll(self) -> None:
        """Start one call of the check, unless one is still running."""
        if self._running is not None:
            return
        self._calls += 1
        self._running = number = self._calls
        self._deadline = self._clock.callLater(self._timeout, self._timed_out, number)
        threading.Thread(
            target=self._call, args=(number,), name="fedmq-health-check", daemon=True
        ).start()

    def _call(self, number: int) -> None:
        try:
            healthy = bool(self._check())
            reason = None if healthy else f"the health check {self._name} returned a false value"
        except Exception as error:  # any failure of the check means unhealthy
            healthy = False
            reason = f"the health check {self._name} raised {type(error).__name__}: {error}"
        self._reactor.callFromThread(self._answered, number, healthy, reason)

    def _answered(self, number: int, healthy: bool, reason: str | None) -> None:
        if number != self._running:
            return  # stopped meanwhile
        self._running = None
        if not self._cancel_deadline():
            return  # too late: the timeout already said unhealthy; the next call decides
        if healthy:
            self._monitor.set_healthy()
        else:
            self._monitor.set_unhealthy(reason or "unhealthy")

    def _timed_out(self, number: int) -> None:
        self._deadline = None
        if number == self._running:
            self._monitor.set_unhealthy(
                f"the health check {self._name} did not answer within {self._timeout:g} s"
            )

    def _cancel_deadline(self) -> bool:
        """Cancel the running call's deadline; False if it had already passed."""
        deadline, self._deadline = self._deadline, None
        if deadline is None or not deadline.active():
            return False
        deadline.cancel()
        return True


class HostHealth:
    """Suspends the queues marked ``suspend_on_bad_host_health`` while the host is unhealthy.

    Args:
        holds: the consumer's queue holds; a marked queue is held with the
            reason :data:`HOST_UNHEALTHY` while the host is unhealthy.
        marked: returns the names of the queues marked now (queues may be
            added while the consumer runs).
        suspend: told the reason while suspended, None once healthy.
        emit: called with the ``host_unhealthy`` and ``host_healthy`` events.
        on_reactor: ``on_reactor(f, *args)`` runs ``f(*args)`` on the reactor
            thread (at once when called on it).
        monitor: the monitor followed from :meth:`start` on.
        poller: polls the configured ``health_check``, if there is one.

    """

    def __init__(
        self,
        holds: Holds,
        marked: Callable[[], Sequence[str]],
        suspend: Callable[[str | None], None],
        emit: Callable[[Event], None],
        on_reactor: Callable[..., None],
        monitor: HealthMonitor,
        poller: HealthPoller | None = None,
    ) -> None:
        self._holds = holds
        self._marked = marked
        self._suspend = suspend
        self._emit = emit
        self._on_reactor = on_reactor
        self._monitor = monitor
        self._poller = poller
        #: Why the host is unhealthy; None while healthy.
        self.reason: str | None = None
        holds.add_listener(self._queue_changed)

    def start(self) -> None:
        """Follow the monitor from now on, starting with what it says now; start polling."""
        self._monitor.add_listener(self._heard)
        self._follow()
        if self._poller is not None:
            self._poller.start()

    def stop(self) -> None:
        """Stop polling and following the monitor."""
        if self._poller is not None:
            self._poller.stop()
        self._monitor.remove_listener(self._heard)

    def _heard(self, _healthy: bool, _reason: str | None) -> None:
        # Changes made in two threads may reach the reactor thread in the
        # opposite order: each hop acts on what the monitor says when it
        # runs, so the last change wins. Its reason alone says it (None
        # while healthy), read in one step.
        self._on_reactor(self._follow)

    def _follow(self) -> None:
        reason = self._monitor.reason
        self.changed(healthy=reason is None, reason=reason)

    def changed(self, healthy: bool, reason: str | None) -> None:
        """The monitor changed (on the reactor thread)."""
        if not healthy:
            was_healthy = self.reason is None
            self.reason = reason or "the host is unhealthy"
            if was_healthy:
                log.warning("The host is unhealthy: %s", self.reason)
                self._emit(HostUnhealthy(self.reason))
                for queue in self._marked():
                    self._hold(queue)
            self._suspend(self.reason if self._holding() else None)
            return
        if self.reason is None:
            return
        self.reason = None
        log.info("The host is healthy again")
        self._emit(HostHealthy())
        _quiet(self._holds.release(None, HOST_UNHEALTHY))
        self._suspend(None)

    def _holding(self) -> bool:
        """Whether the host's ill health holds a queue now."""
        return any(HOST_UNHEALTHY in state.reasons for state in self._holds.states().values())

    def _hold(self, queue: str) -> None:
        # The holds are the one record of what ill health holds: a queue
        # removed is forgotten with its reasons, and held again if re-added.
        if queue in self._holds and HOST_UNHEALTHY not in self._holds.reasons(queue):
            _quiet(self._holds.hold(queue, HOST_UNHEALTHY))

    def _queue_changed(self, queue: str, _consuming: bool, _reasons: frozenset[str]) -> None:
        """A marked queue added while the host is unhealthy is suspended too."""
        if (
            self.reason is not None
            and queue in self._holds
            and HOST_UNHEALTHY not in self._holds.reasons(queue)
            and queue in self._marked()
        ):
            self._hold(queue)
            self._suspend(self.reason)


def _quiet(d: defer.Deferred[None]) -> None:
    # A failure to consume again is told by the holds' failure listeners.
    d.addErrback(lambda _: None)


def host_health_for(
    flow: QueueControl,
    monitor: HealthMonitor,
    clock: Clock,
    reactor: ThreadHopClock,
    suspend: Callable[[str | None], None],
    bus: EventBus,
    on_reactor: Callable[..., None],
) -> HostHealth:
    """The consumer's :class:`HostHealth`, with a poller when ``health_check`` is set.

    Args:
        flow: the consumer's queues (their config and holds, changed while it runs).
        monitor: what the poller tells, and what the consumer follows.
        clock: the consumer's clock.
        reactor: the consumer's reactor (the poller's answers cross to its thread).
        suspend: makes the consumer "suspended" (a reason) or not (None).
        bus: the consumer's events; its stop stops the poller.
        on_reactor: runs a function on the reactor thread.

    Raises:
        ConfigurationError: ``health_check`` cannot be imported or is not callable.

    """
    config = flow.config
    poller = None
    if config.health_check is not None:
        check = load_health_check(config.health_check, config.source)
        poller = HealthPoller(
            check,
            config.health_check,
            monitor,
            config.health_interval,
            config.health_timeout,
            clock,
            reactor,
        )

    def marked() -> list[str]:
        return [queue.name for queue in flow.config.queues if queue.suspend_on_bad_host_health]

    host = HostHealth(flow.holds, marked, suspend, bus.emit, on_reactor, monitor, poller)
    bus.on_stop(host.stop)
    return host


def suspended_refusal(consumer: Any) -> ConsumerSuspended | None:
    """The error a publish through ``consumer`` fails with now, if it must fail.

    Only while the consumer is suspended, with ``fail_publish_when_suspended``.
    """
    if consumer.state == "suspended" and consumer.config.fail_publish_when_suspended:
        return ConsumerSuspended(
            f"Not published: the consumer is suspended (the host is unhealthy: "
            f"{consumer.health.reason}) and fail_publish_when_suspended is set"
        )
    return None
