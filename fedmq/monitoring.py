"""Health checks and Prometheus metrics over HTTP, served by twisted.web.

``[monitoring] port`` turns it on (``address`` defaults to 127.0.0.1):

- ``GET /live``: 200 while the reactor runs (a stuck reactor answers nothing).
- ``GET /ready``: 200 while the consumer consumes from every configured
  queue; 503 while it connects, reconnects, is blocked by the broker, is
  suspended (its host is unhealthy), drains or has stopped. The body is
  JSON and says which, and why.
- ``GET /metrics``: the consumer's counters in Prometheus' text format.

The metrics are read from :class:`~fedmq._stats.ConsumerStats` when scraped,
through a collector in a registry of this service's own (not
prometheus_client's global one), so nothing is counted twice and several
consumers in one process do not collide.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString
from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import Request

from fedmq._http import QuietSite, listen_tcp
from fedmq._listening import ListeningService
from fedmq._stats import DURATION_BUCKETS, QUEUE_COUNTERS
from fedmq.config import Config
from fedmq.consumer import STATES

log = logging.getLogger("fedmq.monitoring")

#: Why /ready answers 503, by consumer state.
_NOT_READY = {
    "connecting": "connecting to the broker",
    "reconnecting": "the connection to the broker was lost; reconnecting",
    "blocked": "the broker blocked the connection (a resource alarm)",
    "draining": "stopping: waiting for callbacks in flight",
    "stopped": "the consumer has stopped",
}

_COUNTER_HELP = {
    "received": "Messages delivered to fedmq, per queue.",
    "acked": "Messages acknowledged after the callback returned, per queue.",
    "requeued": "Messages returned to their queue (Nack, a stop), per queue.",
    "dropped": "Messages dropped (Drop, a type not accepted), per queue.",
    "failed": "Messages requeued after a consumer error or unexpected exception, per queue.",
    "retried": "Messages moved to a retry queue (Retry), per queue.",
    "parked": "Messages parked in the dead queue (retries spent, undecodable), per queue.",
}


class ConsumerCollector:
    """A prometheus_client collector reading a consumer's counters at scrape time.

    Args:
        consumer_service: an object whose ``consumer`` attribute is the
            :class:`~fedmq.consumer.Consumer`, or None before it starts.

    """

    def __init__(self, consumer_service: Any) -> None:
        self._consumer_service = consumer_service

    def collect(self) -> Iterator[Metric]:
        """Yield every ``fedmq_`` metric, from the consumer's current counters."""
        consumer = self._consumer_service.consumer
        stats = consumer.stats if consumer is not None else None
        queues: dict[str, dict[str, int]] = stats.queues if stats is not None else {}
        for counter in QUEUE_COUNTERS:
            family = CounterMetricFamily(
                f"fedmq_messages_{counter}", _COUNTER_HELP[counter], labels=["queue"]
            )
            for queue, queue_counts in sorted(queues.items()):
                family.add_metric([queue], queue_counts[counter])
            yield family

        durations = HistogramMetricFamily(
            "fedmq_callback_duration_seconds",
            "Seconds the callback took per message.",
            labels=[],
        )
        counts = stats.duration_buckets if stats is not None else [0] * (len(DURATION_BUCKETS) + 1)
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip(
            [*map(floatToGoString, DURATION_BUCKETS), "+Inf"], counts, strict=True
        ):
            cumulative += count
            buckets.append((bound, cumulative))
        durations.add_metric([], buckets, stats.duration_sum if stats is not None else 0.0)
        yield durations

        yield GaugeMetricFamily(
            "fedmq_messages_in_flight",
            "Messages delivered and not yet settled (in or waiting for the callback).",
            value=consumer.in_flight if consumer is not None else 0,
        )
        yield CounterMetricFamily(
            "fedmq_reconnects",
            "Connections to the broker made after the first.",
            value=stats.reconnects if stats is not None else 0,
        )
        current = consumer.state if consumer is not None else None
        state = GaugeMetricFamily(
            "fedmq_connection_state",
            "1 for the consumer's current state, 0 for the others.",
            labels=["state"],
        )
        for name in STATES:
            state.add_metric([name], 1 if name == current else 0)
        yield state
        last = GaugeMetricFamily(
            "fedmq_last_message_timestamp_seconds",
            "UNIX time the callback last finished with a message (absent before the first).",
        )
        if stats is not None and stats.last_message_time is not None:
            last.add_metric([], stats.last_message_time)
        yield last


