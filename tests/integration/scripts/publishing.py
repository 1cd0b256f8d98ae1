"""Plain scripts that publish, as users write them; each prints JSON on its last line.

Usage: publishing.py KIND QUEUE [N]
  threads: 4 threads post N messages each (with on_ack), then flush; the
      statuses by message id.
  blocking-loop: N blocking publish(config=path) calls; then waits for a line
      on standard input, so the test can count the broker's connections.
  after-consume: a blocking consume() that halts on its first message, then
      publish(timeout=5); the error and the seconds it took.
  blocking-errors: blocking publish() of a mandatory message no queue
      matches, then of one to QUEUE; what each raised (or null).
  asyncio: an asyncio program (asyncio.run, no Twisted in sight) awaits
      publish(), posts N messages with on_ack, awaits a post's future and
      flush(), awaits a mandatory publish no queue matches, and leaves
      `async with`; the statuses and what the unroutable one raised.
The config file is $FEDMQ_CONFIG.
"""

import json
import os
import sys
import threading
import time

import fedmq

kind, queue = sys.argv[1:3]
count = int(sys.argv[3]) if len(sys.argv) > 3 else 0
config_path = os.environ["FEDMQ_CONFIG"]


def threads() -> dict:
    statuses: dict[str, list[str]] = {}
    lock = threading.Lock()

    def on_ack(ack: fedmq.Ack) -> None:
        with lock:
            statuses.setdefault(ack.message_id, []).append(ack.status.name)

    with fedmq.Publisher(config_path) as publisher:

        def post(worker: int) -> None:
            for n in range(count):
                message = fedmq.Message({"worker": worker, "n": n}, topic=queue)
                publisher.post(message, exchange="", routing_key=queue, on_ack=on_ack)

        workers = [threading.Thread(target=post, args=(w,)) for w in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        publisher.flush(60)
    return {"statuses": statuses}


def blocking_loop() -> dict:
    for n in range(count):
        fedmq.publish(fedmq.Message({"n": n}), exchange="", routing_key=queue, config=config_path)
    print(json.dumps({"published": count}), flush=True)
    sys.stdin.readline()
    return {"done": True}


def after_consume() -> dict:
    def halt(message: fedmq.Message) -> None:
        raise fedmq.HaltConsumer(0)

    fedmq.consume(halt, queues={queue: {"durable": True}}, bindings=[])
    started = time.monotonic()
    try:
        fedmq.publish(fedmq.Message({"late": True}), exchange="", routing_key=queue, timeout=5)
    except fedmq.FedmqError as error:
        return {
            "error": type(error).__name__,
            "text": str(error),
            "seconds": time.monotonic() - started,
        }
    return {"error": None, "seconds": time.monotonic() - started}


def blocking_errors() -> dict:
    raised: dict[str, str | None] = {}
    for name, key in (("unroutable", f"{queue}.nowhere"), ("routed", queue)):
        message = fedmq.Message({"name": name})
        try:
            fedmq.publish(message, exchange="", routing_key=key, mandatory=True, timeout=10)
        except fedmq.PublishError as error:
            raised[name] = type(error).__name__
        else:
            raised[name] = None
    return {"raised": raised}


def asyncio_program() -> dict:
    import asyncio

    async def main() -> dict:
        statuses: list[str] = []
        async with fedmq.Publisher(config_path) as publisher:
            await publisher.publish(fedmq.Message({"n": 0}), exchange="", routing_key=queue)
            for n in range(1, count):
                publisher.post(
                    fedmq.Message({"n": n}),
                    exchange="",
                    routing_key=queue,
                    on_ack=lambda ack: statuses.append(ack.status.name),
                )
            last = publisher.post(fedmq.Message({"n": count}), exchange="", routing_key=queue)
            statuses.append((await asyncio.wrap_future(last)).status.name)
            await publisher.flush(60)
            try:
                await publisher.publish(
                    fedmq.Message({"lost": True}),
                    exchange="",
                    routing_key=f"{queue}.nowhere",
                    mandatory=True,
                )
            except fedmq.PublishError as error:
                raised = type(error).__name__
            else:
                raised = None
        return {"statuses": statuses, "raised": raised, "loop_thread": threading.get_ident()}

    return asyncio.run(main())


result = {
    "threads": threads,
    "blocking-loop": blocking_loop,
    "after-consume": after_consume,
    "blocking-errors": blocking_errors,
    "asyncio": asyncio_program,
}[kind]()
print(json.dumps(result), flush=True)
