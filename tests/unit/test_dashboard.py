"""The Grafana dashboard and the Prometheus alert rules in contrib/ query what fedmq exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedmq._delivery import Outcome
from fedmq.config import config_from_mapping
from fedmq.monitoring import MonitoringService
from tests.unit.fakes import FakeConsumer, FakeConsumerService

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "fedmq.json"
ALERTS = ROOT / "contrib" / "prometheus" / "fedmq-alerts.yml"
DOCS = ROOT / "docs" / "observability.md"

#: Series Prometheus itself writes for every scrape target.
SCRAPE_SERIES = {"up"}
#: Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"instance", "job"}

_METRIC = re.compile(r"\b(fedmq_[a-z_]+|up)\b")
_SELECTOR = re.compile(r"\b([a-z_]+)\{([^}]*)\}")
_LABEL = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)")


def exported_series() -> dict[str, set[str]]:
    """Every series name a scrape of fedmq's /metrics yields, with its labels."""
    consumer = FakeConsumer()
    consumer.stats.record("orders", Outcome.ACK, 0.01)
    consumer.stats.batch_done()
    config = config_from_mapping({"monitoring": {"port": 0}})
    service = MonitoringService(config, FakeConsumerService(consumer), reactor=object())
    page = generate_latest(service.registry).decode("utf-8")
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    expressions += [
        variable["definition"]
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "query"
    ]
    return expressions


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def unknown_names(expressions: list[str]) -> set[str]:
    """Metric and label names the expressions query that no fedmq scrape has."""
    series = exported_series()
    unknown = set()
    for expression in expressions:
        for name in _METRIC.findall(expression):
            if name not in series and name not in SCRAPE_SERIES:
                unknown.add(name)
        for name, matchers in _SELECTOR.findall(expression):
            allowed = series.get(name, set()) | TARGET_LABELS
            unknown.update(
                f"{name}{{{label}}}" for label in _LABEL.findall(matchers) if label not in allowed
            )
    return unknown


def test_the_dashboard_queries_only_metrics_and_labels_fedmq_exports() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    assert unknown_names(expressions) == set()


def test_the_dashboard_shows_throughput_durations_in_flight_reconnects_and_state() -> None:
    queried = {name for expr in dashboard_expressions() for name in _METRIC.findall(expr)}
    assert {
        "fedmq_messages_received_total",
        "fedmq_messages_acked_total",
        "fedmq_messages_failed_total",
        "fedmq_messages_retried_total",
        "fedmq_messages_parked_total",
        "fedmq_callback_duration_seconds_bucket",
        "fedmq_messages_in_flight",
        "fedmq_reconnects_total",
        "fedmq_connection_state",
    } <= queried


def test_every_dashboard_panel_is_described_in_the_docs() -> None:
    docs = DOCS.read_text()
    panels = json.loads(DASHBOARD.read_text())["panels"]
    missing = [panel["title"] for panel in panels if f"**{panel['title']}**" not in docs]
    assert missing == []
    assert all(panel["description"] for panel in panels)


def test_dashboard_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = [
        (x, y)
        for panel in panels
        for x in range(panel["gridPos"]["x"], panel["gridPos"]["x"] + panel["gridPos"]["w"])
        for y in range(panel["gridPos"]["y"], panel["gridPos"]["y"] + panel["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells))
    assert max(x for x, _ in cells) < 24  # Grafana's grid is 24 columns wide


def test_the_alert_rules_query_only_metrics_and_labels_fedmq_exports() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "FedmqConsumerDown",
        "FedmqConsumerNotReady",
        "FedmqParkedMessagesGrowing",
        "FedmqHighErrorRate",
    }
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
        assert rule["annotations"]["summary"]
    assert unknown_names([rule["expr"] for rule in rules]) == set()


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing: `make deps` installs it (prometheus)"
    checked = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
