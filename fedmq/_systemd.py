"""Tell systemd how the consumer is doing: ``Type=notify`` and the watchdog.

systemd passes a datagram socket in ``$NOTIFY_SOCKET``; a service writes
``KEY=value`` lines to it (the sd_notify protocol). That is a few lines of
socket code, so fedmq speaks it itself instead of depending on libsystemd.
Without ``$NOTIFY_SOCKET`` (not under systemd, or not ``Type=notify``)
nothing here does anything.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.task import LoopingCall

from fedmq._reactor_types import RunningClock, as_reactor_time

log = logging.getLogger("fedmq.systemd")

#: What ``systemctl status`` shows, by consumer state.
_STATUS = {
    "connecting": "Connecting to the broker",
    "reconnecting": "Reconnecting to the broker",
    "blocked": "Blocked by the broker (a resource alarm); not consuming",
    "draining": "Draining: waiting for callbacks in flight",
    "stopped": "Stopped",
}


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``"READY=1"``, several lines...) to systemd, if it listens.

    Args:
        state: newline-separated ``KEY=value`` assignments.
        environ: where to find ``$NOTIFY_SOCKET``; ``os.environ`` by default.

    Returns:
        True when the message was sent; False without ``$NOTIFY_SOCKET`` or
        when sending failed (which is logged: systemd's own sd_notify also
        carries on).

    """
    path = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    # "@name" is a socket in the abstract namespace, which starts with a NUL byte.
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), address)
    except OSError as error:
        log.warning("Cannot notify systemd through %s: %s", path, error.strerror or error)
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings systemd asks for, or None when it asks for none.

    systemd sets ``$WATCHDOG_USEC`` (from ``WatchdogSec=``) and ``$WATCHDOG_PID``;
    pinging at half the timeout, as sd_watchdog_enabled(3) advises, leaves room
    for one late ping.

    Args:
        environ: the environment; ``os.environ`` by default.

    Returns:
        Half of ``$WATCHDOG_USEC``, in seconds; None when it is unset or
        invalid, or when ``$WATCHDOG_PID`` names another process.

    """
    env = os.environ if environ is None else environ
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None


class NotifyService(Service):
    """Tells systemd when the consumer is ready, that it is alive, and when it stops.

    - ``READY=1`` (with a ``STATUS=`` naming the queues) once the consumer
      first consumes from every queue, so ``systemctl start`` returns then;
    - ``STATUS=`` at every later change of the consumer's state;
    - ``WATCHDOG=1`` every ``$WATCHDOG_USEC / 2``, scheduled on the reactor:
      a reactor that is stuck stops pinging, and systemd restarts the service;
    - ``STOPPING=1`` when the service stops (the drain begins).

    Args:
        consumer_service: the service running the consumer; its ``consumer``
            attribute is read when this service starts (it may still be None
            then, when this service starts first: it is read again once the
            reactor runs).
        reactor: the reactor that schedules the watchdog pings; the global
            one by default.
        environ: the environment naming the socket; ``os.environ`` by default.

    """

    name = "fedmq-systemd"

    def __init__(
        self,
        consumer_service: Any,
        reactor: RunningClock | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            # The installed reactor provides these interfaces; mypy sees only the module.
            reactor = cast("RunningClock", global_reactor)
        self._consumer_service = consumer_service
        self._reactor = reactor
        self._environ = environ
        self._consumer: Any = None
        self._ready = False
        self._watchdog: LoopingCall | None = None

    def _notify(self, state: str) -> bool:
        return notify(state, self._environ)

    @property
    def _listening(self) -> bool:
        env = os.environ if self._environ is None else self._environ
        return bool(env.get("NOTIFY_SOCKET"))

    def startService(self) -> None:
        super().startService()
        if not self._listening:
            return
        interval = watchdog_interval(self._environ)
        if interval is not None:
            self._watchdog = LoopingCall(self._notify, "WATCHDOG=1")
            self._watchdog.clock = as_reactor_time(self._reactor)
            self._watchdog.start(interval, now=True)
        if not self._follow_consumer():
            self._reactor.callWhenRunning(self._follow_consumer)

    def _follow_consumer(self) -> bool:
        consumer = self._consumer_service.consumer
        if consumer is None or self._consumer is not None or not self.running:
            return consumer is not None
        self._consumer = consumer
        consumer.add_state_listener(self._state_changed)
        self._state_changed(consumer.state)
        return True

    def _state_changed(self, state: str) -> None:
        if state in ("consuming", "suspended"):
            # Suspended is up too: it resumes by itself once the host is healthy
            # (withholding READY=1 would have systemd kill a service started then).
            queues = ", ".join(self._consumer.queues) or "no queues"
            status = f"STATUS=Consuming from {queues}"
            if state == "suspended":
                status = (
                    "STATUS=Suspended: the host is unhealthy; queues with "
                    f"suspend_on_bad_host_health wait (of {queues})"
                )
            if not self._ready:
                self._ready = True
                self._notify(f"READY=1\n{status}")
            else:
                self._notify(status)
        else:
            self._notify(f"STATUS={_STATUS.get(state, state)}")
        if state == "stopped":
            self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.running:
            self._watchdog.stop()
        self._watchdog = None

    def stopService(self) -> None:
        """Say ``STOPPING=1``; keep the watchdog going until the consumer has stopped.

        The drain can take up to ``drain_timeout``, and a reactor that is
        draining is still one that should answer the watchdog.
        """
        super().stopService()
        if not self._listening:
            return
        self._notify("STOPPING=1\nSTATUS=Stopping: draining callbacks in flight")
        if self._consumer is None or self._consumer.state == "stopped":
            self._stop_watchdog()


__all__ = ["NotifyService", "notify", "watchdog_interval"]
