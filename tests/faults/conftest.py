"""Fixtures of the fault-injection suite: private brokers, scenarios, and the table.

These tests stop, restart and cluster brokers, so none of them uses the
session's shared node: each module gets RabbitMQ nodes of its own, under
pytest's temporary directory, cleaned up when the module is done. Every
scenario adds one row to the table printed at the end of the run and
written to ``fault-table.md`` in pytest's base temporary directory.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmq.testing import RabbitNode
from tests.faults.harness import Row, Scenario
from tests.helpers import wait_for_port

_ROWS = pytest.StashKey[list[Row]]()
_TABLE_PATH = pytest.StashKey[Path]()

HEADER = (
    "| scenario | published | processed | lost | duplicates | seconds to recover "
    "| seconds | note |\n|---|--:|--:|--:|--:|--:|--:|---|\n"
)


def format_table(rows: list[Row]) -> str:
    """The rows as a Markdown table, as docs/reliability.md shows it, by scenario."""
    lines = [HEADER]
    for row in sorted(rows, key=lambda row: row.scenario):
        recover = "-" if row.recover_seconds is None else f"{row.recover_seconds:.2f}"
        lines.append(
            f"| {row.scenario} | {row.published:,} | {row.processed:,} | {row.lost} "
            f"| {row.duplicates} | {recover} | {row.seconds:.0f} | {row.note} |\n"
        )
    return "".join(lines)


@pytest.fixture(scope="session")
def fault_report(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[Row], None]:
    """Adds a row to the table; the file is rewritten at each row, so a crash keeps it."""
    rows = request.config.stash.setdefault(_ROWS, [])
    path = tmp_path_factory.getbasetemp() / "fault-table.md"
    request.config.stash[_TABLE_PATH] = path

    def add(row: Row) -> None:
        rows.append(row)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        path.write_text(f"Fault-injection run of {stamp}\n\n{format_table(rows)}")

    return add


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write(format_table(rows))
    terminalreporter.write_line(f"(also in {config.stash[_TABLE_PATH]})")


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    fault_report: Callable[[Row], None],
) -> Iterator[Callable[..., Scenario]]:
    """Makes this test's :class:`Scenario`; kills its consumers if the test fails."""
    made: list[Scenario] = []

    def make(name: str, count: int, arguments: dict[str, Any] | None = None) -> Scenario:
        queue = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
        queue = f"{queue}-{secrets.token_hex(3)}"
        made.append(Scenario(name, tmp_path, queue, count, arguments, fault_report))
        return made[-1]

    yield make
    for each in made:
        each.close()


# --- brokers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_node_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    with RabbitNode(tmp_path_factory.mktemp("fault-node"), name="fedmq-fault") as node:
        yield node


@pytest.fixture
def fault_node(fault_node_for_module: RabbitNode) -> RabbitNode:
    """The single node of this module, running (an earlier failed test may have stopped it)."""
    if not fault_node_for_module.running:
        fault_node_for_module.start()
    return fault_node_for_module


def form_cluster(nodes: list[RabbitNode]) -> None:
    """Start ``nodes`` and join the others to the first one's cluster.

    The first starts alone, since it also starts the epmd they share; the
    others boot side by side once epmd answers, then join one at a time.
    """
    first, *others = nodes
    with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
        booting = [pool.submit(first.start)]
        wait_for_port(first.epmd_port, 30)
        booting += [pool.submit(node.start) for node in others]
        for future in booting:
            future.result()
    for node in others:
        node.ctl("stop_app")
        node.ctl("join_cluster", first.nodename)
        node.ctl("start_app")
    status = json.loads(first.ctl("cluster_status", "--formatter", "json"))
    running = sorted(status["running_nodes"])
    assert running == sorted(node.nodename for node in nodes), status


@pytest.fixture(scope="module")
def cluster_for_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RabbitNode]]:
    base = tmp_path_factory.mktemp("fault-cluster")
    cookie = secrets.token_hex(16).upper()
    first = RabbitNode(base / "node-1", name="fedmq-fault-1", cookie=cookie)
    nodes = [first] + [
        RabbitNode(
            base / f"node-{n}", name=f"fedmq-fault-{n}", epmd_port=first.epmd_port, cookie=cookie
        )
        for n in (2, 3)
    ]
    try:
        form_cluster(nodes)
        yield nodes
    finally:
        # The first node last: it owns the epmd the others use.
        for node in reversed(nodes):
            node.cleanup()


@pytest.fixture
def cluster(cluster_for_module: list[RabbitNode]) -> list[RabbitNode]:
    """The three-node cluster of this module, every node running."""
    for node in cluster_for_module:
        if not node.running:
            node.start()
    return cluster_for_module
