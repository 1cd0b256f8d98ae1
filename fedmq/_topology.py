"""Declaring what a consumer needs on the broker, one timed, named step at a time.

Every step has the config's ``connect_timeout``; a step that fails says which
one it was and what the broker replied, so that a refused declaration ends in
one sentence naming the exchange, queue or binding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime

from fedmq._amqp import AMQPChannel
from fedmq._policy import has_retry_queues, retry_queues
from fedmq.config import Config, ExchangeConfig
from fedmq.exceptions import BrokerError, DeclarationError

log = logging.getLogger(__name__)


async def step(d: defer.Deferred[Any], what: str, timeout: float, reactor: IReactorTime) -> Any:
    """Await one channel operation with a timeout, naming it if it fails.

    Raises:
        BrokerError: the broker did not answer in time, or closed the channel.
        DeclarationError: the broker refused a declaration or binding.

    """
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except defer.TimeoutError:
        raise BrokerError(f"The broker did not answer within {timeout:g} s while {what}") from None
    except BrokerError as exc:
        raise type(exc)(
            f"The broker refused {what}: {exc.reply_code} {exc.reply_text}",
            exc.reply_code,
            exc.reply_text,
        ) from None
    except Exception as exc:
        if getattr(exc, "reply_code", None) is not None:
            code, text = exc.reply_code, exc.reply_text  # type: ignore[attr-defined]
            raise DeclarationError(
                f"The broker refused {what}: {code} {text}", code, text
            ) from None
        raise


async def declare(channel: AMQPChannel, config: Config, reactor: IReactorTime) -> list[str]:
    """Declare (or check) the config's exchanges and queues, and bind them.

    Returns:
        The names of the queues, the broker's own for server-named ones.

    """
    timeout = config.connect_timeout
    for exchange in config.exchanges:
        passive = config.passive_declares if exchange.passive is None else exchange.passive
        verb = "checking" if passive else "declaring"
        await step(
            channel.declare_exchange(exchange, passive),
            f"{verb} exchange {exchange.name!r} (type {exchange.type!r})",
            timeout,
            reactor,
        )
    names: dict[str, str] = {}
    for queue in config.queues:
        passive = config.passive_declares if queue.passive is None else queue.passive
        verb = "checking" if passive else "declaring"
        label = repr(queue.name) if queue.name else "a server-named queue"
        names[queue.name] = await step(
            channel.declare_queue(queue, passive), f"{verb} queue {label}", timeout, reactor
        )
    for binding in config.bindings:
        queue_name = names.get(binding.queue, binding.queue)
        for key in binding.routing_keys:
            await step(
                channel.bind(queue_name, binding.exchange, key, binding.arguments),
                f"binding queue {queue_name!r} to exchange {binding.exchange!r} "
                f"with routing key {key!r}",
                timeout,
                reactor,
            )
    return list(names.values())


# Reply codes that mean "fedmq may not have these queues here": a passive
# check found none (404), or the user may not declare them (403).
_NOT_HERE = {403: "may not be declared (403 ACCESS_REFUSED)", 404: "does not exist"}


async def declare_error_paths(
    channel: AMQPChannel,
    open_channel: Callable[[], defer.Deferred[AMQPChannel]],
    config: Config,
    reactor: IReactorTime,
) -> list[str]:
    """Declare each queue's retry queues and dead queue; check the drop exchange exists.

    The retry and dead queues are fedmq's own addition, so they never stop a
    consumer that would run without them: each queue's are declared (checked,
    under ``passive_declares``) on a channel of their own, and when the broker
    says they do not exist or may not be declared, a warning names the queue
    and that queue goes without (``Retry`` then drops, and an undecodable body
    goes to the queue's dead-letter exchange). Any other refusal is an error.

    Args:
        channel: the consuming channel, for the drop exchange's check.
        open_channel: opens a fresh channel on the same connection.
        config: what to declare.
        reactor: for the steps' timeouts.

    Returns:
        The names of the consumed queues that have retry queues and a dead queue.

    """
    timeout = config.connect_timeout
    candidates = [queue for queue in config.queues if has_retry_queues(queue, config.retry)]
    with_retry = []
    for queue in candidates:
        passive = config.passive_declares if queue.passive is None else queue.passive
        verb = "checking" if passive else "declaring"
        side = await step(open_channel(), "opening a channel", timeout, reactor)
        try:
            for extra in retry_queues(queue, config.retry):
                what = f"{verb} queue {extra.name!r} (for retries of {queue.name!r})"
                try:
                    await step(side.declare_queue(extra, passive), what, timeout, reactor)
                except DeclarationError as exc:
                    if exc.reply_code not in _NOT_HERE:
                        raise
                    log.warning(
                        "Queue %r %s, so %r has no retry or dead queue: Retry drops its "
                        "messages and undecodable ones go to its dead-letter exchange "
                        "(%s: %s %s)",
                        extra.name,
                        _NOT_HERE[exc.reply_code],
                        queue.name,
                        what,
                        exc.reply_code,
                        exc.reply_text,
                    )
                    break
            else:
                with_retry.append(queue.name)
        finally:
            if side.is_open:
                await step(side.close(), "closing a channel", timeout, reactor)
    if config.drop_exchange:
        await step(
            channel.declare_exchange(ExchangeConfig(name=config.drop_exchange), passive=True),
            f"checking that the drop_exchange {config.drop_exchange!r} exists",
            timeout,
            reactor,
        )
    return with_retry
