"""The routing-agreement table: one source of cases for the broker and the in-memory router.

Every topic case is a (binding pattern, routing key) pair and every headers
case a (binding arguments, message headers) pair, generated as the cross
product of the lists below, which are chosen for edge cases: ``#`` at the
start, the end, the middle and alone, several ``#``, ``*`` against empty
words, empty routing keys and patterns, consecutive and trailing dots,
wildcard characters inside words; ``x-match`` in all four modes, ``x-``
arguments, presence-only (void) arguments, and values of different AMQP types.

What RabbitMQ answered for each case is recorded in ``routing_verdicts.json``
beside this module. The integration suite
(``tests/integration/test_routing_agreement.py``) routes every case through a
real node and checks it answers the same; the unit suite
(``tests/unit/test_routing.py``) checks that :mod:`fedmq.testing.routing`
answers the same. Re-record with ``FEDMQ_RECORD_ROUTING=1`` on the
integration test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VERDICTS_PATH = Path(__file__).with_name("routing_verdicts.json")

TOPIC_PATTERNS: tuple[str, ...] = (
    "",
    "#",
    "*",
    "a",
    "a.#",
    "#.b",
    "a.#.b",
    "#.#",
    "#.#.#",
    "*.#",
    "#.*",
    "*.#.*",
    "#.*.#",
    "a.*",
    "*.b",
    "a.*.b",
    "*.*",
    "*.*.*",
    "a.b",
    "#.a.#",
    "a.#.#",
    "#.#.b",
    "a.*.#",
    "#.b.#",
    "a.b.#",
    "a.#.b.#",
    "a..b",
    "a.",
    ".b",
    ".",
    "*..*",
    "a.#.",
    "#.",
    ".#",
    "##",
    "a*",
)

TOPIC_KEYS: tuple[str, ...] = (
    "",
    "a",
    "b",
    "c",
    "a.b",
    "b.a",
    "a.c",
    "a.b.c",
    "a.c.b",
    "a.b.b",
    "a.a.b",
    "a..b",
    "a.",
    ".b",
    ".",
    "..",
    "a.b.",
    ".a.b",
    "a.x.y.b",
    "a.b.c.d",
    "#",
    "*",
    "a*",
    "##",
)

HEADERS_BINDINGS: tuple[dict[str, Any], ...] = (
    {"x-match": "all"},
    {"x-match": "any"},
    {"x-match": "all", "a": "1"},
    {"x-match": "any", "a": "1"},
    {"x-match": "all", "a": "1", "b": "2"},
    {"x-match": "any", "a": "1", "b": "2"},
    {"x-match": "all", "a": None},
    {"x-match": "any", "a": None, "b": "2"},
    {"x-match": "all", "a": 1},
    {"x-match": "all", "a": True},
    {"x-match": "all", "a": ""},
    {"a": "1"},
    {"a": "1", "b": "2"},
    {"x-match": "all", "x-a": "1"},
    {"x-match": "any", "x-a": "1"},
    {"x-match": "any", "a": "1", "x-b": "2"},
    {"x-match": "all-with-x"},
    {"x-match": "any-with-x"},
    {"x-match": "all-with-x", "x-a": "1"},
    {"x-match": "any-with-x", "x-a": "1"},
    {"x-match": "all-with-x", "x-a": "1", "b": "2"},
    {"x-match": "any-with-x", "x-a": "9", "b": "2"},
)

HEADERS_SETS: tuple[dict[str, Any] | None, ...] = (
    None,
    {},
    {"a": "1"},
    {"a": "2"},
    {"a": 1},
    {"a": True},
    {"a": ""},
    {"a": None},
    {"b": "2"},
    {"c": "1"},
    {"a": "1", "b": "2"},
    {"a": "1", "b": "3"},
    {"x-a": "1"},
    {"x-a": "1", "b": "2"},
    {"x-match": "any", "a": "1"},
)


def topic_cases() -> list[tuple[str, str]]:
    """Every (pattern, routing key) pair, in a fixed order."""
    return [(pattern, key) for pattern in TOPIC_PATTERNS for key in TOPIC_KEYS]


def headers_cases() -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Every (binding arguments, message headers) pair, in a fixed order."""
    return [(binding, headers) for binding in HEADERS_BINDINGS for headers in HEADERS_SETS]


def case_id(case: tuple[Any, Any]) -> str:
    """A readable, unique name for a case."""
    return json.dumps(case, sort_keys=True)


def recorded_verdicts() -> dict[str, dict[str, bool]]:
    """RabbitMQ's recorded answers: ``{"topic": {case_id: routed}, "headers": {...}}``."""
    loaded: dict[str, dict[str, bool]] = json.loads(VERDICTS_PATH.read_text())
    return loaded


def record_verdicts(topic: dict[str, bool], headers: dict[str, bool], version: str) -> None:
    """Write RabbitMQ's answers, with the version that gave them."""
    VERDICTS_PATH.write_text(
        json.dumps({"rabbitmq": version, "topic": topic, "headers": headers}, indent=0) + "\n"
    )
