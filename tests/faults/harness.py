"""What every fault scenario does: publish with confirms, run a recording consumer, tally.

The test's own publishing and inspecting go through pika directly, so what a
test observes on the broker does not depend on fedmq's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika

SCRIPT = Path(__file__).with_name("recording_consumer.py")

#: Short reconnect delays and a heartbeat of 2 s: each scenario recovers in seconds.
RECONNECT = {"initial_delay": 0.2, "max_delay": 2.0, "factor": 2.0, "jitter": 0.2}
HEARTBEAT = 2


def wait_until(
    condition: Callable[[], Any],
    what: str,
    timeout: float,
    processes: Sequence[ConsumerProcess] = (),
    interval: float = 0.1,
) -> Any:
    """Poll ``condition`` until it is true; fail after ``timeout`` s or if a consumer exits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for process in processes:
            if process.exited:
                raise AssertionError(f"{process} exited before {what}:\n{process.diagnostics()}")
        if time.monotonic() > deadline:
            details = "".join(f"\n{process.diagnostics()}" for process in processes)
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{details}")
        time.sleep(interval)


def message_ids(count: int, prefix: str | None = None) -> list[str]:
    """``count`` message ids, in publishing order; the prefix is random unless given."""
    prefix = prefix or secrets.token_hex(3)
    return [f"{prefix}-{n:06d}" for n in range(count)]


def declare_queue(url: str, queue: str, arguments: dict[str, Any] | None = None) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_declare(queue, durable=True, arguments=arguments)
    finally:
        connection.close()


def publish_confirmed(
    url: str, queue: str, ids: Iterable[str], window: int = 500, timeout: float = 120
) -> None:
    """Publish one persistent message per id to ``queue`` and wait for every confirm.

    Up to ``window`` messages await their confirm at once: a confirm per
    round trip would make publishing, not the fault, the slow part.

    Raises:
        AssertionError: the broker nacked a message, the connection failed,
            or the confirms took longer than ``timeout`` seconds.

    """
    ids = list(ids)
    state: dict[str, Any] = {"next": 0, "sent": 0, "confirmed": 0, "error": None}
    unconfirmed: set[int] = set()

    def fail(text: str) -> None:
        _record_failure(state, connection, text)

    def send_more(channel: Any) -> None:
        while state["next"] < len(ids) and len(unconfirmed) < window:
            message_id = ids[state["next"]]
            state["next"] += 1
            channel.basic_publish(
                "",
                queue,
                json.dumps({"id": message_id}).encode(),
                pika.BasicProperties(
                    content_type="application/json", delivery_mode=2, message_id=message_id
                ),
            )
            state["sent"] += 1
            unconfirmed.add(state["sent"])

    def on_confirm(frame: Any) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            fail(f"the broker nacked delivery tag {method.delivery_tag}")
            return
        tags = _confirmed_tags(unconfirmed, method)
        unconfirmed.difference_update(tags)
        state["confirmed"] += len(tags)
        if state["confirmed"] == len(ids):
            connection.close()
        else:
            send_more(channel_box[0])

    channel_box: list[Any] = []

    def on_channel(channel: Any) -> None:
        channel_box.append(channel)

        def on_close(_channel: Any, reason: Any) -> None:
            if state["confirmed"] != len(ids):
                fail(f"the channel closed: {reason}")

        channel.add_on_close_callback(on_close)
        channel.confirm_delivery(on_confirm, callback=lambda _frame: send_more(channel))

    def on_open(connection: Any) -> None:
        if not ids:
            connection.close()
            return
        connection.channel(on_open_callback=on_channel)

    connection = pika.SelectConnection(
        pika.URLParameters(url),
        on_open_callback=on_open,
        on_open_error_callback=lambda _c, error: fail(f"could not connect: {error}"),
        on_close_callback=lambda _c, _reason: connection.ioloop.stop(),
    )
    connection.ioloop.call_later(timeout, lambda: fail(f"no confirms after {timeout:g} s"))
    connection.ioloop.start()
    error = _publish_error(state, len(ids))
    assert error is None, (
        f"publishing to {queue!r}: {error} ({state['confirmed']} of {len(ids)} confirmed)"
    )


