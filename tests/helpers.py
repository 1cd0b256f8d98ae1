"""Helpers shared by the whole suite: waiting, ports, config files, systemd's socket, logging.

Each exists once, here. Fixtures built on them (``notify_socket``,
``restore_logging``) are in ``tests/conftest.py``.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# --- waiting ----------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], Any],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout: float = 30,
    interval: float = 0.1,
) -> Any:
    """Poll ``condition`` until it is true; fail early if ``process`` exits meanwhile.

    Outside the reactor thread only: it blocks. ``timeout`` is wall-clock
    time, however long ``condition`` takes to check.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"exited {process.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


async def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Let the reactor run until ``condition()`` is true; fail after ``timeout`` seconds.

    The time is the wall clock's: a condition that is slow to check (rabbitmqctl takes
    about a second) does not stretch the timeout.
    """
    from twisted.internet import reactor, task  # not at import: pytest-twisted picks the reactor

    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        await task.deferLater(reactor, 0.05, lambda: None)


def wait_for_port(port: int, timeout: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
        time.sleep(0.05)


# --- ports ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- config files -----------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as TOML: plain keys first, then one table per dict value."""
    plain = [f"{key} = {toml_value(value)}" for key, value in data.items() if not _table(value)]
    tables = [
        f"[{key}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in value.items())
        for key, value in data.items()
        if _table(value)
    ]
    path.write_text("\n".join(plain) + "\n\n" + "\n".join(tables))
    return path


def _table(value: Any) -> bool:
    return isinstance(value, dict)


# --- what a command printed ---------------------------------------------------------------


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# --- systemd's notification socket ------------------------------------------------------


class NotifySocket:
    """A datagram socket standing in for systemd's notification socket.

    Args:
        address: a path, or ``@name`` for the abstract namespace.

    """

    def __init__(self, address: str):
        self.path = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self._sock.setblocking(False)
        self.received: list[str] = []
        self._read = 0

    def poll(self) -> list[str]:
        """Every datagram received so far."""
        while True:
            try:
                self.received.append(self._sock.recv(4096).decode())
            except BlockingIOError:
                return self.received

    def messages(self) -> list[str]:
        """The datagrams received since the last call."""
        received = self.poll()
        new, self._read = received[self._read :], len(received)
        return new

    def saw(self, assignment: str) -> int:
        """How many datagrams so far carry ``assignment`` ("READY=1") as one of their lines."""
        return sum(assignment in message.split("\n") for message in self.poll())

    def close(self) -> None:
        self._sock.close()


# --- logging ----------------------------------------------------------------------------


@contextmanager
def logging_restored() -> Iterator[None]:
    """Put every logger and handler back as it was: fedmq's logging setup changes globals."""
    from fedmq import _logging

    manager = logging.Logger.manager
    loggers = [
        logging.getLogger(),
        *(v for v in manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    saved_filters = {id(h): h.filters[:] for lg in loggers for h in lg.handlers}
    known = set(manager.loggerDict)
    default = _logging._default_handler
    try:
        yield
    finally:
        for handler in list(_logging._all_handlers()):
            if id(handler) in saved_filters:
                handler.filters[:] = saved_filters[id(handler)]
        for name in set(manager.loggerDict) - known:
            made = manager.loggerDict[name]
            if isinstance(made, logging.Logger):
                made.handlers.clear()
                made.setLevel(logging.NOTSET)
                made.propagate = True
        for logger, level, handlers, propagate, disabled in saved:
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.disabled = disabled
        _logging._default_handler = default


# --- OpenTelemetry --------------------------------------------------------------------


class OpenTelemetrySDK:
    """The process's OpenTelemetry SDK, exporting to memory: what the tracing tests read.

    OpenTelemetry lets a process set its tracer and meter providers once, so
    the first test that asks installs them for the rest of the run; fedmq
    then traces in every later test too, which must not change what they see.
    """

    _installed: OpenTelemetrySDK | None = None

    def __init__(self) -> None:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        self.spans = InMemorySpanExporter()
        self.metrics = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[self.metrics]))
        self.tracer = trace.get_tracer("tests")

    @classmethod
    def install(cls) -> OpenTelemetrySDK:
        if cls._installed is None:
            cls._installed = cls()
        cls._installed.spans.clear()
        return cls._installed

    def finished(self, name: str) -> list[Any]:
        """The spans called ``name`` that have ended, oldest first."""
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def points(self, metric: str, **attributes: Any) -> list[Any]:
        """The data points of ``metric`` whose attributes include ``attributes``."""
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name != metric:
                        continue
                    found += [
                        point
                        for point in item.data.data_points
                        if attributes.items() <= dict(point.attributes).items()
                    ]
        return found
