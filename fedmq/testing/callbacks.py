"""Running a callback on one message, as the consumer would, without a broker.

:func:`make_message` builds a delivered :class:`~fedmq.Message` the way the
consumer decodes one; :func:`run_callback` loads a callback as the consumer
loads it (a class gets ``consumer_config``), runs its ``setup()``, the
callback and its ``teardown()``, and reports the outcome the consumer would
settle the message with. Both use the consumer's own code for each step:
nothing here decides differently from a running consumer.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmq import _delivery as records
from fedmq import _executors, _fedora
from fedmq._callback import load_callback
from fedmq._headers import PROCESSING_EXCEPTIONS
from fedmq._lifecycle import LoopThread, hook
from fedmq._settle_later import settlement_of
from fedmq.config import Config
from fedmq.exceptions import CallbackError, HaltConsumer
from fedmq.message import Message, Properties
from fedmq.settlement import Settlement
from fedmq.testing.capture import PublishCapture, capture_publishes

_BYTES = "application/octet-stream"

__all__ = ["CallbackResult", "Outcome", "arun_callback", "make_message", "run_callback"]


class Outcome(enum.Enum):
    """What the consumer does with a message after its callback ran."""

    #: Returned normally: the message is acknowledged.
    ACK = "ack"
    #: Raised Nack (fedmq's or fedora-messaging's): requeued.
    NACK = "nack"
    #: Raised Drop: rejected, to the drop exchange or dead-letter exchange.
    DROP = "drop"
    #: Raised Retry: republished to a wait queue, or parked once attempts run out.
    RETRY = "retry"
    #: Raised HaltConsumer: settled, then the consumer stops with its exit code.
    HALT = "halt"
    #: Raised anything else (ConsumerError included): a consumer error, requeued.
    ERROR = "error"
    #: The body did not decode: the callback never ran; the message is parked.
    UNDECODABLE = "undecodable"
    #: Called ``message.settle_later()``: its :class:`~fedmq.Settlement` settles it.
    DEFERRED = "deferred"


_OUTCOMES = {
    records.Outcome.ACK: Outcome.ACK,
    records.Outcome.NACK: Outcome.NACK,
    records.Outcome.DROP: Outcome.DROP,
    records.Outcome.RETRY: Outcome.RETRY,
    records.Outcome.HALT: Outcome.HALT,
    records.Outcome.UNDECODABLE: Outcome.UNDECODABLE,
    records.Outcome.CONSUMER_ERROR: Outcome.ERROR,
    records.Outcome.ERROR: Outcome.ERROR,
    records.Outcome.DEFERRED: Outcome.DEFERRED,
}


@dataclass(frozen=True)
class CallbackResult:
    """What one run of a callback came to.

    Attributes:
        outcome: how the consumer settles the message.
        exception: what the callback raised (fedora-messaging's exceptions
            translated to fedmq's, as the consumer does); None for ACK.
        exit_code: the exit code of a HALT; None for any other outcome.
        duration: seconds the callback ran.
        published: what the callback published, captured (nothing was sent).
        message: the message the callback was given; None when UNDECODABLE.
        settlement: for DEFERRED, the message's :class:`~fedmq.Settlement`:
            its ``settled_with`` says which of its methods was called, once
            one was; None for any other outcome.

    """

    outcome: Outcome
    exception: BaseException | None
    exit_code: int | None
    duration: float
    published: PublishCapture
    message: Message | None
    settlement: Settlement | None = None


def _delivery(
    body: Any,
    topic: str,
    headers: Mapping[str, Any] | None,
    properties: Properties | None,
    content_type: str | None,
    content_encoding: str | None,
    redelivered: bool,
    attempt: int,
    queue: str,
    exchange: str,
) -> records.Delivery:
    """The delivery a broker would hand the consumer for this message."""
    if isinstance(body, (bytes, bytearray)):
        # Bytes are the body on the wire, as received: not checked, not encoded.
        delivered = Properties.from_object(properties) if properties else Properties()
        delivered.content_type = content_type or delivered.content_type or _BYTES
        delivered.content_encoding = content_encoding or delivered.content_encoding
        delivered.headers = {**(delivered.headers or {}), **(headers or {})}
        delivered.message_id = delivered.message_id or uuid.uuid4().hex
        data = bytes(body)
    else:
        sent = Message(
            body,
            topic,
            headers,
            properties=properties,
            content_type=content_type,
            content_encoding=content_encoding,
        )
        delivered = Properties.from_object(sent.properties)
        delivered.headers = dict(sent.headers)
        data = sent.data
    if attempt > 1:
        delivered.headers[PROCESSING_EXCEPTIONS] = attempt - 1
    return records.Delivery(1, redelivered, exchange, topic, delivered, data, queue)


def make_message(
    body: Any = None,
    topic: str = "",
    headers: Mapping[str, Any] | None = None,
    *,
    properties: Properties | None = None,
    content_type: str | None = None,
    content_encoding: str | None = None,
    redelivered: bool = False,
    attempt: int = 1,
    queue: str = "test",
    exchange: str = "amq.topic",
    config: Config | None = None,
) -> Message:
    """Build a message as a callback receives it from the consumer.

    The body is encoded as :class:`~fedmq.Message` encodes it for
    publishing, then decoded as the consumer decodes a delivery (with the
    config's ``decode`` and ``max_body_size``, and into a fedora-messaging
    schema class when its headers name one).

    Args:
        body: the body, as a publisher would give it; ``bytes`` are the body
            on the wire, as received (compressed already, if
            ``content_encoding`` is given), and are not checked.
        topic: the routing key it arrived with.
        headers: application headers.
        properties: AMQP properties to start from.
        content_type: as for :class:`~fedmq.Message`.
        content_encoding: ``gzip``, ``deflate`` or ``bzip2``.
        redelivered: the broker's redelivered flag.
        attempt: which run of the callback this is (see
            :attr:`fedmq.Message.attempt`).
        queue: the queue it was consumed from.
        exchange: the exchange it was published to.
        config: decoding settings; the defaults when None.

    Raises:
        DecodeError: the consumer could not decode this body either.

    """
    config = config if config is not None else Config()
    item = _delivery(
        body,
        topic,
        headers,
        properties,
        content_type,
        content_encoding,
        redelivered,
        attempt,
        queue,
        exchange,
    )
    # The consumer's own conversion of a delivery, so the callback sees what it would.
    message: Message = _executors._message(  # noqa: SLF001
        item, config.max_body_size, config.decode, config.decode and _fedora.installed()
    )
    return message


def _result(raw: records.Result, published: PublishCapture) -> CallbackResult:
    exception = raw.error
    exit_code = exception.exit_code if isinstance(exception, HaltConsumer) else None
    # Whatever it raised afterwards, a message taken over is settled by its Settlement.
    settlement = settlement_of(raw.message)
    outcome = Outcome.DEFERRED if settlement is not None else _OUTCOMES[raw.outcome]
    return CallbackResult(
        outcome, exception, exit_code, raw.duration, published, raw.message, settlement
    )


def run_callback(
    callback: Any,
    body: Any = None,
    topic: str = "",
    headers: Mapping[str, Any] | None = None,
    *,
    consumer_config: Mapping[str, Any] | None = None,
    config: Config | None = None,
    timeout: float = 30.0,
    **delivery: Any,
) -> CallbackResult:
    """Run ``callback`` on one message as the consumer would, and say how it ended.

    Works from any test: plain pytest, pytest-twisted (on the reactor
    thread) and pytest-asyncio (inside a running loop). A sync callback runs
    in the calling thread; an ``async def`` one on an event loop thread of
    its own, as the consumer runs it without the asyncio reactor. A class is
    instantiated with ``consumer_config`` and its ``setup()`` and
    ``teardown()`` run around the callback. Every :func:`fedmq.publish` the
    callback makes is captured, not sent.

    Args:
        callback: a function, ``async def`` function, callable object, class,
            or ``"module:object"`` path.
        body: the message's body (see :func:`make_message`).
        topic: the message's topic.
        headers: the message's headers.
        consumer_config: the config's ``consumer_config`` table for a class;
            ``config.consumer_config`` when None.
        config: decoding settings and the consumer_config; defaults when None.
        timeout: seconds to wait for an async callback or hook.
        **delivery: the other keyword arguments of :func:`make_message`.

    Returns:
        The outcome, exception, exit code, duration and captured publishes.

    Raises:
        CallbackError: the callback cannot be loaded or built, or its
            ``setup()`` raised (``__cause__`` is that exception).

    """
    config = config if config is not None else Config()
    target, is_async = _load(callback, consumer_config, config)
    item = _delivery(body, topic, headers, **_delivery_options(delivery))
    schemas = config.decode and _fedora.installed()
    loop_thread = LoopThread("fedmq-testing") if _needs_loop(target, is_async) else None
    try:
        with capture_publishes() as published:
            _run_hook(target, "setup", loop_thread, timeout)
            try:
                if is_async:
                    if loop_thread is None:
                        raise RuntimeError("an async callback needs an event loop thread")
                    coroutine = _executors.run_async(
                        target, item, config.max_body_size, config.decode, schemas
                    )
                    raw = asyncio.run_coroutine_threadsafe(coroutine, loop_thread.loop).result(
                        timeout
                    )
                else:
                    raw = _executors.run_sync(
                        target, item, config.max_body_size, config.decode, schemas
                    )
            finally:
                _run_hook(target, "teardown", loop_thread, timeout)
    finally:
        if loop_thread is not None:
            loop_thread.stop()
    return _result(raw, published)


async def arun_callback(
    callback: Any,
    body: Any = None,
    topic: str = "",
    headers: Mapping[str, Any] | None = None,
    *,
    consumer_config: Mapping[str, Any] | None = None,
    config: Config | None = None,
    **delivery: Any,
) -> CallbackResult:
    """:func:`run_callback`, awaited on the running asyncio loop.

    For an async callback that must share the test's event loop (a client
    session a pytest-asyncio fixture opened), as the consumer shares the
    reactor's loop under Twisted's asyncio reactor. A sync callback and sync
    hooks run in the calling thread.
    """
    config = config if config is not None else Config()
    target, is_async = _load(callback, consumer_config, config)
    item = _delivery(body, topic, headers, **_delivery_options(delivery))
    schemas = config.decode and _fedora.installed()
    with capture_publishes() as published:
        await _await_hook(target, "setup")
        try:
            if is_async:
                raw = await _executors.run_async(
                    target, item, config.max_body_size, config.decode, schemas
                )
            else:
                raw = _executors.run_sync(
                    target, item, config.max_body_size, config.decode, schemas
                )
        finally:
            await _await_hook(target, "teardown")
    return _result(raw, published)


def _load(
    callback: Any, consumer_config: Mapping[str, Any] | None, config: Config
) -> tuple[Any, bool]:
    table = consumer_config if consumer_config is not None else config.consumer_config
    return load_callback(callback, table, config=config)


_DELIVERY_DEFAULTS: dict[str, Any] = {
    "properties": None,
    "content_type": None,
    "content_encoding": None,
    "redelivered": False,
    "attempt": 1,
    "queue": "test",
    "exchange": "amq.topic",
}


def _delivery_options(given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(_DELIVERY_DEFAULTS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    return {**_DELIVERY_DEFAULTS, **given}


def _needs_loop(target: Any, is_async: bool) -> bool:
    hooks = (hook(target, "setup"), hook(target, "teardown"))
    return is_async or any(inspect.iscoroutinefunction(method) for method in hooks)


def _hook_failed(target: Any, name: str, exc: BaseException) -> BaseException:
    label = getattr(type(target), "__qualname__", "callback")
    error = CallbackError(
        f"{name}() of the callback {label!r} raised {type(exc).__name__}: {exc}",
        raised_by_callback=True,
    )
    error.__cause__ = exc
    return error


def _loop_of(loop_thread: LoopThread | None) -> asyncio.AbstractEventLoop:
    if loop_thread is None:
        raise RuntimeError("an async hook needs an event loop thread")
    return loop_thread.loop


def _run_hook(target: Any, name: str, loop_thread: LoopThread | None, timeout: float) -> None:
    method = hook(target, name)
    if method is None:
        return
    try:
        if inspect.iscoroutinefunction(method):
            asyncio.run_coroutine_threadsafe(method(), _loop_of(loop_thread)).result(timeout)
        else:
            method()
    except Exception as exc:
        raise _hook_failed(target, name, exc) from exc


async def _await_hook(target: Any, name: str) -> None:
    method = hook(target, name)
    if method is None:
        return
    try:
        result = method()
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        raise _hook_failed(target, name, exc) from exc
