"""How a consumer begins and ends: setup, then connecting; the drain, closes, teardown, result.

:class:`Lifetime` runs ``setup()`` before the first connection, decides
once why the consumer ends (None: normally), drains
the session in charge (callbacks in flight finish within ``drain_timeout``),
closes the publisher, the channel and the connection (each within
``connect_timeout``), runs ``teardown()``, and fires the consumer's
``result``. Everything here runs on the reactor thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._deferreds import BoundedCloses, chain
from fedmq._error_window import ErrorCount, log_consumer_error, too_many_errors
from fedmq._executors import refused_to_callback
from fedmq._lifecycle import Hooks
from fedmq._reconnect import Reconnector
from fedmq.config import Config
from fedmq.exceptions import ConnectionFailed, HaltConsumer, StopForced, WouldDeadlock
from fedmq.message import Message

if TYPE_CHECKING:
    from fedmq._consumer_parts import PublisherSlot

log = logging.getLogger("fedmq")


class Lifetime:
    """The start and the end of one consumer: setup, why it ends, the drain and closes, ``result``.

    Args:
        machine: the consumer's reconnect machine.
        hooks: its ``setup()``/``teardown()`` hooks.
        clock: what the timeouts run on.
        config: its ``drain_timeout`` (how long callbacks in flight may take
            to finish) and ``connect_timeout`` (how long each close may take).
        publisher: where the consumer's publisher is, if it opened one.
        on_error: told of each consumer error (the exception and the
            message, if decoded) before it is counted against ``max_errors``.

    """

    def __init__(
        self,
        machine: Reconnector,
        hooks: Hooks,
        clock: Any,
        config: Config,
        publisher: PublisherSlot,
        on_error: Callable[[BaseException, Message | None], object] | None = None,
    ) -> None:
        self._machine = machine
        self._hooks = hooks
        self._clock = clock
        self._drain_timeout = config.drain_timeout
        self._close_timeout = config.connect_timeout
        self._publisher = publisher
        self._on_error = on_error
        #: Fires with None on a normal end, fails with the reason otherwise.
        self.result: defer.Deferred[None] = defer.Deferred()
        # Why the consumer ends (None: normally), and the drain in progress.
        self._outcome: Failure | None = None
        self._ending: defer.Deferred[None] | None = None

    @property
    def event_loop(self) -> Callable[[], Any]:
        """Returns the event loop an async callback runs on."""
        return self._hooks.event_loop

    def start(self) -> None:
        """Run ``setup()``, then connect (unless a stop came first)."""
        self._hooks.set_up().addCallbacks(self._set_up, self._setup_failed)

    def _set_up(self, _: None) -> None:
        if not self._machine.stopping:
            self._machine.connect()
        elif self._machine.state == "stopped" and self._hooks.has_setup:
            # Stopped while setup() ran: nothing else will call teardown().
            defer.ensureDeferred(self._hooks.tear_down())

    def _setup_failed(self, failure: Failure) -> None:
        if not self._machine.stopping:
            self.give_up(failure)

    def give_up(self, failure: Failure) -> None:
        """No reconnect can help: end with ``failure``."""
        if self._machine.started.called:
            # Before that, start()'s caller is told; logging it too says it twice.
            log.error("%s", failure.value)
        self._outcome = failure
        self._machine.stop("stopped")
        self._machine.fail_start(failure)
        defer.ensureDeferred(self._hooks.tear_down()).addBoth(lambda _: self.finish())

    def request(
        self, *, from_callback: bool, on_reactor_thread: bool, reactor: Any
    ) -> defer.Deferred[None]:
        """A graceful stop asked for by a caller in any thread (see ``Consumer.cancel``)."""
        if from_callback:
            reactor.callFromThread(self.stop, None)
            refused: defer.Deferred[None] = defer.fail(
                WouldDeadlock("A callback cannot wait for its own consumer's drain")
            )
            # A callback that ignores it is not told of an unhandled error: its
            # worker handles it once the callback ended, in the callback's thread.
            refused_to_callback(refused)
            return refused
        if on_reactor_thread:
            return self.stop(None)
        stopped: defer.Deferred[None] = defer.Deferred()
        reactor.callFromThread(lambda: self.stop(None).chainDeferred(stopped))
        return stopped

    def abort(self) -> None:
        """Stop now, without waiting for callbacks in flight."""
        if self._outcome is None:
            self._outcome = Failure(StopForced("Stopped without waiting for callbacks in flight"))
        session = self._machine.stop("stopped")
        if session is not None:
            session.abort()
        self.finish()

    def halted(self, halt: HaltConsumer) -> None:
        """The callback raised ``halt``: stop, failing unless its exit code is 0."""
        log.info("The callback halted the consumer: %s", halt)
        self.stop(None if halt.exit_code == 0 else Failure(halt))

    def failed(
        self, exc: BaseException, message: Message | None, duration: float, errors: ErrorCount
    ) -> None:
        """A consumer error: log it; stop when the error window decided it was one too many."""
        log_consumer_error(exc, message, duration, errors)
        if self._on_error is not None:
            self._on_error(exc, message)
        if errors.stops and not self._machine.stopping:
            self.stop(Failure(too_many_errors(exc, message, errors)))

    def stop(self, outcome: Failure | None) -> defer.Deferred[None]:
        """Drain and close, ending with ``outcome`` unless a stop is already under way."""
        if not self._machine.stopping:
            self._outcome = outcome
            self._ending = defer.ensureDeferred(self._drain_and_close())
        ending = self._ending if self._ending is not None else defer.succeed(None)
        return chain(ending).addBoth(lambda _: None)

    async def _drain_and_close(self) -> None:
        session = self._machine.stop("draining")
        self._machine.fail_start(
            self._outcome or Failure(ConnectionFailed("Cancelled before consuming"))
        )
        try:
            forced = session is not None and await session.drain(self._drain_timeout)
            if forced and self._outcome is None:
                self._outcome = Failure(
                    StopForced(
                        f"Messages still unsettled after drain_timeout ({self._drain_timeout:g} s)"
                    )
                )
            # Each close is bounded: one the broker never answers must not hang the stop.
            connection = session.connection if session is not None else None
            closes = BoundedCloses(connection, self._close_timeout, self._clock)
            publisher = self._publisher.publisher
            if publisher is not None:
                # Confirms still due after connect_timeout end CANCELED.
                await closes.publisher(publisher)
            if session is not None:
                await session.close(closes)
            if self._outcome is not None and isinstance(self._outcome.value, StopForced):
                if self._hooks.tears_down:
                    log.error("teardown() not called: callbacks are still running")
            else:
                await self._hooks.tear_down()
        finally:
            self.finish()

    def finish(self) -> None:
        """The consumer has stopped: fire :attr:`result`."""
        self._machine.stop("stopped")
        self._hooks.stop_loop()
        if self.result.called:
            return
        if self._outcome is None:
            self.result.callback(None)
        else:
            self.result.errback(self._outcome)
