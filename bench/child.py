"""One contender in a fresh interpreter: ``python -m bench.child NAME ...``.

The parent (``bench.run``) starts this once per contender and round, so every
contender gets a clean reactor and its own memory. The program consumes
``--messages`` messages from ``--queue`` (already filled), then prints one
JSON line with its result and exits.

What is timed, the same way for every contender: from just before the
consumer is started (connect, declare, qos, basic.consume) until, on the
reactor thread, the callback has counted every message *and* the client has
sent an ack for each. Stopping the consumer afterwards (basic.cancel, closing
the channel and connection) is timed separately, as ``stop_seconds``, and the
parent then checks with ``rabbitmqctl`` that the broker holds no unacked
message and exactly the ready messages it should.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import itertools
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.contenders import (
    ACK_BATCH,
    BY_NAME,
    FEDMQ_SCHEMA,
    FEDORA_MESSAGING_SCHEMA,
    NO_OTEL,
    OTEL_SDK,
    PREFETCH,
    SCHEMA,
    SCHEMA_PACKAGE,
    SLOW_EVERY,
    SLOW_SLEEP,
)

#: Seconds the consumer may take to stop once it has consumed everything.
STOP_TIMEOUT = 30.0
#: How often to look again while the last acks are on their way (seconds).
ACK_POLL_INTERVAL = 0.0005


class Harness:
    """Times one contender and decides when it is done.

    Everything here runs on the reactor thread except :meth:`count`, which a
    callback calls from whatever thread it runs in. Contender code sets
    :attr:`acked` (how many deliveries the client has acknowledged so far)
    and :attr:`stop` (how to shut the consumer down; returns a Deferred) once
    its consumer is running.

    Args:
        reactor: the running reactor.
        name: the contender's name, for the result.
        target: messages to consume before stopping.
        deadline: seconds after the start at which the run is given up.

    """

    def __init__(self, reactor: Any, name: str, target: int, deadline: float):
        self.reactor = reactor
        self.name = name
        self.target = target
        self.deadline = deadline
        self.acked: Callable[[], int] = lambda: 0
        self.stop: Callable[[], Any] | None = None
        self.counted = 0
        self._counter = itertools.count(1)
        self._started = 0.0
        self._cpu_started = 0.0
        self._cpu_done: float | None = None
        self._rss_at_start_mb: float | None = None
        self._first: float | None = None
        self._done: float | None = None
        self._stop_seconds: float | None = None
        self._error: str | None = None
        self._shutting_down = False
        self._deadline_call: Any = None

    # --- called by contender code ----------------------------------------

    def count(self) -> None:
        """Count one message; thread-safe (``next`` on a count is atomic)."""
        n = next(self._counter)
        self.counted = n
        if n == 1:
            self._first = time.perf_counter()
        if n == self.target:
            self.reactor.callFromThread(self._await_acks)

    def fail(self, why: str) -> None:
        """Give up on this run, saying why; the consumer is stopped all the same."""
        self._shut_down(why)

    # --- the run ---------------------------------------------------------

    def begin(self, start: Callable[[], Any]) -> None:
        """Start the clock, then the consumer (``start`` returns a Deferred or coroutine)."""
        from twisted.internet import defer

        self._rss_at_start_mb = _current_rss_mb()
        self._deadline_call = self.reactor.callLater(self.deadline, self._timed_out)
        self._started = time.perf_counter()
        self._cpu_started = _cpu_seconds()

        def started() -> Any:
            result = start()
            if asyncio.iscoroutine(result):
                return defer.ensureDeferred(result)
            return result

        d = defer.maybeDeferred(started)
        d.addErrback(lambda failure: self.fail(f"the consumer did not start: {_why(failure)}"))

    def _await_acks(self) -> None:
        if self._shutting_down:
            return
        if self.acked() >= self.target:
            self._done = time.perf_counter()
            self._cpu_done = _cpu_seconds()
            self._shut_down(None)
        else:
            self.reactor.callLater(ACK_POLL_INTERVAL, self._await_acks)

    def _timed_out(self) -> None:
        self._deadline_call = None
        self.fail(
            f"did not finish within {self.deadline:g} s "
            f"(counted {self.counted:,}, acked {self.acked():,} of {self.target:,})"
        )

    def _shut_down(self, error: str | None) -> None:
        from twisted.internet import defer

        if self._shutting_down:
            return
        self._shutting_down = True
        self._error = error
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        if self.stop is None:
            self.reactor.stop()
            return
        began = time.perf_counter()
        d = defer.maybeDeferred(self.stop)
        d.addTimeout(STOP_TIMEOUT, self.reactor)

        def stopped(result: Any) -> None:
            self._stop_seconds = time.perf_counter() - began
            if _is_failure(result) and self._error is None:
                self._error = f"the consumer did not stop cleanly: {_why(result)}"
            self.reactor.stop()

        d.addBoth(stopped)

    def result(self) -> dict[str, Any]:
        """The JSON-ready result; call after the reactor has stopped."""
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        seconds = self._done - self._started if self._done is not None else None
        return {
            "contender": self.name,
            "ok": self._error is None and seconds is not None,
            "messages": self.target,
            "seconds": seconds,
            "rate": self.target / seconds if seconds else None,
            "first_delivery_to_last_ack_seconds": (
                self._done - self._first
                if self._done is not None and self._first is not None
                else None
            ),
            "stop_seconds": self._stop_seconds,
            # CPU time of the whole consumer process (every thread) over the
            # timed part: the broker's share of the two cores is not in it.
            "cpu_seconds": (
                self._cpu_done - self._cpu_started if self._cpu_done is not None else None
            ),
            "counted": self.counted,
            "acked": self.acked(),
            "peak_rss_mb": _peak_rss_mb(),
            # Kept for comparison only: it includes the parent's RSS (see _peak_rss_mb).
            "ru_maxrss_mb": round(max_rss_mb, 1),
            # After the imports, before connecting: what the consumer itself adds
            # is the difference.
            "rss_at_start_mb": self._rss_at_start_mb,
            "error": self._error,
        }


def _proc_status_mb(field: str) -> float | None:
    """A ``VmRSS``/``VmHWM``-style field of ``/proc/self/status``, in MiB."""
    try:
        with Path("/proc/self/status").open() as status:
            for line in status:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _current_rss_mb() -> float | None:
    return _proc_status_mb("VmRSS")


def _peak_rss_mb() -> float | None:
    """The peak RSS of this process since it exec'd Python.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries the high-water mark
    of the memory a process had before ``execve`` into it, and a child of
    ``subprocess`` starts as a (v)fork of the parent, so ``ru_maxrss`` never
    reads below the parent's RSS. ``VmHWM`` belongs to the exec'd image alone.
    """
    return _proc_status_mb("VmHWM")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _is_failure(result: Any) -> bool:
    from twisted.python.failure import Failure

    return isinstance(result, Failure)


def _why(failure: Any) -> str:
    value = getattr(failure, "value", failure)
    return f"{type(value).__name__}: {value}"


# --- the contenders ----------------------------------------------------------


# Each function below imports and builds what its consumer needs, outside the
# timed part, and returns what starts the consumer (the clock is running then).
Start = Callable[[], Any]


def _fedmq(
    harness: Harness,
    args: argparse.Namespace,
    *,
    is_async: bool = False,
    concurrency: int = 1,
    sleep: float = 0.0,
    slow_every: int = 0,
) -> Start:
    import fedmq
    from fedmq.config import config_from_mapping

    config = config_from_mapping(
        {
            "amqp_url": args.url,
            "queues": {args.queue: {"durable": True}},
            "qos": {"prefetch_count": PREFETCH},
            "concurrency": concurrency,
        }
    )
    count = harness.count
    callback: Callable[[Any], Any]
    if is_async:

        async def callback(message: Any) -> None:
            count()

    elif slow_every:

        def callback(message: Any) -> None:
            if message.delivery_tag % slow_every == 0:
                time.sleep(sleep)
            count()

    elif sleep:

        def callback(message: Any) -> None:
            time.sleep(sleep)
            count()

    else:

        def callback(message: Any) -> None:
            count()

    def consuming(handle: Any) -> None:
        harness.acked = lambda: int(handle.counts.get("acked", 0))
        harness.stop = handle.cancel
        handle.result.addErrback(
            lambda failure: harness.fail(f"the consumer stopped early: {_why(failure)}")
        )

    return lambda: fedmq.consume(callback, config=config).addCallback(consuming)


def _schema_class_registered() -> None:
    """Make sure the schema contenders' messages name a registered class: else exit."""
    from fedora_messaging.message import get_class

    if get_class(SCHEMA).__module__ != SCHEMA_PACKAGE:
        sys.exit(
            f"no message class is registered for {SCHEMA}: "
            "pip install -e tests/fedora_schemas (make venv does)"
        )