class _Endpoints(Resource):
    """``/live``, ``/ready`` and ``/metrics``; anything else is 404."""

    isLeaf = True

    def __init__(self, consumer_service: Any, registry: CollectorRegistry) -> None:
        super().__init__()
        self._consumer_service = consumer_service
        self._registry = registry

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _json(request, 405, {"error": "only GET and HEAD are allowed"})
        return self._get(request)

    def _get(self, request: Request) -> bytes:
        if request.path == b"/live":
            return _json(request, 200, {"live": True})
        if request.path == b"/ready":
            return self._ready(request)
        if request.path == b"/metrics":
            accept = request.getHeader(b"accept") or b""
            encode, content_type = choose_encoder(accept.decode("latin-1"))
            request.setHeader(b"content-type", content_type.encode("ascii"))
            return bytes(encode(self._registry))
        return _json(request, 404, {"error": "not found; try /live, /ready or /metrics"})

    def _ready(self, request: Request) -> bytes:
        consumer = self._consumer_service.consumer
        if consumer is None:
            return _json(
                request, 503, {"state": "starting", "reason": "the consumer has not started"}
            )
        state = consumer.state
        if state == "consuming":
            return _json(
                request,
                200,
                {"state": state, "queues": list(consumer.queues), "in_flight": consumer.in_flight},
            )
        if state == "suspended":
            reason = f"the host is unhealthy: {consumer.health.reason}"
        else:
            reason = _NOT_READY.get(state, f"the consumer is {state}")
        return _json(request, 503, {"state": state, "reason": reason})


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body).encode("utf-8") + b"\n"


class MonitoringService(ListeningService):
    """Serves ``/live``, ``/ready`` and ``/metrics`` on ``[monitoring] address:port``.

    Does nothing when ``monitoring.port`` is None. Port 0 listens on a free
    port, which :attr:`port` then gives.

    Args:
        config: the configuration; only ``monitoring`` is read.
        consumer_service: an object whose ``consumer`` attribute is the
            :class:`~fedmq.consumer.Consumer` (None until it starts), read at
            every request.
        reactor: the reactor to listen with; the global one by default.

    Attributes:
        port: the TCP port listened on, once started; None otherwise.
        registry: the prometheus_client registry ``/metrics`` serves.

    """

    name = "fedmq-monitoring"

    def __init__(self, config: Config, consumer_service: Any, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._config = config.monitoring
        self._consumer_service = consumer_service
        self._reactor = reactor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ConsumerCollector(consumer_service))
        self._site = QuietSite(
            _Endpoints(consumer_service, self.registry), "fedmq monitoring", reactor
        )
        self._listening: Any = None
        self.port: int | None = None

    def _listen(self) -> None:
        if self._listening is not None or self._config.port is None:
            return
        address, port = self._config.address, self._config.port
        self._listening, host = listen_tcp(
            self._reactor,
            self._site,
            address,
            port,
            "monitoring",
            "monitoring.address, monitoring.port",
        )
        self.port = self._listening.getHost().port
        log.info("Serving /live, /ready and /metrics on http://%s:%d/", host, self.port)

    def stopService(self) -> defer.Deferred[None] | None:
        """Stop listening once the consumer has stopped.

        The consumer drains for up to ``drain_timeout`` when the process
        stops; ``/ready`` keeps answering (503, "draining") until it is done.

        Returns:
            A Deferred firing once the port is closed, or None if it was not open.

        """
        super().stopService()
        if self._listening is None:
            return None
        consumer = self._consumer_service.consumer
        if consumer is None or consumer.state == "stopped":
            return self._stop_listening()
        closed: defer.Deferred[None] = defer.Deferred()

        def state_changed(state: str) -> None:
            if state == "stopped" and not closed.called:
                self._stop_listening().chainDeferred(closed)

        consumer.add_state_listener(state_changed)
        return closed

    def _stop_listening(self) -> defer.Deferred[None]:
        listening, self._listening = self._listening, None
        self.port = None
        if listening is None:
            return defer.succeed(None)
        return defer.maybeDeferred(listening.stopListening).addCallback(lambda _: None)


__all__ = ["ConsumerCollector", "MonitoringService"]
