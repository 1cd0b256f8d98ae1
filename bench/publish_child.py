"""One publishing contender in a fresh interpreter: ``python -m bench.publish_child NAME ...``.

Each publishes ``--messages`` small JSON messages (persistent, with publisher
confirms) to the durable ``--queue`` through the default exchange, and prints
one JSON line with its result. What is timed, the same way for each: from
the first publish until the broker has confirmed the last. Connecting (and
one warm-up message, routed nowhere) comes before the clock starts. Each
builds its messages inside the timed loop, as its users would.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench.child import _cpu_seconds, _peak_rss_mb
from bench.contenders import (
    PUBLISH_FEDMQ_BLOCKING,
    PUBLISH_FEDMQ_POST,
    PUBLISH_FEDMQ_TWISTED,
    PUBLISH_FEDORA_MESSAGING,
    PUBLISH_RAW,
    PUBLISH_RAW_BLOCKING,
)

#: The routing key of the warm-up message: no queue has this name, so it goes nowhere.
WARM_UP_KEY = "bench.warm-up.nowhere"


def _body(sequence: int) -> dict[str, Any]:
    return {"sequence": sequence, "text": "a small JSON body"}


def _react(main: Callable[[Any], Any]) -> float:
    """Run ``main(reactor)`` (a coroutine function returning seconds) under task.react."""
    from twisted.internet import defer, task

    seconds: list[float] = []

    async def run(reactor: Any) -> None:
        seconds.append(await main(reactor))

    try:
        task.react(lambda reactor: defer.ensureDeferred(run(reactor)))
    except SystemExit as exit_:
        if exit_.code:
            raise
    return seconds[0]


def raw_pika(url: str, queue: str, count: int) -> float:
    import pika
    from pika.adapters.twisted_connection import TwistedProtocolConnection
    from twisted.internet import defer, endpoints, protocol

    async def main(reactor: Any) -> float:
        parameters = pika.URLParameters(url)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, parameters.host, parameters.port)
        factory = protocol.Factory.forProtocol(lambda: TwistedProtocolConnection(parameters))
        connection = await endpoint.connect(factory)
        await connection.ready
        channel = await connection.channel()
        await channel.confirm_delivery()
        await channel.basic_publish("", WARM_UP_KEY, b"{}")
        started = time.perf_counter()
        confirms = [
            channel.basic_publish(
                "",
                queue,
                json.dumps(_body(n)).encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    message_id=uuid.uuid4().hex,
                ),
            )
            for n in range(count)
        ]
        await defer.gatherResults(confirms, consumeErrors=True)
        seconds = time.perf_counter() - started
        await connection.close()
        return seconds

    return _react(main)


def fedmq_twisted(url: str, queue: str, count: int) -> float:

    import fedmq

    failed: list[fedmq.Ack] = []

    def on_ack(ack: fedmq.Ack) -> None:
        if ack.error is not None:
            failed.append(ack)

    async def main(reactor: Any) -> float:
        publisher = fedmq.Publisher(fedmq.Config(amqp_url=url), reactor=reactor)
        await publisher.publish(fedmq.Message({}), "", WARM_UP_KEY)
        started = time.perf_counter()
        # The pipelined form docs/publishing.md recommends to Twisted code:
        # post() with on_ack, waiting only when it says the bound is full.
        for n in range(count):
            sent = publisher.post(fedmq.Message(_body(n)), "", queue, on_ack=on_ack)
            if sent is not None:
                await sent
        await publisher.flush(600)
        seconds = time.perf_counter() - started
        await publisher.close()
        return seconds

    seconds = _react(main)
    if failed:
        raise RuntimeError(f"{len(failed)} messages failed: {failed[0].error}")
    return seconds


def fedmq_post(url: str, queue: str, count: int) -> float:
    import fedmq

    failed: list[fedmq.Ack] = []

    def on_ack(ack: fedmq.Ack) -> None:
        if ack.error is not None:
            failed.append(ack)

    with fedmq.Publisher(fedmq.Config(amqp_url=url)) as publisher:
        publisher.publish(fedmq.Message({}), "", WARM_UP_KEY)
        started = time.perf_counter()
        for n in range(count):
            publisher.post(fedmq.Message(_body(n)), "", queue, on_ack=on_ack)
        publisher.flush(600)
        seconds = time.perf_counter() - started
    if failed:
        raise RuntimeError(f"{len(failed)} messages failed: {failed[0].error}")
    return seconds


def fedmq_blocking(url: str, queue: str, count: int) -> float:
    import fedmq

    config = fedmq.Config(amqp_url=url)
    fedmq.publish(fedmq.Message({}), "", WARM_UP_KEY, config=config)
    started = time.perf_counter()
    for n in range(count):
        fedmq.publish(fedmq.Message(_body(n)), "", queue, config=config)
    return time.perf_counter() - started


def raw_pika_blocking(url: str, queue: str, count: int) -> float:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", WARM_UP_KEY, b"{}")
    started = time.perf_counter()
    for n in range(count):
        channel.basic_publish(
            "",
            queue,
            json.dumps(_body(n)).encode(),
            pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex
            ),
        )
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


def fedora_messaging(url: str, queue: str, count: int) -> float:
    # Its configuration (amqp_url) comes from $FEDORA_MESSAGING_CONF, set by bench.run.
    from fedora_messaging import api, message

    api.publish(message.Message(body={}, topic=WARM_UP_KEY), exchange="")
    started = time.perf_counter()
    for n in range(count):
        api.publish(message.Message(body=_body(n), topic=queue), exchange="")
    return time.perf_counter() - started


PROGRAMS: dict[str, Callable[[str, str, int], float]] = {
    PUBLISH_RAW: raw_pika,
    PUBLISH_FEDMQ_TWISTED: fedmq_twisted,
    PUBLISH_FEDMQ_POST: fedmq_post,
    PUBLISH_FEDMQ_BLOCKING: fedmq_blocking,
    PUBLISH_RAW_BLOCKING: raw_pika_blocking,
    PUBLISH_FEDORA_MESSAGING: fedora_messaging,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_child", description=__doc__)
    parser.add_argument("contender", choices=sorted(PROGRAMS))
    parser.add_argument("--url", required=True, help="the broker's AMQP URL")
    parser.add_argument("--queue", required=True, help="the (empty) queue to publish to")
    parser.add_argument("--messages", type=int, required=True, help="messages to publish")
    parser.add_argument("--deadline", type=float, required=True, help="unused: the parent's")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"contender": args.contender, "messages": args.messages}
    cpu_started = _cpu_seconds()
    try:
        seconds = PROGRAMS[args.contender](args.url, args.queue, args.messages)
    except Exception as exc:  # the parent reports it, whatever it is
        result.update(ok=False, error=f"{type(exc).__name__}: {exc}")
    else:
        result.update(
            ok=True,
            seconds=seconds,
            rate=args.messages / seconds,
            cpu_seconds=_cpu_seconds() - cpu_started,
            peak_rss_mb=_peak_rss_mb(),
            acked=0,
        )
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