def _schema(prepare: Callable[[Harness, argparse.Namespace], Start]) -> Callable[..., Start]:
    def prepare_with_schema(harness: Harness, args: argparse.Namespace) -> Start:
        _schema_class_registered()
        return prepare(harness, args)

    return prepare_with_schema


def _pika_raw(harness: Harness, args: argparse.Namespace, *, batched: bool) -> Start:
    import pika
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet import endpoints

    reactor = harness.reactor
    parameters = pika.URLParameters(args.url)
    address = urlsplit(args.url)
    endpoint = endpoints.TCP4ClientEndpoint(
        reactor, address.hostname or "127.0.0.1", address.port or 5672, timeout=10
    )
    target, count = harness.target, harness.count
    received = 0
    acked = 0

    def on_message(impl: Any, method: Any, properties: Any, body: bytes) -> None:
        nonlocal received, acked
        received += 1
        tag = method.delivery_tag
        if not batched:
            impl.basic_ack(tag)
            acked = received
        elif received % ACK_BATCH == 0 or received == target:
            impl.basic_ack(tag, multiple=True)
            acked = received
        count()

    async def start() -> None:
        protocol = TwistedProtocolConnection(parameters, custom_reactor=reactor)
        await endpoints.connectProtocol(endpoint, protocol)
        await protocol.ready
        channel = await protocol.channel()
        await channel.basic_qos(prefetch_count=PREFETCH)
        harness.acked = lambda: acked
        harness.stop = protocol.close
        # The channel's own callback, not TwistedChannel's queue of Deferreds:
        # the least work per message this stack allows.
        # the benchmark measures pika's own channel, bypassing the adapter.
        channel._channel.basic_consume(args.queue, on_message, auto_ack=False)  # noqa: SLF001

    return start


