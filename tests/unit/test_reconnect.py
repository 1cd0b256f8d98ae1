"""The reconnect machine: its states and its sessions, on a Clock with scripted sessions.

No sockets and no sleeps: each session is a stand-in whose opening, loss and
callbacks' end the test decides, and ``task.Clock`` stands in for time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.python.failure import Failure

from fedmq._backoff import Attempts
from fedmq._reconnect import Reconnector
from fedmq.config import config_from_mapping
from fedmq.events import Event, StateChanged
from fedmq.exceptions import (
    AuthenticationFailed,
    ConnectionFailed,
    ConsumerCancelled,
    DeclarationError,
)


class ScriptedSession:
    """A session whose open() succeeds or fails as the test says; ``lose`` ends it."""

    def __init__(
        self, url: str, outcome: Exception | defer.Deferred[None] | None, on_blocked: Any
    ) -> None:
        self.url = url
        self.outcome = outcome
        self.on_blocked = on_blocked
        self.lost: defer.Deferred[Exception] = defer.Deferred()
        self.cancelled_by_broker = False
        self.abandoned: defer.Deferred[None] | None = None
        self.closed_late = False
        self.queues = ("orders",)

    async def open(self) -> None:
        if isinstance(self.outcome, defer.Deferred):
            await self.outcome
        elif self.outcome is not None:
            raise self.outcome

    def lose(self, reason: Exception, *, by_cancel: bool = False) -> None:
        self.cancelled_by_broker = by_cancel
        self.lost.callback(reason)

    def abandon(self) -> defer.Deferred[None]:
        self.abandoned = defer.Deferred()
        return self.abandoned

    def close_opened_late(self) -> None:
        self.closed_late = True


class Harness:
    """A Reconnector over scripted sessions, recording what it reports."""

    def __init__(self, outcomes: list[Any] | None = None, **reconnect: Any) -> None:
        self.outcomes = list(outcomes or [])
        self.sessions: list[ScriptedSession] = []
        self.opened: list[tuple[ScriptedSession, bool]] = []
        self.gave_up: list[Failure] = []
        self.events: list[Event] = []
        self.clock = task.Clock()
        config = config_from_mapping(
            {
                "queues": {"orders": {}},
                "amqp_urls": ["amqp://a/", "amqp://b/"],
                "reconnect": {"initial_delay": 1, "factor": 2, "jitter": 0, **reconnect},
            }
        )
        self.machine = Reconnector(
            Attempts(config.broker_urls, config.reconnect),
            self.clock,
            self.new_session,
            lambda session, reconnected: self.opened.append((session, reconnected)),
            self.gave_up.append,
            self.events.append,
        )

    @property
    def states(self) -> list[str]:
        return [event.state for event in self.events if isinstance(event, StateChanged)]

    def new_session(self, url: str, on_blocked: Any, on_unblocked: Any) -> Any:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        session = ScriptedSession(url, outcome, (on_blocked, on_unblocked))
        self.sessions.append(session)
        return session


def refused() -> ConnectionFailed:
    return ConnectionFailed("Could not connect to the broker at a:5672: connection refused")


def test_a_session_that_opens_makes_the_consumer_consuming_and_fires_started():
    harness = Harness()
    started: list[Any] = []
    harness.machine.started.addCallback(started.append)
    harness.machine.connect()
    assert harness.machine.state == "consuming"
    assert started == [None]
    assert harness.opened == [(harness.sessions[0], False)]


def test_a_failed_attempt_waits_its_backoff_then_tries_the_next_url():
    harness = Harness([refused()])
    harness.machine.connect()
    assert [s.url for s in harness.sessions] == ["amqp://a/"]
    assert harness.machine.session is None
    harness.clock.advance(0.99)
    assert len(harness.sessions) == 1
    harness.clock.advance(0.01)
    assert [s.url for s in harness.sessions] == ["amqp://a/", "amqp://b/"]
    assert harness.machine.state == "consuming"


def test_a_lost_session_reconnects_only_once_its_callbacks_have_finished():
    harness = Harness()
    harness.machine.connect()
    first = harness.sessions[0]
    first.lose(ConnectionFailed("missed heartbeats"))
    assert harness.machine.state == "reconnecting"
    assert len(harness.sessions) == 1, "reconnected while callbacks were still running"
    assert first.abandoned is not None
    first.abandoned.callback(None)
    assert len(harness.sessions) == 2
    assert harness.states == ["consuming", "reconnecting", "consuming"]
    assert harness.opened[-1] == (harness.sessions[1], True)


def test_a_fatal_error_gives_up_at_once_without_another_attempt():
    harness = Harness([AuthenticationFailed("refused the credentials")])
    harness.machine.connect()
    harness.clock.advance(100)
    assert len(harness.sessions) == 1
    assert harness.gave_up[0].check(AuthenticationFailed)


def test_spent_attempts_give_up_with_connection_failed():
    harness = Harness([refused()] * 3, max_attempts=2)
    harness.machine.connect()
    harness.clock.advance(1)
    assert len(harness.sessions) == 2
    assert harness.gave_up[0].check(ConnectionFailed)
    assert "2 failed connection attempts" in str(harness.gave_up[0].value)


def test_a_queue_gone_after_a_broker_cancel_gives_up_with_consumer_cancelled():
    gone = DeclarationError("no queue 'orders'", reply_code=404)
    harness = Harness([None, gone])
    harness.machine.connect()
    first = harness.sessions[0]
    first.lose(ConnectionFailed("The broker cancelled the consumer"), by_cancel=True)
    assert first.abandoned is not None
    first.abandoned.callback(None)
    assert harness.gave_up[0].check(ConsumerCancelled)


def test_stopping_while_waiting_to_retry_makes_no_more_attempts():
    harness = Harness([refused()])
    harness.machine.connect()
    assert harness.machine.stop("draining") is None
    assert harness.clock.getDelayedCalls() == []
    harness.clock.advance(100)
    assert len(harness.sessions) == 1
    assert harness.machine.state == "draining"


def test_a_session_that_opens_after_the_stop_began_is_closed_not_consumed():
    opening: defer.Deferred[None] = defer.Deferred()
    harness = Harness([opening])
    harness.machine.connect()
    harness.machine.stop("draining")
    opening.callback(None)
    assert harness.sessions[0].closed_late
    assert harness.machine.state == "draining"
    assert not harness.machine.started.called


def test_a_loss_during_the_drain_does_not_reconnect():
    harness = Harness()
    harness.machine.connect()
    harness.machine.stop("draining")
    harness.sessions[0].lose(ConnectionFailed("lost"))
    assert harness.sessions[0].abandoned is None
    assert len(harness.sessions) == 1
    assert harness.machine.state == "draining"


def test_a_blocked_connection_shows_in_the_state_until_unblocked():
    harness = Harness()
    harness.machine.connect()
    on_blocked, on_unblocked = harness.sessions[0].on_blocked
    on_blocked("low on memory")
    assert harness.machine.state == "blocked"
    on_unblocked()
    assert harness.machine.state == "consuming"
