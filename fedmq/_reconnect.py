"""The reconnect machine: a consumer's state, and one session after another until it stops.

:class:`Reconnector` holds the one state variable of a consumer (see
:data:`State`), tells listeners of each change, and drives the sessions
(:mod:`fedmq._session`): it opens one, waits for it to be lost, opens the
next right away, and backs off between failed attempts through the URLs in
turn (:class:`fedmq._backoff.Attempts`), on the clock it is given. It gives
up on a fatal error or once the attempts are spent. How a consumer drains and
ends is the facade's (:mod:`fedmq.consumer`); it tells the machine with
:meth:`Reconnector.stop`. Each change of state, and each step of a
reconnect, is a session event (:mod:`fedmq.events`) handed to ``emit``.
While the host is unhealthy (:meth:`Reconnector.suspend`), what would be
"consuming" is "suspended".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal, get_args

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._backoff import Attempts
from fedmq._connection import Clock
from fedmq._session import Session
from fedmq.config import redact_url
from fedmq.events import (
    Blocked,
    Connected,
    Disconnected,
    Event,
    QueueReopened,
    Reconnected,
    Reconnecting,
    StateChanged,
    TopologyRestored,
    Unblocked,
)
from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    ConnectionFailed,
    ConsumerCancelled,
    DeclarationError,
)

log = logging.getLogger("fedmq")

#: A consumer's state: how far it got, and whether it is on its way out.
State = Literal[
    "connecting", "consuming", "suspended", "reconnecting", "blocked", "draining", "stopped"
]
STATES: tuple[State, ...] = get_args(State)

#: Errors that another connection attempt may mend; anything else ends the consumer.
_TRANSIENT = (ConnectionFailed, BrokerError)
#: ... except these, which no reconnect mends.
_FATAL = (AuthenticationFailed, DeclarationError)

#: Makes the session for a URL: ``new_session(url, on_blocked, on_unblocked)``.
SessionFactory = Callable[[str, Callable[[str], None], Callable[[], None]], Session]


class Reconnector:
    """Connects, reconnects on loss, backs off on failure; holds the state.

    Args:
        attempts: which URL is next and how long to wait (the retry policy).
        clock: what the waits between attempts run on.
        new_session: makes the session for a URL.
        on_opened: called with each session that opens, and whether it is a
            reconnect (an earlier session opened before it).
        on_give_up: called once with the reason when no reconnect can help
            (a fatal error, or the attempts are spent).
        emit: called on the reactor thread with each session event.
        reopened: the queues a session that opened after the first consumes
            again (each one's ``queue_reopened`` event); by default all of
            the session's queues.

    """

    def __init__(
        self,
        attempts: Attempts,
        clock: Clock,
        new_session: SessionFactory,
        on_opened: Callable[[Session, bool], None],
        on_give_up: Callable[[Failure], None],
        emit: Callable[[Event], None] = lambda _event: None,
        reopened: Callable[[Session], Sequence[str]] = lambda session: session.queues,
    ) -> None:
        self._attempts = attempts
        self._clock = clock
        self._new_session = new_session
        self._on_opened = on_opened
        self._on_give_up = on_give_up
        self.state: State = "connecting"
        self._emit = emit
        self._reopened = reopened
        #: Why the host is unhealthy while the consumer is suspended; None otherwise.
        self.suspension: str | None = None
        #: The session being opened, consuming or last lost; None after a failed attempt.
        self.session: Session | None = None
        #: Fires with None once the first session consumes; fails if none ever does.
        self.started: defer.Deferred[None] = defer.Deferred()
        self._retry: Any = None
        # The last session ended because the broker cancelled the consumer.
        self._broker_cancelled = False

    # --- state ----------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """The consumer is draining or has stopped: no more sessions."""
        return self.state in ("draining", "stopped")

    def _set_state(self, state: State) -> None:
        if state == self.state:
            return
        self.state = state
        self._emit(StateChanged(state))

    def _consuming(self) -> State:
        return "suspended" if self.suspension is not None else "consuming"

    def suspend(self, reason: str | None) -> None:
        """Be "suspended" instead of "consuming" while ``reason`` is not None, across reconnects."""
        self.suspension = reason
        if self.state in ("consuming", "suspended"):
            self._set_state(self._consuming())

    def stop(self, state: Literal["draining", "stopped"]) -> Session | None:
        """Open no more sessions; the session to drain, if any."""
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._set_state(state)
        return self.session

    def fail_start(self, failure: Failure) -> None:
        """Fail :attr:`started`, whose waiters have already passed the failure on."""
        if not self.started.called:
            self.started.errback(failure)
            self.started.addErrback(lambda _: None)

    # --- sessions ---------------------------------------------------------------

    def connect(self) -> None:
        """Open a session to the next URL (now: the waiting is done)."""
        self._retry = None
        if self.stopping:
            return
        self._set_state("reconnecting" if self._attempts.sessions else "connecting")
        self.session = session = self._new_session(
            self._attempts.url, self._blocked, self._unblocked
        )
        d = defer.ensureDeferred(session.open())
        d.addCallbacks(self._opened, self._failed, callbackArgs=(session,))

    def _opened(self, _: None, session: Session) -> None:
        self._broker_cancelled = False
        reconnected = self._attempts.sessions > 0
        self._on_opened(session, reconnected)
        self._attempts.opened()
        if self.stopping:
            session.close_opened_late()
            return
        session.lost.addCallback(self._lost, session)
        url = redact_url(session.url)
        if reconnected:
            self._emit(Reconnected(url))
            for queue in self._reopened(session):
                self._emit(QueueReopened(queue))
            self._emit(TopologyRestored(session.queues))
        else:
            self._emit(Connected(url))
        self._set_state(self._consuming())
        if not self.started.called:
            self.started.callback(None)

    def _failed(self, failure: Failure) -> None:
        self.session = None
        if self.stopping:
            return
        error = failure.value
        gone = isinstance(error, DeclarationError) and error.reply_code == 404
        if self._broker_cancelled and gone:
            # Cancelled, and the queue is gone for good: fedmq may not declare it.
            cancelled = ConsumerCancelled(
                f"The broker cancelled the consumer and it cannot consume again: {error}"
            )
            cancelled.__cause__ = error
            failure = Failure(cancelled)
        if isinstance(error, _FATAL) or not isinstance(error, _TRANSIENT):
            self._on_give_up(failure)
            return
        delay = self._attempts.failed()
        if delay is None:
            self._on_give_up(
                Failure(
                    ConnectionFailed(
                        f"Gave up after {self._attempts.failures} failed connection attempts; "
                        f"the last: {error}"
                    )
                )
            )
            return
        log.warning("%s; trying again in %.1f s", error, delay)
        self._emit(Reconnecting(self._attempts.failures + 1, delay))
        self._retry = self._clock.callLater(delay, self.connect)

    def _lost(self, reason: Exception, session: Session) -> None:
        """The session went away while consuming: reconnect once its callbacks finished.

        Callbacks still running finish first (so ``concurrency`` holds across
        the reconnect); their results are not settled: those delivery tags
        are dead and the broker redelivers the messages.
        """
        if self.stopping or self.state not in ("consuming", "suspended", "blocked"):
            return
        if session.cancelled_by_broker:
            self._broker_cancelled = True
        log.warning("%s; reconnecting", reason)
        self._emit(Disconnected(str(reason)))
        self._set_state("reconnecting")
        self._emit(Reconnecting(1, 0.0))
        session.abandon().addBoth(lambda _: self.connect())

    def _blocked(self, reason: str) -> None:
        log.warning("The broker blocked the connection: %s", reason or "no reason given")
        self._emit(Blocked(reason or "no reason given"))
        if self.state in ("consuming", "suspended"):
            self._set_state("blocked")

    def _unblocked(self) -> None:
        log.info("The broker unblocked the connection")
        self._emit(Unblocked())
        if self.state == "blocked":
            self._set_state(self._consuming())
