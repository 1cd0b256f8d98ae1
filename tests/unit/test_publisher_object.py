"""fedmq.Publisher on a Clock with a fake connection: bound, flush, close, reconnects."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer, task

import fedmq
from fedmq.acks import Ack, AckStatus
from fedmq.config import config_from_mapping


class FakeChannel:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, bytes, Any, bool]] = []
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.on_confirm: Any = None
        self.on_return: Any = None

    def track_confirms(self, on_confirm: Any, on_return: Any) -> defer.Deferred[Any]:
        self.on_confirm, self.on_return = on_confirm, on_return
        return defer.succeed(None)

    def send(self, exchange: str, key: str, body: bytes, properties: Any, mandatory: bool) -> None:
        self.sent.append((exchange, key, body, properties, mandatory))

    def ack_all(self) -> None:
        self.on_confirm(True, len(self.sent), True)


class FakeConnection:
    def __init__(self) -> None:
        self.channel_made = FakeChannel()
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.is_open = True
        self.closed_by_us = False
        self.aborted = False

    def channel(self) -> defer.Deferred[FakeChannel]:
        return defer.succeed(self.channel_made)

    def close(self) -> defer.Deferred[Any]:
        self.closed_by_us = True
        self.is_open = False
        return defer.succeed(None)

    def abort(self) -> None:
        self.aborted = True
        self.is_open = False


class FakeBroker:
    """Hands out FakeConnections, or fails while ``down``."""

    def __init__(self) -> None:
        self.down = False
        # While True, a connection opens only once ``opening`` fires.
        self.slow = False
        self.opening: defer.Deferred[None] = defer.Deferred()
        self.connections: list[FakeConnection] = []
        self.attempts: list[float] = []

    def __call__(self, config: Any, reactor: Any, url: str) -> defer.Deferred[Any]:
        self.attempts.append(reactor.seconds())
        if self.down:
            return defer.fail(fedmq.ConnectionFailed("connection refused"))
        connection = FakeConnection()
        self.connections.append(connection)
        if self.slow:
            return self.opening.addCallback(lambda _: connection)
        return defer.succeed(connection)

    @property
    def channel(self) -> FakeChannel:
        return self.connections[-1].channel_made


def make(**settings: Any) -> tuple[fedmq.Publisher, FakeBroker, task.Clock]:
    clock = task.Clock()
    broker = FakeBroker()
    config = config_from_mapping({"reconnect": {"initial_delay": 2, "jitter": 0}, **settings})
    return fedmq.Publisher(config, reactor=clock, connect=broker), broker, clock


def message(n: int) -> fedmq.Message:
    return fedmq.Message({"n": n}, topic="t", message_id=f"m{n}")


def test_post_on_the_reactor_sends_up_to_the_bound_and_holds_the_rest_back():
    """With max_unconfirmed=2, a third post is not sent until a confirm frees room."""
    publisher, broker, _clock = make(publish_max_unconfirmed=2)
    acks: list[Ack] = []
    assert publisher.post(message(1), on_ack=acks.append) is None
    assert publisher.post(message(2), on_ack=acks.append) is None
    room = publisher.post(message(3), on_ack=acks.append)
    assert isinstance(room, defer.Deferred)
    assert not room.called
    assert len(broker.channel.sent) == 2
    broker.channel.on_confirm(True, 1, False)
    assert room.called
    assert len(broker.channel.sent) == 3
    broker.channel.ack_all()
    assert [ack.status for ack in acks] == [AckStatus.SUCCESS] * 3


def test_the_byte_bound_holds_back_a_post_that_would_pass_it():
    """publish_max_unconfirmed_bytes counts body bytes: a second large body waits."""
    publisher, broker, _clock = make(publish_max_unconfirmed_bytes=100)
    publisher.post(fedmq.Message(b"x" * 80, topic="t"), on_ack=lambda ack: None)
    publisher.post(fedmq.Message(b"y" * 80, topic="t"), on_ack=lambda ack: None)
    assert len(broker.channel.sent) == 1


def test_post_without_on_ack_gives_a_deferred_of_the_ack():
    """On the reactor, post() returns a Deferred that fires with the message's Ack."""
    publisher, broker, _clock = make()
    acked = publisher.post(message(1))
    broker.channel.ack_all()
    ack = acked.result
    assert ack == Ack("m1", AckStatus.SUCCESS, None)