def _fedora_messaging(harness: Harness, args: argparse.Namespace) -> Start:
    # Its configuration comes from $FEDORA_MESSAGING_CONF, which the parent
    # points at a file in its temporary directory.
    from fedora_messaging import api
    from twisted.internet import defer

    count = harness.count

    def callback(message: Any) -> None:
        count()

    queues: Any = {
        args.queue: {"durable": True, "auto_delete": False, "exclusive": False, "arguments": {}}
    }

    def consuming(consumers: list[Any]) -> None:
        harness.acked = lambda: sum(consumer.stats.processed for consumer in consumers)
        harness.stop = lambda: defer.gatherResults(
            [defer.maybeDeferred(consumer.cancel) for consumer in consumers]
        )
        for consumer in consumers:
            consumer.result.addErrback(
                lambda failure: harness.fail(f"the consumer stopped early: {_why(failure)}")
            )

    return lambda: api.twisted_consume(callback, bindings=[], queues=queues).addCallback(consuming)


_PREPARERS: dict[str, Callable[[Harness, argparse.Namespace], Start]] = {
    "fedmq-sync": _fedmq,
    "fedmq-async": lambda h, a: _fedmq(h, a, is_async=True),
    "fedmq-async-default": lambda h, a: _fedmq(h, a, is_async=True),
    "fedmq-c16-sleep1ms": lambda h, a: _fedmq(h, a, concurrency=16, sleep=0.001),
    "fedmq-sync-c16": lambda h, a: _fedmq(h, a, concurrency=16),
    "fedmq-sync-c16-slow1pct": lambda h, a: _fedmq(
        h, a, concurrency=16, sleep=SLOW_SLEEP, slow_every=SLOW_EVERY
    ),
    "pika-twisted-raw": lambda h, a: _pika_raw(h, a, batched=False),
    "pika-twisted-raw-batched": lambda h, a: _pika_raw(h, a, batched=True),
    "fedora-messaging": _fedora_messaging,
    "rss-backlog": _fedmq,
    NO_OTEL: _fedmq,
    OTEL_SDK: _fedmq,
    FEDMQ_SCHEMA: _schema(_fedmq),
    FEDORA_MESSAGING_SCHEMA: _schema(_fedora_messaging),
}


class _NoOpenTelemetry(importlib.abc.MetaPathFinder):
    """Keeps ``opentelemetry`` from being imported, as if the otel extra were not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def _set_up_opentelemetry(contender: str) -> None:
    """No OpenTelemetry at all, or the SDK with exporters that drop everything."""
    if contender == NO_OTEL:
        sys.meta_path.insert(0, _NoOpenTelemetry())
    if contender != OTEL_SDK:
        return
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        MetricExporter,
        MetricExportResult,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Spans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class Metrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 0, **kwargs: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **kwargs: Any) -> None:
            pass

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Spans()))
    trace.set_tracer_provider(provider)
    reader = PeriodicExportingMetricReader(Metrics(), export_interval_millis=5000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))


#: Contenders that run under Twisted's asyncio reactor.
_ASYNCIO_REACTOR = {"fedmq-async"}


def _install_reactor(name: str) -> Any:
    if name in _ASYNCIO_REACTOR:
        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
    from twisted.internet import reactor

    return reactor


def _log_warnings_to_stderr() -> None:
    """Warnings and errors, from the stdlib and Twisted, go to stderr for the parent."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    observer = FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child", description=__doc__)
    parser.add_argument("contender", choices=sorted(BY_NAME))
    parser.add_argument("--url", required=True, help="the broker's AMQP URL")
    parser.add_argument("--queue", required=True, help="the filled queue to consume")
    parser.add_argument("--messages", type=int, required=True, help="messages to consume")
    parser.add_argument("--deadline", type=float, required=True, help="seconds before giving up")
    args = parser.parse_args(argv)

    _set_up_opentelemetry(args.contender)
    reactor = _install_reactor(args.contender)
    _log_warnings_to_stderr()
    harness = Harness(reactor, args.contender, args.messages, args.deadline)
    start = _PREPARERS[args.contender](harness, args)
    reactor.callWhenRunning(harness.begin, start)
    reactor.run()
    sys.stdout.write(json.dumps(harness.result()) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave at once: a worker thread still winding down must not hold the
    # interpreter open past the parent's timeout.
    os._exit(0)


if __name__ == "__main__":
    main()
