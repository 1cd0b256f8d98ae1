"""From each round's results to medians, ratios, targets and the table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.contenders import (
    BACKLOG_CONSUMED,
    BY_NAME,
    FEDMQ_SCHEMA,
    FEDORA_MESSAGING,
    FEDORA_MESSAGING_CAP,
    FEDORA_MESSAGING_SCHEMA,
    PUBLISH_FEDMQ_BLOCKING,
    PUBLISH_FEDMQ_POST,
    PUBLISH_FEDMQ_TWISTED,
    PUBLISH_FEDORA_MESSAGING,
    PUBLISH_RAW,
    RAW,
)


@dataclass
class Summary:
    """One contender over all its rounds.

    Attributes:
        name: the contender.
        messages: messages consumed in each round.
        in_queue: messages in the queue at the start of each round.
        rounds: each round's result, as the child printed it (plus the
            parent's checks).

    """

    name: str
    messages: int
    in_queue: int
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed_rounds(self) -> list[dict[str, Any]]:
        return [result for result in self.rounds if result.get("ok")]

    @property
    def rate(self) -> float | None:
        """Median msg/s over the rounds that succeeded."""
        rates = [result["rate"] for result in self.passed_rounds]
        return statistics.median(rates) if rates else None

    @property
    def peak_rss_mb(self) -> float | None:
        """The highest peak RSS of any successful round: a peak is a peak."""
        peaks = [
            result["peak_rss_mb"]
            for result in self.passed_rounds
            if result.get("peak_rss_mb") is not None
        ]
        return max(peaks) if peaks else None

    @property
    def cpu_us_per_message(self) -> float | None:
        """Median CPU time of the consumer process per message, in microseconds."""
        values = [
            result["cpu_seconds"] * 1e6 / result["messages"]
            for result in self.passed_rounds
            if result.get("cpu_seconds") is not None
        ]
        return statistics.median(values) if values else None

    @property
    def errors(self) -> list[str]:
        return [
            f"round {result.get('round', '?')}: {result.get('error') or 'failed'}"
            for result in self.rounds
            if not result.get("ok")
        ]


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base


#: Contenders whose msg/s is not comparable with the others' (no ratios shown).
NOT_COMPARABLE = frozenset({"rss-backlog"})


#: A publishing contender is compared with the publishing counterpart of a base.
_PUBLISHING_BASE = {RAW: PUBLISH_RAW, FEDORA_MESSAGING: PUBLISH_FEDORA_MESSAGING}


def ratio_to(summaries: Mapping[str, Summary], name: str, base: str) -> float | None:
    """``name``'s median msg/s over ``base``'s, or None if either did not run.

    For a publishing contender, ``base`` is the publishing contender of the
    same client (consuming and publishing rates are not comparable).
    """
    if name in BY_NAME and BY_NAME[name].publishes:
        base = _PUBLISHING_BASE.get(base, base)
    if name not in summaries or base not in summaries or name in NOT_COMPARABLE:
        return None
    return _ratio(summaries[name].rate, summaries[base].rate)


# --- targets -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A goal fedmq's performance should meet.

    Attributes:
        description: the goal, as the report prints it.
        needs: contenders whose results it reads.
        measure: computes the measured value from the summaries.
        passes: whether a measured value meets the goal.
        unit: how to print the measured value.

    """

    description: str
    needs: tuple[str, ...]
    measure: Callable[[Mapping[str, Summary]], float | None]
    passes: Callable[[float], bool]
    unit: str


TARGETS: tuple[Target, ...] = (
    Target(
        "fedmq-sync >= 0.6x pika-twisted-raw",
        ("fedmq-sync", RAW),
        lambda s: ratio_to(s, "fedmq-sync", RAW),
        lambda value: value >= 0.6,
        "x",
    ),
    Target(
        "fedmq-sync > 10x fedora-messaging",
        ("fedmq-sync", FEDORA_MESSAGING),
        lambda s: ratio_to(s, "fedmq-sync", FEDORA_MESSAGING),
        lambda value: value > 10,
        "x",
    ),
    Target(
        "fedmq-schema >= 10x fedora-messaging-schema",
        (FEDMQ_SCHEMA, FEDORA_MESSAGING_SCHEMA),
        lambda s: ratio_to(s, FEDMQ_SCHEMA, FEDORA_MESSAGING_SCHEMA),
        lambda value: value >= 10,
        "x",
    ),
    Target(
        "fedmq-async >= 0.7x pika-twisted-raw",
        ("fedmq-async", RAW),
        lambda s: ratio_to(s, "fedmq-async", RAW),
        lambda value: value >= 0.7,
        "x",
    ),
    Target(
        "fedmq-c16-sleep1ms >= 8,000 msg/s",
        ("fedmq-c16-sleep1ms",),
        lambda s: s["fedmq-c16-sleep1ms"].rate,
        lambda value: value >= 8000,
        "msg/s",
    ),
    Target(
        f"{PUBLISH_FEDMQ_TWISTED} >= 0.9x {PUBLISH_RAW}",
        (PUBLISH_FEDMQ_TWISTED, PUBLISH_RAW),
        lambda s: ratio_to(s, PUBLISH_FEDMQ_TWISTED, PUBLISH_RAW),
        lambda value: value >= 0.9,
        "x",
    ),
    Target(
        f"{PUBLISH_FEDMQ_POST} >= 0.9x {PUBLISH_RAW}",
        (PUBLISH_FEDMQ_POST, PUBLISH_RAW),
        lambda s: ratio_to(s, PUBLISH_FEDMQ_POST, PUBLISH_RAW),
        lambda value: value >= 0.9,
        "x",
    ),
    Target(
        f"{PUBLISH_FEDMQ_BLOCKING} >= 3x {PUBLISH_FEDORA_MESSAGING}",
        (PUBLISH_FEDMQ_BLOCKING, PUBLISH_FEDORA_MESSAGING),
        lambda s: ratio_to(s, PUBLISH_FEDMQ_BLOCKING, PUBLISH_FEDORA_MESSAGING),
        lambda value: value >= 3,
        "x",
    ),
    Target(
        "fedmq peak RSS < 100 MB with a 100k-message backlog",
        ("rss-backlog",),
        lambda s: s["rss-backlog"].peak_rss_mb,
        lambda value: value < 100,
        "MB",
    ),
)