def test_flush_fires_once_every_posted_message_has_a_status():
    """flush() waits for the last confirm, and fails with PublishTimeout when none comes."""
    publisher, broker, clock = make()
    for n in range(3):
        publisher.post(message(n), on_ack=lambda ack: None)
    flushed = publisher.flush(10)
    assert not flushed.called
    broker.channel.ack_all()
    assert flushed.called
    publisher.post(message(9), on_ack=lambda ack: None)
    late = publisher.flush(5)
    clock.advance(5)
    failure = late.result
    late.addErrback(lambda _: None)
    assert isinstance(failure.value, fedmq.PublishTimeout)


def test_flushes_that_time_out_are_not_kept_while_messages_keep_coming():
    """A flush(1) every second under steady traffic: each times out and is let go."""
    publisher, broker, clock = make()
    for n in range(100):
        publisher.post(message(n), on_ack=lambda ack: None)
        late = publisher.flush(1)
        clock.advance(1)
        late.addErrback(lambda _: None)
    waiting = publisher._intake._flushers  # noqa: SLF001 - no public view of waiting flushes
    assert waiting == []
    broker.channel.ack_all()


def test_close_waits_its_timeout_then_cancels_what_is_unconfirmed():
    """close(timeout) fails the unconfirmed message with CANCELED and closes the connection."""
    publisher, broker, clock = make()
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append)
    closed = publisher.close(3)
    clock.advance(3)
    assert closed.called
    assert [ack.status for ack in acks] == [AckStatus.CANCELED]
    assert isinstance(acks[0].error, fedmq.PublishCanceled)
    # A broker that confirmed nothing in time is not reading: no close it would not answer.
    assert broker.connections[0].aborted
    assert not broker.connections[0].closed_by_us
    publisher.post(message(2), on_ack=acks.append)
    assert acks[-1].status is AckStatus.CANCELED


def test_close_with_everything_confirmed_closes_the_connection_gracefully():
    publisher, broker, clock = make()
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append)
    broker.channel.ack_all()
    closed = publisher.close(3)
    clock.advance(0)
    assert closed.called
    assert [ack.status for ack in acks] == [AckStatus.SUCCESS]
    assert broker.connections[0].closed_by_us
    assert not broker.connections[0].aborted


def test_a_post_with_no_broker_gets_not_connected_and_the_next_attempt_waits_the_backoff():
    """A failed connection gives NOT_CONNECTED at once; the next post connects after the delay."""
    publisher, broker, clock = make()
    broker.down = True
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append)
    assert [ack.status for ack in acks] == [AckStatus.NOT_CONNECTED]
    assert isinstance(acks[0].error, fedmq.PublishConnectionLost)
    broker.down = False
    publisher.post(message(2), on_ack=acks.append)
    assert broker.attempts == [0.0]
    clock.advance(2)
    assert broker.attempts == [0.0, 2.0]
    broker.channel.ack_all()
    assert acks[-1] == Ack("m2", AckStatus.SUCCESS, None)


def test_a_lost_connection_fails_the_unconfirmed_and_the_next_post_reconnects():
    """Messages waiting for a confirm when the connection drops get NOT_CONNECTED."""
    publisher, broker, _clock = make()
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append)
    broker.connections[0].is_open = False
    broker.connections[0].closed.callback(fedmq.ConnectionFailed("connection lost"))
    assert [ack.status for ack in acks] == [AckStatus.NOT_CONNECTED]
    publisher.post(message(2), on_ack=acks.append)
    assert len(broker.connections) == 2
    broker.channel.ack_all()
    assert acks[-1].status is AckStatus.SUCCESS


def test_publish_fails_with_the_error_of_its_status():
    """publish() on the reactor fails with PublishNacked when the broker nacks."""
    publisher, broker, _clock = make()
    published = publisher.publish(message(1))
    broker.channel.on_confirm(False, 1, False)
    failure = published.result
    published.addErrback(lambda _: None)
    assert isinstance(failure.value, fedmq.PublishNacked)


