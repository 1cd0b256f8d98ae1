"""``consume()`` and ``publish()``: fedmq's entry points for code.

Both work from Twisted code (they return Deferreds), from a plain script
(they block), and from inside a callback (a sync callback's thread gets the
blocking form, an async callback an awaitable).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from fedmq._callback import load_callback
from fedmq._executors import current_consumer
from fedmq._health import suspended_refusal
from fedmq._intercept import intercepting_publishes
from fedmq.config import Config, load_config, parse_bindings, parse_queues
from fedmq.consumer import Consumer
from fedmq.events import EventHandler
from fedmq.exceptions import PublishConnectionLost
from fedmq.health import HealthMonitor
from fedmq.message import Message
from fedmq.publisher import Publisher

ConfigArg = Config | str | os.PathLike[str] | None


def _resolve_config(config: ConfigArg) -> Config:
    if isinstance(config, Config):
        return config
    return load_config(config)


def _with_topology(
    config: Config,
    bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    queues: Mapping[str, Mapping[str, Any]] | None,
) -> Config:
    changes: dict[str, Any] = {}
    if queues is not None:
        changes["queues"] = parse_queues(queues)
        if bindings is None and all(queue.name for queue in changes["queues"]):
            # The configuration's bindings of its server-named queue go with it.
            changes["bindings"] = tuple(item for item in config.bindings if item.queue)
    if bindings is not None:
        changes["bindings"] = parse_bindings(bindings)
    return config.replace(**changes) if changes else config


def consume(
    callback: Any = None,
    bindings: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    queues: Mapping[str, Mapping[str, Any]] | None = None,
    config: ConfigArg = None,
    *,
    reactor: Any = None,
    on_event: EventHandler | None = None,
    health: HealthMonitor | None = None,
) -> Any:
    """Consume messages with ``callback``.

    Args:
        callback: a function, callable object, class or ``async def``
            function taking one :class:`~fedmq.Message`, or a
            ``"module:object"`` path; the config's ``callback`` when None.
        bindings: fedora-messaging's shape: one ``{"exchange", "queue",
            "routing_keys"}`` mapping or a list of them; replaces the
            config's bindings.
        queues: ``{name: {"durable", "auto_delete", "exclusive",
            "arguments"}}``; replaces the config's queues.
        config: a config object or a path; by default ``$FEDMQ_CONFIG``,
            else ``/etc/fedmq/config.toml``, else defaults.
        reactor: the reactor to use. Passing one always gives the Twisted
            form, even before the reactor runs (``task.react``, a service's
            ``startService``).
        on_event: called on the reactor thread with each session event (a
            :class:`~fedmq.Event`: connected, disconnected, reconnecting,
            host unhealthy, ...).
        health: a :class:`~fedmq.HealthMonitor` saying whether the host is
            healthy; queues marked ``suspend_on_bad_host_health`` are
            suspended while it is not.

    Returns:
        Given a reactor, or called on the reactor thread while the global
        reactor runs: a Deferred that fires with a :class:`~fedmq.Consumer`
        handle once consuming. In a plain script: None, once the consumer has
        stopped normally (SIGINT, SIGTERM, or ``HaltConsumer`` with exit code
        0), after a graceful drain.

    Raises:
        ConfigurationError, CallbackError: before anything connects.
        HaltConsumer: (blocking form) the callback halted with a non-zero exit code.
        CallbackError: (blocking form) the callback raised an unexpected
            exception; ``__cause__`` is that exception.
        DeclarationError, AuthenticationFailed, ConnectionFailed: (blocking form)
            the broker refused or could not be reached.

    """
    resolved = _with_topology(_resolve_config(config), bindings, queues)
    # Resolve (import, instantiate) the callback before connecting: a bad
    # path is an error at once. Async callbacks run on the reactor's loop
    # when the asyncio reactor is installed (before importing fedmq), and on
    # a loop thread of fedmq's own otherwise.
    target, _is_async = load_callback(
        callback if callback is not None else resolved.callback,
        resolved.consumer_config,
        config=resolved,
    )
    if reactor is not None:
        # Twisted code that hands over its reactor (task.react, a service's
        # startService) gets a Deferred, whether or not the reactor runs yet.
        return _started(
            Consumer(resolved, target, reactor=reactor, on_event=on_event, health=health)
        )
    from twisted.internet import reactor as global_reactor
    from twisted.python.threadable import isInIOThread

    consumer = Consumer(resolved, target, reactor=global_reactor, on_event=on_event, health=health)
    if global_reactor.running and isInIOThread():
        return _started(consumer)
    if global_reactor.running:
        # A blocking publish() earlier in this script started the reactor in
        # a thread of its own: consume there, and wait here.
        _wait_in_caller_thread(consumer, global_reactor)
    else:
        _run_blocking(consumer, global_reactor)
    return None


def _started(consumer: Consumer) -> defer.Deferred[Consumer]:
    """Start the consumer; its caller, told by start() why it never got going, is told once.

    When start() fails, :attr:`Consumer.result` fails with the same reason;
    nobody here reads it then, so it is not reported as unhandled.
    """

    def told(failure: Failure) -> Failure:
        consumer.result.addErrback(lambda _: None)
        return failure

    return consumer.start().addErrback(told)


def _run_blocking(consumer: Consumer, reactor: Any) -> None:
    """Run the reactor until the consumer stops; re-raise why it stopped."""
    outcome: list[Failure | None] = []

    def started(_: Any) -> defer.Deferred[None]:
        # A graceful drain on SIGINT, SIGTERM or reactor.stop().
        reactor.addSystemEventTrigger("before", "shutdown", consumer.cancel)
        return consumer.result

    def finished(result: Any) -> None:
        outcome.append(result if isinstance(result, Failure) else None)
        # Already shutting down when a signal started the drain that ended here.
        with contextlib.suppress(ReactorNotRunning):
            reactor.stop()

    def go() -> None:
        _started(consumer).addCallback(started).addBoth(finished)

    reactor.callWhenRunning(go)
    # Twisted's handlers stop the reactor on SIGINT and SIGTERM, which runs
    # the shutdown trigger above: a graceful drain, then exit.
    reactor.run(installSignalHandlers=threading.current_thread() is threading.main_thread())
    if outcome and outcome[0] is not None:
        outcome[0].raiseException()


def _wait_in_caller_thread(consumer: Consumer, reactor: Any) -> None:
    done = threading.Event()
    outcome: list[Failure | None] = []

    def finished(result: Any) -> None:
        outcome.append(result if isinstance(result, Failure) else None)
        done.set()

    def go() -> None:
        _started(consumer).addCallback(lambda _: consumer.result).addBoth(finished)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(
                signum, lambda *_: reactor.callFromThread(consumer.cancel)
            )
    reactor.callFromThread(go)
    try:
        while not done.wait(0.2):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if outcome[0] is not None:
        outcome[0].raiseException()


# --- publishing ------------------------------------------------------------


class _SharedPublishers:
    """One :class:`~fedmq.Publisher` per distinct configuration (by value), closed at exit."""

    def __init__(self) -> None:
        self._entries: list[tuple[Config, Publisher]] = []
        self._lock = threading.Lock()
        self._registered = False

    def get(self, config: Config) -> Publisher:
        with self._lock:
            for known, publisher in self._entries:
                if known is config or known == config:
                    return publisher
            publisher = Publisher(config)
            self._entries.append((config, publisher))
            if not self._registered:
                atexit.register(self.close_all)
                self._registered = True
            return publisher

    def close_all(self, timeout: float = 5.0) -> None:
        """Flush and close every shared publisher, each waiting at most ``timeout`` seconds."""
        with self._lock:
            entries, self._entries = self._entries, []
        for _config, publisher in entries:
            with contextlib.suppress(Exception):
                publisher.close(timeout)


_shared = _SharedPublishers()
_default_config: list[Config] = []


# The consumer states in which a callback's delivery is still on a live connection.
_CONNECTED_STATES = ("consuming", "suspended", "blocked", "draining")


def _publisher_for(config: ConfigArg) -> Publisher:
    if config is None:
        consumer = current_consumer.get()
        if consumer is not None:
            if consumer.state not in _CONNECTED_STATES:
                # The message being handled goes back to its queue with its
                # connection: publishing for it now would repeat when it comes back.
                raise PublishConnectionLost(
                    f"The consumer's connection to the broker is closed ({consumer.state}); "
                    "nothing was published"
                )
            refused = suspended_refusal(consumer)
            if refused is not None:
                raise refused
            return consumer.publisher  # type: ignore[no-any-return]
        if not _default_config:
            _default_config.append(load_config())
        config = _default_config[0]
    return _shared.get(_resolve_config(config))


def publish(
    message: Message | Any,
    exchange: str | None = None,
    routing_key: str | None = None,
    *,
    config: ConfigArg = None,
    mandatory: bool = False,
    timeout: float = 30.0,
    reactor: Any = None,
) -> Any:
    """Publish ``message`` with publisher confirms.

    A :class:`~fedmq.Publisher` per distinct configuration (equal values
    share one, whether given as an object or a path) sends it, on a
    connection of its own, kept for the rest of the process and flushed
    and closed at exit.

    Args:
        message: a :class:`~fedmq.Message`, or a fedora-messaging message
            (sent as fedora-messaging sends it, validated first); its
            ``topic`` is the routing key by default.
        exchange: the exchange; the config's ``publish_exchange`` by default.
        routing_key: overrides the message's topic.
        config: a config object or path. Inside a callback, the default is
            the consumer's own publisher (a connection apart from the one it
            consumes on).
        mandatory: fail with :class:`~fedmq.PublishReturned` when no queue
            matches.
        timeout: seconds to wait for the broker's confirm.
        reactor: the reactor to use; passing one always gives a Deferred.

    Returns:
        Given a reactor, or on the reactor thread: a Deferred fired on the
        broker's ack. Inside an ``async def`` callback: an awaitable.
        Anywhere else (a sync callback's thread, a plain script): None,
        once confirmed.

    Raises:
        PublishFormatError: the message was refused before sending (see
            ``publish_format``); nothing was sent.
        PublishNacked, PublishReturned, PublishTimeout, PublishConnectionLost,
        PublishCanceled: the broker refused, could not route, or did not
            confirm in time; the connection was lost; the publisher closed.
        ConsumerSuspended: inside a callback of a suspended consumer, with
            ``fail_publish_when_suspended`` set; nothing was sent.
        PublishError: no reactor can run (a blocking ``consume()`` returned).

    """
    target = _publisher_for(config)
    if reactor is not None:
        return target.publish_deferred(
            message, exchange, routing_key, mandatory=mandatory, timeout=timeout
        )
    return target.publish(message, exchange, routing_key, mandatory=mandatory, timeout=timeout)


__all__ = ["consume", "intercepting_publishes", "publish"]