def _record_failure(state: dict[str, Any], connection: Any, text: str) -> None:
    """Keep the first failure's text, and end the connection so the ioloop stops."""
    if state["error"] is None:
        state["error"] = text
    if connection.is_open:
        connection.close()


def _confirmed_tags(unconfirmed: set[int], method: Any) -> set[int]:
    """The delivery tags a basic.ack confirms: up to its tag if ``multiple``, else its own."""
    if method.multiple:
        return {tag for tag in unconfirmed if tag <= method.delivery_tag}
    return {method.delivery_tag}


def _publish_error(state: dict[str, Any], total: int) -> str | None:
    """Why publishing failed, or None when every message was confirmed."""
    if state["error"] is None and state["confirmed"] != total:
        return "the connection closed early"
    return state["error"]


def take_all(url: str, queue: str) -> list[Any]:
    """Remove every ready message from ``queue``; their (message_id, headers)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    taken = []
    try:
        channel = connection.channel()
        while True:
            method, properties, _body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties.message_id, properties.headers or {}))
    finally:
        connection.close()


def consumer_config(
    urls: Sequence[str],
    queue: str,
    arguments: dict[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The config keys of a recording consumer on ``queue`` (declared as the test declares it)."""
    config: dict[str, Any] = {
        "amqp_urls": list(urls),
        "queues": {queue: {"durable": True, "arguments": arguments or {}}},
        "qos": {"prefetch_count": 50},
        "heartbeat": HEARTBEAT,
        "connect_timeout": 5,
        "drain_timeout": 15,
        "reconnect": RECONNECT,
    }
    config.update(overrides)
    return config


class Records:
    """The ids a recording consumer wrote, read incrementally as the file grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.ids: list[str] = []

    def refresh(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return self.ids
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        self.ids.extend(line.decode() for line in lines)
        return self.ids

    def __len__(self) -> int:
        return len(self.refresh())

    def has_all(self, ids: Iterable[str]) -> bool:
        return set(ids) <= set(self.refresh())


class ConsumerProcess:
    """``recording_consumer.py`` as a subprocess; its output goes to files in ``directory``.

    Args:
        directory: where its config, event log and output go.
        name: distinguishes this process's files from another's.
        config: the config keys (see :func:`consumer_config`).
        record: the file of processed ids; several processes may append to it.
        options: extra command-line options (``--nack``, ``--slow``).

    """

    def __init__(
        self,
        directory: Path,
        name: str,
        config: dict[str, Any],
        record: Path,
        options: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.config_path = directory / f"{name}.json"
        self.config_path.write_text(json.dumps(config))
        self.events_path = directory / f"{name}.events"
        self.output_path = directory / f"{name}.out"
        self.record = record
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    str(self.config_path),
                    str(record),
                    str(self.events_path),
                    *options,
                ],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def __repr__(self) -> str:
        return f"<consumer {self.name} pid {self.process.pid}>"

    @property
    def exited(self) -> bool:
        return self.process.poll() is not None

    def events(self, kind: str) -> list[tuple[float, str]]:
        """(time, detail) of each event of ``kind`` so far."""
        try:
            lines = self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        found = []
        for line in lines:
            when, event, detail = line.split(" ", 2)
            if event == kind:
                found.append((float(when), detail))
        return found

    def consuming_since(self, after: float) -> float | None:
        """When it last started consuming, if that was after ``after`` (monotonic time)."""
        times = [when for when, state in self.events("state") if state == "consuming"]
        return times[-1] if times and times[-1] > after else None

    def first_processed_since(self, after: float) -> float | None:
        """When it finished the first message after it last started consuming, if it
        started to after ``after`` (monotonic time).
        """
        since = self.consuming_since(after)
        if since is None:
            return None
        times = [when for when, _id in self.events("processed") if when >= since]
        return times[0] if times else None

    def wait_consuming(self, after: float = 0.0, timeout: float = 60) -> float:
        """Wait until it consumes (again, after ``after``); when it started to."""
        return float(
            wait_until(
                lambda: self.consuming_since(after),
                f"{self} to consume (again)",
                timeout,
                processes=[self],
            )
        )

    def stop(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM, then wait for a graceful exit; its final counters.

        Raises:
            AssertionError: it did not exit in time, or exited with a non-zero status.

        """
        if not self.exited:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self} still ran {timeout:g} s after SIGTERM:\n{self.diagnostics()}"
            ) from None
        assert self.process.returncode == 0, (
            f"{self} exited {self.process.returncode}:\n{self.diagnostics()}"
        )
        exits = self.events("exit")
        assert exits, f"{self} exited without its counters:\n{self.diagnostics()}"
        return dict(json.loads(exits[-1][1]))

    def terminate(self, timeout: float) -> tuple[float, int]:
        """SIGTERM and wait for the exit, whatever its status: (seconds it took, status).

        Raises:
            AssertionError: it still ran ``timeout`` seconds after SIGTERM (it is killed).

        """
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"{self} still ran {timeout:g} s after SIGTERM:\n{self.diagnostics()}"
            ) from None
        return time.monotonic() - sent, status

    def kill(self) -> None:
        """SIGKILL, as the OOM killer would; reaped before returning."""
        if not self.exited:
            self.process.kill()
        self.process.wait(10)

    def output(self) -> list[str]:
        """What it wrote to stdout and stderr (its log), line by line."""
        try:
            return self.output_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def diagnostics(self, lines: int = 30) -> str:
        output = self.output()
        return f"--- {self} output (last {lines} lines) ---\n" + "\n".join(output[-lines:])


