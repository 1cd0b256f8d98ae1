"""A plain script, as a user writes it: ``consume()`` blocks until the consumer stops.

Usage: blocking_consume.py REACTOR KIND QUEUE
  REACTOR: "default" or "asyncio" (installed before fedmq touches a reactor)
  KIND: "printer", "function", "class", "async", "async-class", "raises",
        "publish-then-consume"
Each halts after three messages, except "printer", which runs until a signal,
and "raises", whose callback fails on its first message.
"""

import sys

reactor_name, kind, queue = sys.argv[1:4]
if reactor_name == "asyncio":
    from twisted.internet import asyncioreactor

    asyncioreactor.install()

import fedmq  # noqa: E402
from fedmq.example import printer  # noqa: E402

seen = []


def function(message):
    seen.append(message.body)
    print("got", message.body, flush=True)
    if len(seen) == 3:
        raise fedmq.HaltConsumer(exit_code=0)


class Handler:
    def __init__(self, consumer_config):
        self.limit = consumer_config.get("limit", 3)

    def __call__(self, message):
        function(message)


async def async_function(message):
    function(message)


class AsyncHandler:
    async def __call__(self, message):
        function(message)


def raises(message):
    raise RuntimeError("the callback is broken")


callbacks = {
    "printer": printer,
    "function": function,
    "class": Handler,
    "async": async_function,
    "async-class": AsyncHandler,
    "raises": raises,
    "publish-then-consume": function,
}
queues = {queue: {"durable": True, "auto_delete": False, "exclusive": False, "arguments": {}}}
binding = {"exchange": "amq.topic", "queue": queue, "routing_keys": [queue + ".#"]}

if kind == "publish-then-consume":
    for n in range(3):
        fedmq.publish(fedmq.Message({"n": n}, topic=queue), exchange="")

fedmq.consume(callbacks[kind], bindings=binding, queues=queues)
print("consume returned", flush=True)
