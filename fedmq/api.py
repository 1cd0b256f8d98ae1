"""``consume()`` and ``publish()``: fedmq's entry points for code.

Both work from Twisted code (they return Deferreds), from a plain script
(they block), and from inside a callback (a sync callback's thread gets the
blocking form, an async callback an awaitable).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.error import ReactorNotRunning
from twisted.python.failure import Failure

from fedmq import _tracing
from fedmq._callback import load_callback
from fedmq._executors import current_consumer
from fedmq._publisher import Publisher
from fedmq.config import Config, load_config, parse_bindings, parse_queues
from fedmq.consumer import Consumer
from fedmq.message import Message

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
        return Consumer(resolved, target, reactor=reactor).start()
    from twisted.internet import reactor as global_reactor
    from twisted.python.threadable import isInIOThread

    consumer = Consumer(resolved, target, reactor=global_reactor)
    if global_reactor.running and isInIOThread():
        return consumer.start()
    if global_reactor.running:
        # A blocking publish() earlier in this script started the reactor in
        # a thread of its own: consume there, and wait here.
        _wait_in_caller_thread(consumer, global_reactor)
    else:
        _run_blocking(consumer, global_reactor)
    return None


def _run_blocking(consumer: Consumer, reactor: Any) -> None:
    """Run the reactor until the consumer stops; re-raise why it stopped."""
    outcome: list[Failure | None] = []

    def started(_: Any) -> defer.Deferred[None]:
        # A graceful drain on SIGINT, SIGTERM or reactor.stop().
        reactor.addSystemEventTrigger("before", "shutdown", consumer.cancel)
        return consumer.result

    def finished(result: Any) -> None:
        outcome.append(result if isinstance(result, Failure) else None)
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # already shutting down: a signal started the drain that ended here

    def go() -> None:
        consumer.start().addCallback(started).addBoth(finished)

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
        consumer.start().addCallback(lambda _: consumer.result).addBoth(finished)

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


class _Publishers:
    """Publishers by config for code outside a consumer, one connection each."""

    def __init__(self) -> None:
        self._by_config: dict[int, tuple[Config, Publisher]] = {}

    def get(self, config: Config, reactor: Any) -> Publisher:
        entry = self._by_config.get(id(config))
        if entry is None:
            entry = (config, Publisher(config, reactor))
            self._by_config[id(config)] = entry
        return entry[1]


_publishers = _Publishers()
_default_config: list[Config] = []


def _publisher_for(config: ConfigArg, reactor: Any) -> Publisher | Consumer:
    if config is None:
        consumer = current_consumer.get()
        if consumer is not None:
            return consumer  # type: ignore[no-any-return]
        if not _default_config:
            _default_config.append(load_config())
        config = _default_config[0]
    return _publishers.get(_resolve_config(config), reactor)


#: The handlers of intercepting_publishes() blocks, innermost last; shared by all threads.
_interceptors: list[Callable[[Any], None]] = []
_interceptors_lock = threading.Lock()


@contextlib.contextmanager
def intercepting_publishes(handler: Callable[[Any], None]) -> Iterator[None]:
    """Hand every :func:`publish` made inside the block to ``handler``, and send nothing.

    This is the seam test doubles stand on (:func:`fedmq.testing.mock_sends`
    is one). It holds in every thread while the block runs: a callback in a
    worker thread is intercepted too. Blocks nest; the innermost handler
    gets the message. Inside, :func:`publish` returns what it would once
    the broker confirmed: None, a fired Deferred or a done awaitable.

    Args:
        handler: called with each message passed to :func:`publish`, in the
            thread that called it.
    """
    with _interceptors_lock:
        _interceptors.append(handler)
    try:
        yield
    finally:
        with _interceptors_lock:
            _interceptors.remove(handler)


def _intercepted(message: Any, reactor: Any) -> tuple[bool, Any]:
    """(True, what publish() returns) when a block intercepts publishes; else (False, None)."""
    with _interceptors_lock:
        handler = _interceptors[-1] if _interceptors else None
    if handler is None:
        return False, None
    handler(message)
    from twisted.python.threadable import isInIOThread

    in_task = _running_task_loop()
    if in_task is not None:
        future: asyncio.Future[None] = in_task.create_future()
        future.set_result(None)
        return True, future
    if reactor is not None or (_global_reactor_running() and isInIOThread()):
        return True, defer.succeed(None)
    return True, None


def _global_reactor_running() -> bool:
    from twisted.internet import reactor

    return bool(reactor.running)


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

    Args:
        message: a :class:`~fedmq.Message`, or a fedora-messaging message
            (sent as fedora-messaging sends it, validated first); its
            ``topic`` is the routing key by default.
        exchange: the exchange; the config's ``publish_exchange`` by default.
        routing_key: overrides the message's topic.
        config: a config object or path. Inside a callback, the default is
            the consumer's own connection.
        mandatory: fail with :class:`~fedmq.PublishReturned` when no queue
            matches.
        timeout: seconds to wait for the broker's confirm.
        reactor: the reactor to use; passing one always gives a Deferred.

    Returns:
        Given a reactor, or on the reactor thread: a Deferred fired on the
        broker's ack. Inside
        an ``async def`` callback: an awaitable. Anywhere else (a sync
        callback's thread, a plain script): None, once confirmed.

    Raises:
        PublishFormatError: the message was refused before sending (see
            ``publish_format``); nothing was sent.
        PublishNacked, PublishReturned, PublishTimeout: the broker refused,
            could not route, or did not confirm in time.
    """
    if _interceptors:
        intercepted, result = _intercepted(message, reactor)
        if intercepted:
            return result
    from twisted.internet import reactor
    from twisted.python.threadable import isInIOThread

    target = _publisher_for(config, reactor)

    def send() -> defer.Deferred[None]:
        return target.publish(message, exchange, routing_key, mandatory=mandatory, timeout=timeout)

    send = _tracing.in_caller_context(send)
    in_task = _running_task_loop()
    if reactor.running and isInIOThread():
        d = send()
        if in_task is not None:
            return d.asFuture(in_task)
        return d
    if in_task is not None:
        # An async callback on fedmq's own loop thread: hop to the reactor.
        future: asyncio.Future[None] = in_task.create_future()

        def settle(result: Any) -> None:
            if isinstance(result, Failure):
                in_task.call_soon_threadsafe(_set_exception, future, result.value)
            else:
                in_task.call_soon_threadsafe(_set_result, future, None)

        reactor.callFromThread(lambda: send().addBoth(settle))
        return future
    if not reactor.running:
        _start_reactor_thread(reactor)
    threads.blockingCallFromThread(reactor, send)  # type: ignore[arg-type]
    return None


def _running_task_loop() -> asyncio.AbstractEventLoop | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if asyncio.current_task(loop) is not None else None


def _set_result(future: asyncio.Future[None], value: None) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[None], exc: BaseException | None) -> None:
    if exc is not None and not future.done():
        future.set_exception(exc)


_reactor_thread: list[threading.Thread] = []


def _start_reactor_thread(reactor: Any) -> None:
    """Run the reactor in a daemon thread, for blocking publishes from scripts."""
    if _reactor_thread:
        return
    thread = threading.Thread(
        target=reactor.run,
        kwargs={"installSignalHandlers": False},
        name="fedmq-reactor",
        daemon=True,
    )
    _reactor_thread.append(thread)
    thread.start()
    started = threading.Event()
    reactor.callFromThread(started.set)
    started.wait(30)


__all__ = ["consume", "intercepting_publishes", "publish"]