def test_post_goes_through_the_interception_seam():
    """Inside intercepting_publishes, post() sends nothing and reports SUCCESS."""
    publisher, broker, _clock = make()
    seen: list[Any] = []
    acks: list[Ack] = []
    with fedmq.api.intercepting_publishes(seen.append):
        publisher.post(message(1), on_ack=acks.append)
    assert [m.id for m in seen] == ["m1"]
    assert acks == [Ack("m1", AckStatus.SUCCESS)]
    assert broker.connections == []


def test_a_publisher_of_a_config_path_reads_that_file(tmp_path: Any):
    """Publisher("path") loads the file; the config's publish_exchange is the default exchange."""
    path = tmp_path / "config.toml"
    path.write_text('publish_exchange = "events"\n')
    publisher = fedmq.Publisher(str(path), reactor=task.Clock())
    assert publisher.config.publish_exchange == "events"


@pytest.mark.parametrize("key", ["publish_max_unconfirmed", "publish_max_unconfirmed_bytes"])
def test_a_bound_below_one_is_a_configuration_error(key: str):
    """A zero bound is refused, naming the key."""
    with pytest.raises(fedmq.ConfigurationError, match=key):
        config_from_mapping({key: 0})


def test_losing_an_idle_publishing_connection_is_not_a_warning(caplog: pytest.LogCaptureFixture):
    """Nothing was waiting on it: logged at INFO; with a message waiting: a WARNING."""
    publisher, broker, _clock = make()
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append)
    broker.channel.ack_all()
    caplog.set_level("INFO", logger="fedmq")
    broker.connections[0].is_open = False
    broker.connections[0].closed.callback(fedmq.ConnectionFailed("connection lost"))
    [idle] = [r for r in caplog.records if "connection to publish on was lost" in r.getMessage()]
    assert idle.levelname == "INFO"
    caplog.clear()
    publisher.post(message(2), on_ack=acks.append)
    broker.connections[1].is_open = False
    broker.connections[1].closed.callback(fedmq.ConnectionFailed("connection lost"))
    [busy] = [r for r in caplog.records if "connection to publish on was lost" in r.getMessage()]
    assert busy.levelname == "WARNING"
    assert acks[-1].status is AckStatus.NOT_CONNECTED


# An interpreter of its own: OpenTelemetry lets a process set its providers once.
SDK_LATE = """
import json
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fedmq
from fedmq.config import config_from_mapping
from fedmq.testing import InMemoryBroker

broker = InMemoryBroker()
broker.declare_queue("q")
config = config_from_mapping({"amqp_url": "amqp://in-memory/"})
publisher = fedmq.Publisher(config, reactor=broker.clock, connect=broker.connect)
for n in range(3):
    publisher.post(fedmq.Message({"n": n}), "", "q")
spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)
publisher.post(fedmq.Message({"n": 3}), "", "q")
broker.clock.advance(0)
print(json.dumps({
    "traced": ["traceparent" in (m.headers or {}) for m in broker.ready("q")],
    "spans": [span.name for span in spans.get_finished_spans()],
}))
"""


def test_an_sdk_configured_after_untraced_publishes_traces_the_very_next_one():
    """Three posts without an SDK carry no trace context; the post right after a tracer
    provider is set does, and its send span ends with its confirm.
    """
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", SDK_LATE], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result == {"traced": [False, False, False, True], "spans": ["send amq.default"]}


def test_a_message_with_a_shorter_timeout_than_one_waiting_times_out_on_its_own_time():
    """publish(timeout=30) unconfirmed, then post(timeout=1): the second gets TIMEOUT after
    1 s, not when the first's 30 s run out.
    """
    publisher, _broker, clock = make()
    acks: list[Ack] = []
    publisher.post(message(1), on_ack=acks.append, timeout=30)
    publisher.post(message(2), on_ack=acks.append, timeout=1)
    clock.advance(1.1)
    assert [(ack.message_id, ack.status) for ack in acks] == [("m2", AckStatus.TIMEOUT)]
    clock.advance(29)
    assert [ack.message_id for ack in acks] == ["m2", "m1"]
