"""The health and metrics endpoint, over HTTP parsed by twisted.web, on a fake reactor."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from fedmq._delivery import ACK, CONSUMER_ERROR, DROP, ERROR, NACK, PARKED, RETRY
from fedmq._stats import DURATION_BUCKETS
from fedmq.config import config_from_mapping
from fedmq.consumer import STATES
from fedmq.exceptions import ConfigurationError
from fedmq.monitoring import MonitoringService
from tests.unit.fakes import FakeConsumer, FakeConsumerService


def monitoring_config(port: int | None = 0, address: str = "127.0.0.1") -> Any:
    monitoring: dict[str, Any] = {"address": address}
    if port is not None:
        monitoring["port"] = port
    return config_from_mapping({"monitoring": monitoring})


def started(consumer: FakeConsumer | None, port: int = 0) -> tuple[MonitoringService, Any]:
    reactor = MemoryReactorClock()
    service = MonitoringService(monitoring_config(port), FakeConsumerService(consumer), reactor)
    service.startService()
    return service, reactor


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {
            name.lower(): value for name, value in (line.split(": ", 1) for line in header_lines)
        }

    def json(self) -> Any:
        return json.loads(self.body)


def request(reactor: Any, path: str, method: str = "GET", accept: str | None = None) -> Response:
    """Send one HTTP request to what the service listens with; return the response."""
    [(_port, site, _backlog, _interface)] = reactor.tcpServers
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    headers = "Host: localhost\r\nConnection: close\r\n"
    if accept:
        headers += f"Accept: {accept}\r\n"
    protocol.dataReceived(f"{method} {path} HTTP/1.1\r\n{headers}\r\n".encode())
    return Response(transport.value())


def metrics(reactor: Any) -> dict[str, Any]:
    response = request(reactor, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        family.name: family
        for family in text_string_to_metric_families(response.body.decode("utf-8"))
    }


def sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    for item in families[family].samples:
        if item.name == name and item.labels == labels:
            return float(item.value)
    raise AssertionError(f"no sample {name}{labels} in {families[family].samples}")


# --- listening ---------------------------------------------------------------


def test_without_a_port_nothing_listens():
    reactor = MemoryReactorClock()
    service = MonitoringService(monitoring_config(None), FakeConsumerService(None), reactor)
    service.privilegedStartService()
    service.startService()
    assert reactor.tcpServers == []
    assert service.port is None


def test_it_listens_once_on_the_configured_address_and_port():
    reactor = MemoryReactorClock()
    config = monitoring_config(9187, "127.0.0.2")
    service = MonitoringService(config, FakeConsumerService(None), reactor)
    service.privilegedStartService()
    service.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [
        (9187, "127.0.0.2")
    ]
    assert service.port == 9187


def test_a_port_in_use_is_a_configuration_error_naming_the_keys():
    class BusyReactor(MemoryReactorClock):
        def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = ""):
            raise CannotListenError(interface, port, OSError(98, "Address already in use"))

    service = MonitoringService(monitoring_config(9187), FakeConsumerService(None), BusyReactor())
    with pytest.raises(ConfigurationError) as caught:
        service.startService()
    message = str(caught.value)
    assert "127.0.0.1:9187" in message
    assert "monitoring.port" in message
    assert "Address already in use" in message


# --- /live and /ready ---------------------------------------------------------


def test_live_answers_200_while_the_reactor_runs():
    _, reactor = started(FakeConsumer(state="reconnecting"))
    response = request(reactor, "/live")
    assert response.status == 200
    assert response.json() == {"live": True}


def test_ready_is_200_while_consuming_and_names_the_queues():
    consumer = FakeConsumer(queues=("orders", "audit"))
    consumer.in_flight = 3
    _, reactor = started(consumer)
    response = request(reactor, "/ready")
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"state": "consuming", "queues": ["orders", "audit"], "in_flight": 3}


@pytest.mark.parametrize(
    ("state", "words"),
    [
        ("connecting", "connecting"),
        ("reconnecting", "reconnecting"),
        ("blocked", "blocked"),
        ("draining", "callbacks in flight"),
        ("stopped", "stopped"),
    ],
)
def test_ready_is_503_with_a_json_reason_unless_consuming(state, words):
    _, reactor = started(FakeConsumer(state=state))
    response = request(reactor, "/ready")
    assert response.status == 503
    body = response.json()
    assert body["state"] == state
    assert words in body["reason"]


def test_ready_is_503_before_the_consumer_exists():
    _, reactor = started(None)
    response = request(reactor, "/ready")
    assert response.status == 503
    assert response.json()["state"] == "starting"


def test_ready_follows_the_consumer_from_one_request_to_the_next():
    consumer = FakeConsumer(state="connecting")
    _, reactor = started(consumer)
    assert request(reactor, "/ready").status == 503
    consumer.become("consuming")
    assert request(reactor, "/ready").status == 200
    consumer.become("reconnecting")
    assert request(reactor, "/ready").status == 503


def test_an_unknown_path_is_404_and_other_methods_are_refused():
    _, reactor = started(FakeConsumer())
    assert request(reactor, "/").status == 404
    assert request(reactor, "/readyz").status == 404
    assert request(reactor, "/ready/more").status == 404
    refused = request(reactor, "/ready", method="POST")
    assert refused.status == 405
    assert refused.headers["allow"] == "GET, HEAD"
    head = request(reactor, "/ready", method="HEAD")
    assert head.status == 200
    assert head.body == b""


def test_responses_are_not_cached():
    _, reactor = started(FakeConsumer())
    assert request(reactor, "/ready").headers["cache-control"] == "no-store"


# --- /metrics -------------------------------------------------------------------


def test_metrics_count_each_outcome_per_queue():
    consumer = FakeConsumer(queues=("orders", "audit"))
    stats = consumer.stats
    for _ in range(5):
        stats.queue("orders")["received"] += 1
    stats.record("orders", ACK, 0.002)
    stats.record("orders", ACK, 0.002)
    stats.record("orders", NACK, 0.002)
    stats.record("orders", DROP, 0.002)
    stats.record("orders", ERROR, 0.002)
    stats.record("orders", RETRY, 0.002)
    stats.record("orders", PARKED, 0.0)
    stats.record("orders", CONSUMER_ERROR, 0.002)
    stats.queue("audit")["received"] += 1
    stats.record("audit", ACK, 0.002)
    _, reactor = started(consumer)
    families = metrics(reactor)
    expected = {
        "received": 5,
        "acked": 2,
        "requeued": 1,
        "dropped": 1,
        "failed": 2,
        "retried": 1,
        "parked": 1,
    }
    for counter, value in expected.items():
        family = f"fedmq_messages_{counter}"
        assert families[family].type == "counter"
        assert sample(families, family, f"{family}_total", queue="orders") == value
    acked = "fedmq_messages_acked"
    assert sample(families, acked, f"{acked}_total", queue="audit") == 1


def test_the_duration_histogram_is_cumulative_over_the_stats_buckets():
    consumer = FakeConsumer()
    for duration in (0.0002, 0.003, 0.003, 0.7, 30.0):
        consumer.stats.record("orders", ACK, duration)
    _, reactor = started(consumer)
    families = metrics(reactor)
    family = "fedmq_callback_duration_seconds"
    assert families[family].type == "histogram"

    def bucket(le: str) -> float:
        return sample(families, family, f"{family}_bucket", le=le)

    assert bucket("0.0005") == 1
    assert bucket("0.0025") == 1
    assert bucket("0.005") == 3
    assert bucket("0.5") == 3
    assert bucket("1.0") == 4
    assert bucket("10.0") == 4
    assert bucket("+Inf") == 5
    assert sample(families, family, f"{family}_count") == 5
    assert sample(families, family, f"{family}_sum") == pytest.approx(30.7062)
    les = [s.labels["le"] for s in families[family].samples if s.name.endswith("_bucket")]
    assert len(les) == len(DURATION_BUCKETS) + 1


def test_in_flight_reconnects_state_and_last_message_time_are_exported():
    consumer = FakeConsumer(state="reconnecting")
    consumer.in_flight = 4
    consumer.stats.reconnects = 2
    consumer.stats.last_message_time = 1_700_000_000.5
    _, reactor = started(consumer)
    families = metrics(reactor)
    assert sample(families, "fedmq_messages_in_flight", "fedmq_messages_in_flight") == 4
    assert sample(families, "fedmq_reconnects", "fedmq_reconnects_total") == 2
    name = "fedmq_last_message_timestamp_seconds"
    assert sample(families, name, name) == 1_700_000_000.5
    states = {s.labels["state"]: s.value for s in families["fedmq_connection_state"].samples}
    assert states == {state: (1 if state == "reconnecting" else 0) for state in STATES}


def test_metrics_are_read_when_scraped_not_when_the_service_starts():
    consumer = FakeConsumer()
    _, reactor = started(consumer)
    name = "fedmq_messages_received"
    consumer.stats.queue("orders")["received"] = 1
    assert sample(metrics(reactor), name, f"{name}_total", queue="orders") == 1
    consumer.stats.queue("orders")["received"] = 7
    consumer.become("blocked")
    families = metrics(reactor)
    assert sample(families, name, f"{name}_total", queue="orders") == 7
    state = "fedmq_connection_state"
    assert sample(families, state, state, state="blocked") == 1


def test_every_metric_name_starts_with_fedmq():
    consumer = FakeConsumer()
    consumer.stats.record("orders", ACK, 0.01)
    consumer.stats.batch_done()
    _, reactor = started(consumer)
    names = {item.name for family in metrics(reactor).values() for item in family.samples}
    assert names
    assert all(name.startswith("fedmq_") for name in names), sorted(names)


def test_before_the_consumer_exists_metrics_still_answer_with_zero_state():
    _, reactor = started(None)
    families = metrics(reactor)
    assert all(s.value == 0 for s in families["fedmq_connection_state"].samples)
    assert families["fedmq_last_message_timestamp_seconds"].samples == []


def test_openmetrics_is_served_when_asked_for():
    _, reactor = started(FakeConsumer())
    response = request(reactor, "/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert response.status == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.body.rstrip().endswith(b"# EOF")


def test_the_metrics_stay_out_of_prometheus_clients_global_registry():
    service, _ = started(FakeConsumer())
    assert service.registry is not REGISTRY
    assert not [name for name in REGISTRY._names_to_collectors if name.startswith("fedmq_")]


# --- stopping ---------------------------------------------------------------------


def test_it_keeps_answering_while_the_consumer_drains_and_stops_listening_after():
    consumer = FakeConsumer(state="draining")
    service, reactor = started(consumer)
    stopped = service.stopService()
    assert stopped is not None and not stopped.called
    assert request(reactor, "/ready").json()["state"] == "draining"
    consumer.become("stopped")
    assert stopped.called
    assert service.port is None


def test_stopping_before_the_consumer_exists_stops_listening_at_once():
    service, _ = started(None)
    stopped = service.stopService()
    assert stopped is not None and stopped.called