def evaluate(summaries: Mapping[str, Summary]) -> list[dict[str, Any]]:
    """Each target's measured value and status: ``pass``, ``FAIL`` or ``not run``.

    A target whose contenders ran but failed in every round is a ``FAIL``.
    """
    outcomes = []
    for target in TARGETS:
        if not all(name in summaries for name in target.needs):
            value, status = None, "not run"
        else:
            value = target.measure(summaries)
            status = "FAIL" if value is None or not target.passes(value) else "pass"
        outcomes.append(
            {"target": target.description, "measured": value, "unit": target.unit, "status": status}
        )
    return outcomes


# --- printing ------------------------------------------------------------------


def _number(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{suffix}"


def table(summaries: Mapping[str, Summary]) -> str:
    """The results as a Markdown table, one row per contender that ran."""
    header = (
        "| contender | messages | median msg/s | vs pika-twisted-raw | vs fedora-messaging "
        "| peak RSS MB | CPU µs/msg | rounds ok |"
    )
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    for name, summary in summaries.items():
        lines.append(
            f"| {name} | {summary.messages:,} | {_number(summary.rate)} "
            f"| {_number(ratio_to(summaries, name, RAW), 2, 'x')} "
            f"| {_number(ratio_to(summaries, name, FEDORA_MESSAGING), 1, 'x')} "
            f"| {_number(summary.peak_rss_mb, 1)} | {_number(summary.cpu_us_per_message)} "
            f"| {len(summary.passed_rounds)}/{len(summary.rounds)} |"
        )
    return "\n".join(lines)


def notes(summaries: Mapping[str, Summary]) -> list[str]:
    """What a reader of the table needs to know about this run's message counts."""
    found = []
    if FEDORA_MESSAGING in summaries:
        found.append(
            f"fedora-messaging consumes at most {FEDORA_MESSAGING_CAP:,} messages a round "
            f"(here {summaries[FEDORA_MESSAGING].messages:,}): at about 1,000 msg/s more "
            "would only take longer."
        )
    found.append(
        "peak RSS is the highest of the rounds (VmHWM of the consumer's process); "
        "CPU µs/msg is that process's own CPU time (all its threads) over the timed part, "
        "divided by the messages: the broker runs on the same two cores and is not in it."
    )
    if "fedmq-c16-sleep1ms" in summaries:
        found.append(
            "fedmq-c16-sleep1ms consumes a fifth of --messages when that is 10,000 or more "
            f"(here {summaries['fedmq-c16-sleep1ms'].messages:,})."
        )
    if any(BY_NAME[name].publishes for name in summaries):
        found.append(
            "publish-* contenders publish persistent JSON messages with confirms into an "
            "empty durable queue; their ratios are to publish-pika-twisted-raw and "
            "publish-fedora-messaging. The blocking ones publish at most "
            "5,000 a round; their CPU µs/msg includes connecting. "
            "publish-pika-blocking-raw, waiting for each confirm with no work of its own, "
            "is the ceiling of any blocking loop: the broker's round trip."
        )
    if "rss-backlog" in summaries:
        backlog = summaries["rss-backlog"]
        found.append(
            f"rss-backlog consumes {min(BACKLOG_CONSUMED, backlog.in_queue):,} of a "
            f"{backlog.in_queue:,}-message backlog; it is there for its peak RSS, and its "
            "msg/s, from a much longer queue, is not comparable with the others."
        )
    return found


def targets_text(outcomes: Sequence[Mapping[str, Any]]) -> str:
    """The targets, one line each, with the measured value and pass/FAIL."""
    lines = []
    for outcome in outcomes:
        value = outcome["measured"]
        if value is None:
            measured = "-"
        elif outcome["unit"] == "x":
            measured = f"{value:,.2f}x"
        elif outcome["unit"] == "MB":
            measured = f"{value:,.1f} MB"
        else:
            measured = f"{value:,.0f} {outcome['unit']}"
        lines.append(f"- [{outcome['status']}] {outcome['target']}: {measured}")
    return "\n".join(lines)


def summaries_json(summaries: Mapping[str, Summary]) -> dict[str, Any]:
    """Every contender's summary and rounds, ready for ``json.dump``."""
    return {
        name: {
            "summary": BY_NAME[name].summary,
            "messages": summary.messages,
            "messages_in_queue": summary.in_queue,
            "median_rate": summary.rate,
            "ratio_to_pika_twisted_raw": ratio_to(summaries, name, RAW),
            "ratio_to_fedora_messaging": ratio_to(summaries, name, FEDORA_MESSAGING),
            "peak_rss_mb": summary.peak_rss_mb,
            "cpu_us_per_message": summary.cpu_us_per_message,
            "rounds": summary.rounds,
        }
        for name, summary in summaries.items()
    }
