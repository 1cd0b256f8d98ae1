"""Connecting with failover: every connection fedmq opens tries ``broker_urls`` in turn.

The consumer, the publisher and the one-shot commands (``fedmq publish``,
``get``, ``requeue-dead``) all connect through here, so a configuration that
lists only ``amqp_urls`` (a cluster) works for each of them.
"""

from __future__ import annotations

import logging
from typing import Any

from fedmq._amqp import AMQPConnection
from fedmq.config import Config, redact_url
from fedmq.exceptions import AuthenticationFailed, ConnectionFailed

log = logging.getLogger("fedmq")


async def connect(
    config: Config, reactor: Any, first: int = 0, *, opener: Any = AMQPConnection.connect
) -> tuple[AMQPConnection, int]:
    """Open a connection to the first of the config's brokers that answers.

    One pass through ``config.broker_urls``, from index ``first`` (modulo
    their number); no backoff here, that is the caller's policy.

    Args:
        config: the URLs (``amqp_urls``, else ``amqp_url``) and connection settings.
        reactor: the reactor to connect with.
        first: the index of the URL to try first (the one that last worked).
        opener: opens one connection, ``(config, reactor, url)``; a consumer's
            own ``connect=`` seam, so its publisher reaches the same broker.

    Returns:
        The connection, and the index of the URL it went to.

    Raises:
        AuthenticationFailed: a broker refused the credentials (no other is tried:
            the nodes of a cluster share their users).
        ConnectionFailed: no broker could be reached; the text names the last one's error.

    """
    urls = config.broker_urls
    last = ConnectionFailed("the configuration names no broker")  # never: it names one at least
    for step in range(len(urls)):
        index = (first + step) % len(urls)
        try:
            connection = await opener(config, reactor, urls[index])
        except AuthenticationFailed:
            raise
        except ConnectionFailed as error:
            if len(urls) > 1:
                log.warning("%s; trying the next broker", error)
            last = error
            continue
        return connection, index
    if len(urls) == 1:
        raise last
    names = ", ".join(redact_url(url) for url in urls)
    raise ConnectionFailed(f"None of the brokers ({names}) could be reached; the last: {last}")


async def connect_any(config: Config, reactor: Any) -> AMQPConnection:
    """:func:`connect` from the first URL, for one-shot commands; the connection alone."""
    connection, _index = await connect(config, reactor)
    return connection


__all__ = ["connect", "connect_any"]
