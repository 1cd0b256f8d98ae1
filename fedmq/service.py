"""The consumer as a Twisted service: how a fedmq process runs, stops and exits.

:class:`ConsumerService` is what ``twistd -n fedmq`` and ``fedmq consume``
run. It starts a :class:`~fedmq.consumer.Consumer` when the service starts,
drains it gracefully when the service stops, and stops the reactor when the
consumer ends by itself, keeping the exit status that ending calls for (see
:mod:`fedmq.exit_codes`). A process that runs it can also hand it the
signals: the first SIGTERM or SIGINT drains, a second one stops at once;
SIGUSR1 pauses every queue and SIGUSR2 resumes them (see
:mod:`fedmq._control`, whose :class:`~fedmq._control.Controller` the
service's :attr:`~ConsumerService.controller` is).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from fedmq._control import Controller, Request
from fedmq._reactor_types import ReactorControl
from fedmq.config import Config
from fedmq.consumer import Consumer
from fedmq.exceptions import FedmqError
from fedmq.exit_codes import exit_code_for

log = logging.getLogger("fedmq.service")

#: The signals that stop a fedmq process: the first drains, a second forces.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

#: The signals that pause and resume every queue, and the command each one is.
CONTROL_SIGNALS = {signal.SIGUSR1: "pause", signal.SIGUSR2: "resume"}

#: Builds the service's consumer: ``consumer_factory(config, callback, reactor)``.
ConsumerFactory = Callable[[Config, Any, Any], Consumer]


def _consumer(config: Config, callback: Any, reactor: Any) -> Consumer:
    return Consumer(config, callback, reactor=reactor)


class ConsumerService(Service):
    """Runs one :class:`~fedmq.consumer.Consumer` for as long as the service runs.

    Starting the service builds :attr:`consumer` at once (so that services
    started after this one can read it) and starts it. Stopping the service
    drains the consumer: no new deliveries, callbacks in flight finish within
    ``drain_timeout``, unstarted deliveries go back to the queue. When the
    consumer ends by itself (``HaltConsumer``, a callback error, the broker
    refusing, giving up on connecting) the service logs why, in one line,
    and stops the reactor.

    Args:
        config: the consumer's configuration.
        callback: the callback, or a ``"module:object"`` path; the config's
            ``callback`` when None.
        reactor: the reactor to run on; the global one by default.
        handle_signals: once the reactor runs, take over SIGTERM and SIGINT
            (main thread only): the first stops the reactor, and with it this
            service (a graceful drain); a second, during the drain, stops the
            consumer at once (:meth:`~fedmq.consumer.Consumer.abort`). Take
            SIGUSR1 (pause every queue) and SIGUSR2 (resume them) too.
        exit_with_status: make the process exit with :attr:`exit_code` when
            it is not 0, after everything else has run at interpreter exit.
            For runners that exit 0 whatever happened, such as ``twistd``.
        consumer_factory: builds the consumer from ``(config, callback,
            reactor)``; :class:`~fedmq.consumer.Consumer` by default. A
            :class:`~fedmq.exceptions.FedmqError` it raises ends the service
            as a callback that cannot be loaded does. Tests hand in a double.

    Attributes:
        consumer: the consumer, from :meth:`startService` on; else None.
        exit_code: the exit status the consumer's ending calls for, once it
            has ended; None while it runs.
        controller: carries out pause, resume and status on :attr:`consumer`,
            for the control socket, the HTTP control endpoint and the signals.

    """

    name = "fedmq-consumer"

    def __init__(
        self,
        config: Config,
        callback: Any = None,
        reactor: ReactorControl | None = None,
        *,
        handle_signals: bool = False,
        exit_with_status: bool = False,
        consumer_factory: ConsumerFactory = _consumer,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            # The installed reactor provides these interfaces; mypy sees only the module.
            reactor = cast("ReactorControl", global_reactor)
        self.config = config
        self.callback = callback
        self.consumer: Consumer | None = None
        self.exit_code: int | None = None
        self._reactor = reactor
        self._handle_signals = handle_signals
        self._exit_with_status = exit_with_status
        self._stop_requested = False
        self._signals_received = 0
        self._ended: defer.Deferred[None] = defer.Deferred()
        self._consumer_factory = consumer_factory
        self.controller = Controller(self, reactor, config.connect_timeout)

    def startService(self) -> None:
        """Start consuming; exit with the consumer's status and handle signals if asked."""
        super().startService()
        if self._exit_with_status:
            atexit.register(self.exit_process)
        if self._handle_signals:
            self._reactor.callWhenRunning(self._install_signal_handlers)
        try:
            consumer = self.consumer = self._consumer_factory(
                self.config, self.callback, self._reactor
            )
        except FedmqError as error:
            # A callback that cannot be loaded: there is nothing to run.
            self._end(Failure(error))
            return
        # start() fails with the reason when the consumer never gets going
        # (and result with the same one, which _end then ignores); result
        # says why it ended otherwise.
        consumer.start().addErrback(self._start_failed)
        consumer.result.addBoth(self._end)

    def stopService(self) -> defer.Deferred[None]:
        """Drain the consumer; the Deferred fires once it has stopped."""
        super().stopService()
        self._stop_requested = True
        if self.consumer is None or self._ended.called:
            return defer.succeed(None)
        stopped: defer.Deferred[None] = defer.Deferred()

        def done(_: Any) -> None:
            if not stopped.called:
                stopped.callback(None)

        # A forced stop (abort) ends the consumer without ending the drain:
        # whichever comes first lets the reactor go on shutting down.
        self.consumer.cancel().addBoth(done)
        self._ended.addBoth(done)
        return stopped

    def _start_failed(self, failure: Failure) -> None:
        if self._stop_requested:
            return  # stopped while connecting: result says how the stop went
        self._end(failure)

    def _end(self, outcome: Any) -> None:
        if self._ended.called:
            return
        reason = outcome if isinstance(outcome, Failure) else None
        self.exit_code = code = exit_code_for(reason)
        if reason is None:
            log.info("fedmq stopped (exit status 0)")
        else:
            # One line: the reason says what went wrong, and the callback's
            # own traceback (for an unexpected exception) is logged already.
            log.error("fedmq stopped (exit status %d): %s", code, reason.value)
        self._ended.callback(None)
        if not self._stop_requested:
            self._reactor.callWhenRunning(self._stop_reactor)

    def _stop_reactor(self) -> None:
        if self._stop_requested:
            return
        with contextlib.suppress(ReactorNotRunning):  # something else is already stopping it
            self._reactor.stop()

    # --- signals ----------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (*STOP_SIGNALS, *CONTROL_SIGNALS):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of the main
        # thread: hand the work to the reactor, as Twisted's own handlers do.
        self._reactor.callFromThread(self.signalled, signum)

    def signalled(self, signum: int) -> None:
        """Act on a signal: a stop signal drains on the first, stops at once on the next.

        SIGUSR1 pauses every queue, SIGUSR2 resumes them.

        Args:
            signum: the signal's number.

        """
        name = signal.Signals(signum).name
        command = CONTROL_SIGNALS.get(signal.Signals(signum))
        if command is not None:
            self.controller(Request(command), name).addCallback(self._signal_done, name)
            return
        self._signals_received += 1
        if self._signals_received == 1:
            log.info("Received %s: draining (send it again to stop at once)", name)
            with contextlib.suppress(ReactorNotRunning):
                self._reactor.stop()
        elif self.consumer is not None and not self._ended.called:
            log.warning(
                "Received %s again: stopping without waiting for callbacks in flight "
                "(the broker requeues their messages)",
                name,
            )
            self.consumer.abort()

    @staticmethod
    def _signal_done(reply: Any, name: str) -> None:
        if not reply.ok:
            log.warning("Received %s, and could not act on it: %s", name, reply.body["error"])

    # --- the process's exit status ----------------------------------------------

    def exit_process(self) -> None:
        """Exit the process with :attr:`exit_code` when it is not 0 (``exit_with_status``).

        Registered with :mod:`atexit` when the service starts.
        """
        code = self.exit_code
        if not code:
            return
        # Runs at interpreter exit, after the runner has cleaned up (twistd
        # removes its pid file and logs its last line first). os._exit skips
        # the exit handlers registered before this one, so flush logs here.
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


__all__ = ["CONTROL_SIGNALS", "STOP_SIGNALS", "ConsumerService"]