@dataclass(frozen=True)
class Tally:
    """What the consumer processed against what was published."""

    published: int
    processed: int
    lost: frozenset[str]
    duplicates: int
    unexpected: frozenset[str]

    @classmethod
    def of(cls, published: Iterable[str], processed: Iterable[str]) -> Tally:
        published_set = set(published)
        counts = Counter(processed)
        return cls(
            published=len(published_set),
            processed=len(counts),
            lost=frozenset(published_set - counts.keys()),
            duplicates=sum(counts.values()) - len(counts),
            unexpected=frozenset(counts.keys() - published_set),
        )

    def check(self) -> None:
        """Fail unless every published id was processed, and nothing else was."""
        assert not self.lost, (
            f"{len(self.lost)} of {self.published} published messages were never "
            f"processed, e.g. {sorted(self.lost)[:5]}"
        )
        assert not self.unexpected, f"processed ids never published: {sorted(self.unexpected)[:5]}"


@dataclass
class Row:
    """One line of the fault table."""

    scenario: str
    published: int
    processed: int
    lost: int
    duplicates: int
    recover_seconds: float | None
    seconds: float
    note: str = ""


class Scenario:
    """One fault scenario, start to finish; a test drives it step by step.

    Args:
        name: the scenario's line in the table.
        directory: where its consumers' files go.
        queue: the durable queue it publishes to and consumes from.
        count: how many messages it publishes.
        arguments: the queue's arguments (``x-queue-type`` and so on).
        report: takes the scenario's :class:`Row`.

    """

    def __init__(
        self,
        name: str,
        directory: Path,
        queue: str,
        count: int,
        arguments: dict[str, Any] | None,
        report: Callable[[Row], None],
    ) -> None:
        self.name = name
        self.directory = directory
        self.queue = queue
        self.arguments = arguments
        self.ids = message_ids(count)
        self.records = Records(directory / "processed")
        self.processes: list[ConsumerProcess] = []
        self.fault_at: float | None = None
        #: Each consumer's counters as it exited on SIGTERM, by name, after :meth:`finish`.
        self.exits: dict[str, dict[str, int]] = {}
        self._report = report
        self._began = time.monotonic()

    def publish(self, url: str, ids: Sequence[str] | None = None) -> None:
        """Declare the queue and publish (all the scenario's ids by default)."""
        declare_queue(url, self.queue, self.arguments)
        publish_confirmed(url, self.queue, self.ids if ids is None else ids)

    def start_consumer(
        self,
        urls: Sequence[str],
        name: str = "consumer",
        options: Sequence[str] = (),
        record: Path | None = None,
        **overrides: Any,
    ) -> ConsumerProcess:
        """Start a recording consumer and wait until it consumes."""
        config = consumer_config(urls, self.queue, self.arguments, **overrides)
        name = f"{name}-{len(self.processes) + 1}"
        process = ConsumerProcess(
            self.directory, name, config, record or self.records.path, options
        )
        self.processes.append(process)
        process.wait_consuming()
        return process

    def running(self) -> list[ConsumerProcess]:
        return [process for process in self.processes if not process.exited]

    def wait_for_progress(self, fraction: float = 0.3, timeout: float = 60) -> None:
        """Wait until that fraction of the messages is processed: the fault comes mid-stream."""
        target = int(len(self.ids) * fraction)
        wait_until(
            lambda: len(self.records) >= target,
            f"{target} messages processed",
            timeout,
            processes=self.running(),
            interval=0.02,
        )

    def fault(self) -> None:
        """Mark the moment the fault is injected (call just before injecting it).

        Raises:
            AssertionError: everything was processed already: the fault would not be mid-stream.

        """
        self.fault_at = time.monotonic()
        done = set(self.records.refresh())
        assert not done >= set(self.ids), "every message was processed before the fault"

    def wait_recovered(self, process: ConsumerProcess, timeout: float = 60) -> float:
        """Seconds from the fault until ``process`` consumed again."""
        assert self.fault_at is not None, "call fault() before injecting the fault"
        return process.wait_consuming(after=self.fault_at, timeout=timeout) - self.fault_at

    def wait_first_delivery(self, process: ConsumerProcess, timeout: float = 60) -> float:
        """Seconds from the fault until ``process`` finished its first message on a new
        connection: noticing the fault, reconnecting and consuming again, all of it.
        """
        assert self.fault_at is not None, "call fault() before injecting the fault"
        fault_at = self.fault_at
        done = wait_until(
            lambda: process.first_processed_since(fault_at),
            f"{process} to process a message after the fault",
            timeout,
            processes=[process],
            interval=0.05,
        )
        return float(done) - fault_at

    def wait_done(
        self,
        node: Any,
        expected: Iterable[str] | None = None,
        timeout: float = 120,
        records: Sequence[Records] = (),
    ) -> None:
        """Wait until every expected id is recorded and the queue is empty and unacked-free."""
        expected = set(self.ids if expected is None else expected)
        sources = list(records) or [self.records]
        wait_until(
            lambda: expected <= {i for source in sources for i in source.refresh()},
            f"all {len(expected)} messages processed",
            timeout,
            processes=self.running(),
            interval=0.2,
        )
        wait_until(
            lambda: node.queue_counts(self.queue) == (0, 0),
            f"queue {self.queue!r} drained and acked",
            30,
            processes=self.running(),
            interval=0.3,
        )

    def finish(
        self,
        recover_seconds: float | None,
        note: str = "",
        records: Sequence[Records] = (),
        accounted: Iterable[str] = (),
    ) -> Tally:
        """Stop every consumer with SIGTERM, tally, report the row, check nothing was lost.

        Args:
            recover_seconds: for the table.
            note: for the table.
            records: the record files to tally (the scenario's own by default).
            accounted: ids accounted for without being processed (dead-lettered).

        """
        self.exits = {process.name: process.stop() for process in self.running()}
        processed = [i for source in (records or [self.records]) for i in source.refresh()]
        accounted = set(accounted)
        tally = Tally.of(set(self.ids) - accounted, processed)
        self._report(
            Row(
                scenario=self.name,
                published=len(self.ids),
                processed=tally.processed,
                lost=len(tally.lost),
                duplicates=tally.duplicates,
                recover_seconds=recover_seconds,
                seconds=time.monotonic() - self._began,
                note=note,
            )
        )
        tally.check()
        return tally

    def close(self) -> None:
        """Kill whatever consumer is still running (a failed test's)."""
        for process in self.processes:
            with contextlib.suppress(Exception):
                process.kill()
