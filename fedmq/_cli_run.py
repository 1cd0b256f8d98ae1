"""Running a ``fedmq`` command: its configuration, its reactor, and its errors."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from fedmq._records import UsageError
from fedmq.config import Config, load_config
from fedmq.exceptions import FedmqError, PublishError
from fedmq.exit_codes import FORCED_STOP, OK, PUBLISH_FAILED, USAGE, exit_code_for
from fedmq.message import DecodeError


def status_for(error: BaseException) -> int:
    """The exit status of a command that failed with ``error``."""
    if isinstance(error, (UsageError, DecodeError)):
        return USAGE
    if isinstance(error, PublishError):
        return PUBLISH_FAILED
    return exit_code_for(error)


def report(error: BaseException) -> int:
    """Say what went wrong in one line on stderr; return the exit status for it."""
    sys.stderr.write(f"fedmq: {error}\n")
    sys.stderr.flush()
    return status_for(error)


def config_path(args: argparse.Namespace) -> str | None:
    """The file ``--config`` (or ``--conf``) names, before or after the command."""
    before, after = getattr(args, "global_config", None), getattr(args, "config", None)
    if before is not None and after is not None:
        raise UsageError("give --config (or --conf) once: before the command or after it")
    return after if after is not None else before


def load(args: argparse.Namespace) -> Config:
    """The configuration a command runs with (see :func:`config_path`)."""
    return load_config(config_path(args))


def quiet_logging() -> None:
    """Leave the account of a failure to the one line a one-shot command prints."""
    # pika's and Twisted's own account of the same failure would only repeat it.
    logging.basicConfig(level=logging.CRITICAL)


def _global_reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def run_in_reactor(work: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Run ``work(reactor)`` on the global reactor; its result is the exit status."""
    reactor = _global_reactor()
    outcome: list[Any] = []

    def go() -> None:
        d = defer.ensureDeferred(work(reactor))

        def finished(result: Any) -> None:
            outcome.append(result)
            with contextlib.suppress(ReactorNotRunning):  # a signal is stopping it already
                reactor.stop()

        d.addBoth(finished)

    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=threading.current_thread() is threading.main_thread())
    if not outcome:
        sys.stderr.write("fedmq: interrupted before finishing\n")
        return FORCED_STOP
    result = outcome[0]
    if isinstance(result, Failure):
        if isinstance(result.value, FedmqError):
            return report(result.value)
        result.raiseException()
    return int(result)


def run_services(top: Any, consumer_service: Any) -> int:
    """Run a service tree as twistd would, and return the consumer's exit status."""
    reactor = _global_reactor()
    # As twistd does: privileged start, start, then the reactor.
    top.privilegedStartService()
    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    reactor.run(installSignalHandlers=threading.current_thread() is threading.main_thread())
    code = consumer_service.exit_code
    return OK if code is None else int(code)
