"""The outcomes a callback chooses, and where messages go, on a real broker.

Each test consumes one queue with fedmq and looks at the broker with pika's
blocking client: which queue each message ended in, with which headers.
"""

from __future__ import annotations

import datetime
import itertools
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task

import fedmq
from fedmq import exit_codes
from fedmq.exceptions import CallbackError, DeclarationError
from tests.integration.conftest import wait_for

#: Short delays keep the tests quick; the mechanism is the same at any length.
FAST_RETRY = {"delays": [0.2, 0.4], "max_attempts": 3}


def routed_config(make_config: Any, queue_name: str, **keys: Any) -> Any:
    """Consume ``queue_name`` bound to amq.topic with routing key "orders.#"."""
    return make_config(
        bindings=[{"queue": queue_name, "exchange": "amq.topic", "routing_keys": ["orders.#"]}],
        **keys,
    )


# --- Retry ---------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_message_that_keeps_raising_retry_is_parked_after_max_attempts(
    broker, queue_name, make_config
):
    """Retry runs the callback max_attempts times, waiting between runs, then parks the message."""
    runs: list[tuple[int, str, str | None, float]] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(
            (
                message.attempt,
                message.topic,
                message.exchange,
                datetime.datetime.now(datetime.timezone.utc).timestamp(),
            )
        )
        raise fedmq.Retry(f"the stock service said 503 on attempt {message.attempt}")

    config = routed_config(make_config, queue_name, retry=FAST_RETRY, name="stock-updater")
    consumer = await fedmq.consume(callback, config=config)
    assert consumer.queues == (queue_name,)
    [message_id] = broker.publish("orders.new", [{"order": 1}], exchange="amq.topic")
    dead = queue_name + ".dead"
    await wait_for(lambda: broker.ready(dead) == 1, what="the parked message")
    await consumer.cancel()

    assert [attempt for attempt, *_ in runs] == [1, 2, 3]
    assert {(topic, exchange) for _, topic, exchange, _ in runs} == {("orders.new", "amq.topic")}
    waits = [later[3] - earlier[3] for earlier, later in itertools.pairwise(runs)]
    assert waits[0] >= 0.15 and waits[1] >= 0.35, waits  # the delays 0.2 s then 0.4 s
    [(properties, body)] = broker.take_all(dead)
    assert body == b'{"order": 1}'
    assert properties.message_id == message_id
    headers = properties.headers
    assert headers["X-Processing-Exceptions"] == 3
    assert headers["X-Processing-Exception"] == "the stock service said 503 on attempt 3"
    assert headers["X-Dropped-By"] == "stock-updater"
    assert "3 attempts" in headers["X-Dropped-Reason"]
    when = datetime.datetime.fromisoformat(headers["X-Dropped-Timestamp"])
    assert when.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 60
    assert headers["X-Original-Exchange"] == "amq.topic"
    assert headers["X-Original-Routing-Key"] == "orders.new"
    assert headers["X-Original-Queue"] == queue_name
    assert broker.counts(queue_name) == (0, 0)
    assert consumer.counts["retried"] == 2
    assert consumer.counts["parked"] == 1


@pytest_twisted.ensureDeferred
async def test_with_max_attempts_2_the_callback_runs_twice(broker, queue_name, make_config):
    """max_attempts counts runs: 2 runs, and the parked copy says 2 failed."""
    attempts: list[int] = []

    def callback(message: fedmq.Message) -> None:
        attempts.append(message.attempt)
        raise fedmq.Retry("not yet")

    config = make_config(retry={"delays": [0.1], "max_attempts": 2})
    consumer = await fedmq.consume(callback, config=config)
    broker.publish(queue_name, ["x"])
    dead = queue_name + ".dead"
    await wait_for(lambda: broker.ready(dead) == 1, what="the parked message")
    await consumer.cancel()
    assert attempts == [1, 2]
    [(properties, _)] = broker.take_all(dead)
    assert properties.headers["X-Processing-Exceptions"] == 2


@pytest_twisted.ensureDeferred
async def test_a_retried_message_that_then_succeeds_is_acked_and_nothing_is_parked(
    broker, queue_name, make_config
):
    """A Retry on the first run and success on the second leaves every queue empty."""
    attempts: list[int] = []

    def callback(message: fedmq.Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise fedmq.Retry("the database is busy")

    consumer = await fedmq.consume(callback, config=make_config(retry=FAST_RETRY))
    broker.publish(queue_name, ["a", "b"])
    await wait_for(lambda: len(attempts) == 4, what="two runs of each message")
    await wait_for(lambda: consumer.counts["acked"] == 2, what="both acks")
    await consumer.cancel()
    assert sorted(attempts) == [1, 1, 2, 2]
    for queue in (queue_name, queue_name + ".dead", queue_name + ".retry.0.2s"):
        assert broker.counts(queue) == (0, 0), queue


@pytest_twisted.ensureDeferred
async def test_each_consumed_queue_gets_its_wait_queues_and_dead_queue(
    broker, queue_name, make_config, rabbit
):
    """The wait queues expire messages back into the queue; the dead queue has no TTL."""
    consumer = await fedmq.consume(lambda m: None, config=make_config())
    await consumer.cancel()
    listing = rabbit.ctl("list_queues", "name", "arguments", "--no-table-headers", "-q")
    lines = {line.split("\t")[0]: line for line in listing.splitlines() if queue_name in line}
    assert set(lines) == {
        queue_name,
        f"{queue_name}.retry.1s",
        f"{queue_name}.retry.10s",
        f"{queue_name}.retry.60s",
        f"{queue_name}.dead",
    }
    wait = lines[f"{queue_name}.retry.10s"]
    assert "x-message-ttl" in wait and "10000" in wait
    assert "x-dead-letter-routing-key" in wait and queue_name in wait.split("\t")[1]
    assert "x-message-ttl" not in lines[f"{queue_name}.dead"]


@pytest_twisted.ensureDeferred
async def test_retry_on_a_server_named_queue_drops_the_message(
    broker, queue_name, make_config, caplog
):
    """A server-named queue has no wait queues: Retry drops the message (to the queue's
    dead-letter exchange, here) and says why; the callback ran once.
    """
    dead_letters = f"{queue_name}-dlx"
    broker.declare_queue(dead_letters)
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letters}
    config = make_config(
        queues={
            "": {"durable": False, "exclusive": True, "auto_delete": True, "arguments": arguments}
        },
    )
    seen: list[Any] = []

    def callback(message: fedmq.Message) -> None:
        seen.append(message.body)
        raise fedmq.Retry("later")

    consumer = await fedmq.consume(callback, config=config)
    [queue] = consumer.queues
    broker.publish(queue, ["x"])
    await wait_for(lambda: broker.counts(dead_letters) == (1, 0), what="the dropped message")
    assert broker.counts(queue) == (0, 0)
    await consumer.cancel()
    assert seen == ["x"]
    assert broker.drain(dead_letters) == ["x"]
    assert "cannot be retried" in caplog.text


# --- Drop and the drop exchange ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_drop_copies_the_message_to_the_drop_exchange_and_the_dead_letter_exchange(
    broker, queue_name, make_config
):
    """With drop_exchange set, Drop republishes there (with headers), then rejects to the DLX."""
    drops, dropped_queue, dlx_queue = (
        f"{queue_name}-drops",
        f"{queue_name}-dropped",
        queue_name + "-dlx",
    )
    broker.declare_exchange(drops, kind="topic")
    broker.declare_queue(dropped_queue)
    broker.bind(dropped_queue, drops, "#")
    broker.declare_queue(dlx_queue)
    config = make_config(
        queues={
            queue_name: {
                "arguments": {
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": dlx_queue,
                }
            }
        },
        bindings=[{"queue": queue_name, "exchange": "amq.topic", "routing_keys": ["orders.#"]}],
        drop_exchange=drops,
        name="order-checker",
    )

    def callback(message: fedmq.Message) -> None:
        if message.body == "bad":
            raise fedmq.Drop("order 7 has no customer")

    consumer = await fedmq.consume(callback, config=config)
    broker.publish("orders.new", ["good", "bad", "good"], exchange="amq.topic")
    await wait_for(lambda: broker.ready(dlx_queue) == 1, what="the dead-lettered copy")
    await wait_for(lambda: consumer.counts["acked"] == 2, what="the good messages")
    await consumer.cancel()
    [(properties, body)] = broker.take_all(dropped_queue)
    assert body == b'"bad"'
    headers = properties.headers
    assert headers["X-Dropped-By"] == "order-checker"
    assert headers["X-Dropped-Reason"] == "the callback raised Drop: order 7 has no customer"
    assert headers["X-Original-Routing-Key"] == "orders.new"
    assert headers["X-Original-Exchange"] == "amq.topic"
    assert headers["X-Original-Queue"] == queue_name
    assert broker.drain(dlx_queue) == ["bad"]
    assert consumer.counts["dropped"] == 1


@pytest_twisted.ensureDeferred
async def test_a_missing_drop_exchange_stops_the_consumer_at_start(make_config, queue_name):
    """A drop_exchange that does not exist is a refused declaration naming it (exit code 3)."""
    config = make_config(drop_exchange=f"{queue_name}-no-such-exchange")
    with pytest.raises(DeclarationError) as caught:
        await fedmq.consume(lambda m: None, config=config)
    text = str(caught.value)
    assert f"drop_exchange '{queue_name}-no-such-exchange'" in text
    assert "404" in text
    assert exit_codes.exit_code_for(caught.value) == exit_codes.DECLARATION_REFUSED


# --- message types -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_message_of_another_type_is_dropped_without_calling_the_callback(
    broker, queue_name, make_config
):
    """message_types: a message of an unlisted type goes to the drop exchange; others run."""
    drops, dropped_queue = f"{queue_name}-drops", f"{queue_name}-dropped"
    broker.declare_exchange(drops)
    broker.declare_queue(dropped_queue)
    broker.bind(dropped_queue, drops)
    config = make_config(message_types=["order.created"], drop_exchange=drops)
    seen: list[Any] = []
    consumer = await fedmq.consume(lambda m: seen.append(m.body), config=config)
    broker.publish(queue_name, ["before"], type="order.created")
    broker.publish(queue_name, ["refund"], type="refund.issued")
    broker.publish(queue_name, ["untyped"])
    broker.publish(queue_name, ["after"], type="order.created")
    await wait_for(lambda: broker.ready(dropped_queue) == 2, what="the two dropped messages")
    await wait_for(lambda: seen == ["before", "after"], what="the accepted messages")
    await consumer.cancel()
    dropped = broker.take_all(dropped_queue)
    assert [body for _, body in dropped] == [b'"refund"', b'"untyped"']
    assert "'refund.issued' is not one of" in dropped[0][0].headers["X-Dropped-Reason"]
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_class_callback_can_name_its_message_types(broker, queue_name, make_config):
    """A message_types attribute on the callback class works as the config key does: the
    message of another type is dropped (to the dead-letter queue) without reaching it.
    """
    seen: list[Any] = []

    class OrdersOnly:
        message_types = ("order.created",)

        def __call__(self, message: fedmq.Message) -> None:
            seen.append(message.body)

    dead_letters = f"{queue_name}-dlx"
    broker.declare_queue(dead_letters)
    arguments = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead_letters}
    config = make_config(queues={queue_name: {"durable": True, "arguments": arguments}})
    consumer = await fedmq.consume(OrdersOnly, config=config)
    broker.publish(queue_name, ["no"], type="other")
    broker.publish(queue_name, ["yes"], type="order.created")
    await wait_for(lambda: broker.counts(dead_letters) == (1, 0), what="the dropped message")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the accepted message acked")
    await consumer.cancel()
    assert seen == ["yes"]
    assert broker.drain(dead_letters) == ["no"]


@pytest_twisted.ensureDeferred
async def test_with_drop_invalid_messages_off_a_wrong_type_is_a_consumer_error(
    broker, queue_name, make_config
):
    """drop_invalid_messages = false: the message is requeued and counts toward max_errors."""
    config = make_config(message_types=["a"], drop_invalid_messages=False, max_errors=1)
    consumer = await fedmq.consume(lambda m: None, config=config)
    broker.publish(queue_name, ["x"], type="b")
    with pytest.raises(CallbackError) as caught:
        await consumer.result
    assert "'b' is not one of" in str(caught.value)
    assert broker.counts(queue_name) == (1, 0)


# --- ConsumerError, unexpected exceptions and the error window -----------------------------


@pytest_twisted.ensureDeferred
async def test_consumer_errors_requeue_and_stop_the_consumer_at_max_errors(
    broker, queue_name, make_config
):
    """Each ConsumerError requeues its message; the third within the window stops the consumer."""
    runs: list[Any] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.body)
        raise fedmq.ConsumerError("the database is down")

    config = make_config(max_errors=3, error_window=60)
    consumer = await fedmq.consume(callback, config=config)
    broker.publish(queue_name, ["x"])
    with pytest.raises(CallbackError) as caught:
        await consumer.result
    assert len(runs) == 3
    assert "3 consumer errors within 60 s" in str(caught.value)
    assert exit_codes.exit_code_for(caught.value) == exit_codes.CALLBACK_FAILED
    assert broker.counts(queue_name) == (1, 0)  # requeued, nothing lost
    assert consumer.counts["failed"] == 3


@pytest.mark.parametrize(("concurrency", "messages"), [(1, 5), (4, 100)])
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest_twisted.ensureDeferred
async def test_no_callback_starts_after_max_errors_stops_the_consumer(
    broker, queue_name, make_config, kind: str, concurrency: int, messages: int
):
    """With max_errors 3, prefetched messages are not run once the third error is counted.

    Only callbacks already running then may finish (one per other worker);
    every message goes back to the queue.
    """
    runs: list[Any] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.body)
        raise RuntimeError("the database is down")

    async def async_callback(message: fedmq.Message) -> None:
        callback(message)

    config = make_config(max_errors=3, error_window=60, concurrency=concurrency)
    consumer = await fedmq.consume(callback if kind == "sync" else async_callback, config=config)
    broker.publish(queue_name, [f"m{n}" for n in range(messages)])
    with pytest.raises(CallbackError) as caught:
        await consumer.result
    assert "3 consumer errors within 60 s" in str(caught.value)
    assert len(runs) <= 3 + concurrency - 1
    if concurrency == 1:
        assert len(runs) == 3
    assert broker.counts(queue_name) == (messages, 0)


@pytest_twisted.ensureDeferred
async def test_errors_spread_wider_than_the_window_do_not_stop_the_consumer(
    broker, queue_name, make_config
):
    """Two errors 0.6 s apart with max_errors 2 and a 0.5 s window: the consumer goes on."""
    failing = {"first", "second"}

    def callback(message: fedmq.Message) -> None:
        if message.body in failing:
            failing.discard(message.body)
            raise RuntimeError(f"{message.body} failed")

    consumer = await fedmq.consume(callback, config=make_config(max_errors=2, error_window=0.5))
    broker.publish(queue_name, ["first"])
    await wait_for(lambda: consumer.counts["acked"] == 1, what="the first message's second run")
    await task.deferLater(reactor, 0.6, lambda: None)  # the first error leaves the window
    broker.publish(queue_name, ["second"])
    await wait_for(lambda: consumer.counts["acked"] == 2, what="the second message's second run")
    assert consumer.state == "consuming"
    assert consumer.counts["failed"] == 2
    await consumer.cancel()
    await consumer.result


@pytest_twisted.ensureDeferred
async def test_with_max_errors_1_the_first_unexpected_exception_stops_the_consumer(
    broker, queue_name, make_config
):
    """fedora-messaging's behaviour: one unexpected exception, the message requeued, exit 5."""
    runs: list[Any] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.body)
        if message.body == "poison":
            raise KeyError("customer")

    consumer = await fedmq.consume(callback, config=make_config(max_errors=1))
    broker.publish(queue_name, ["poison"])
    with pytest.raises(CallbackError) as caught:
        await consumer.result
    assert runs == ["poison"]
    assert str(caught.value) == "The callback raised KeyError: 'customer'"
    assert isinstance(caught.value.__cause__, KeyError)
    assert broker.counts(queue_name) == (1, 0)


@pytest_twisted.ensureDeferred
async def test_nack_requeues_and_the_message_comes_back(broker, queue_name, make_config):
    """Nack puts the message back at once; the next run can accept it."""
    runs: list[bool] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.redelivered)
        if not message.redelivered:
            raise fedmq.Nack

    consumer = await fedmq.consume(callback, config=make_config())
    broker.publish(queue_name, ["x"])
    await wait_for(lambda: len(runs) == 2, what="the second run")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    await consumer.cancel()
    assert runs == [False, True]


@pytest_twisted.ensureDeferred
async def test_a_retry_queue_deleted_while_consuming_is_declared_again(
    broker, queue_name, make_config, rabbit
):
    """Retry into a deleted wait queue: the consumer reconnects, redeclares, and retries."""
    attempts: list[int] = []

    def callback(message: fedmq.Message) -> None:
        attempts.append(message.attempt)
        if message.attempt == 1:
            raise fedmq.Retry("later")

    wait_queue = f"{queue_name}.retry.0.2s"
    config = make_config(retry={"delays": [0.2]})
    consumer = await fedmq.consume(callback, config=config)
    [(channel_before, _)] = broker.consumers(queue_name)
    rabbit.ctl("delete_queue", wait_queue)
    with pytest.raises(LookupError):
        broker.counts(wait_queue)
    broker.publish(queue_name, ["x"])
    await wait_for(lambda: attempts[-1:] == [2], what="the retried run")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the message acked")
    assert broker.counts(wait_queue) == (0, 0)  # declared again
    [(channel_after, _)] = broker.consumers(queue_name)
    await consumer.cancel()
    assert attempts[0] == 1
    assert channel_after != channel_before  # consuming again, on a new channel


@pytest_twisted.ensureDeferred
async def test_a_drop_exchange_with_no_queue_bound_parks_the_message(
    broker, queue_name, make_config
):
    """An unbound drop exchange cannot take the copy; the message is parked, not looped."""
    drops = f"{queue_name}-drops"
    broker.declare_exchange(drops)

    runs: list[Any] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.body)
        raise fedmq.Drop("bad")

    consumer = await fedmq.consume(callback, config=make_config(drop_exchange=drops))
    broker.publish(queue_name, ["x"])
    dead = queue_name + ".dead"
    await wait_for(lambda: broker.ready(dead) == 1, what="the parked message")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="the original settled")
    await consumer.cancel()
    assert runs == ["x"]  # once: not requeued to fail again
    [(properties, body)] = broker.take_all(dead)
    assert body == b'"x"'
    assert "bad" in properties.headers["X-Dropped-Reason"]


@pytest_twisted.ensureDeferred
async def test_nack_drop_retry_and_undecodable_bodies_do_not_count_toward_max_errors(
    broker, queue_name, make_config
):
    """With max_errors = 1, four verdicts on messages leave the consumer running; the first
    real consumer error then stops it.
    """
    runs: list[str] = []

    def callback(message: fedmq.Message) -> None:
        runs.append(message.body)
        if message.body == "nack" and not message.redelivered:
            raise fedmq.Nack
        if message.body == "drop":
            raise fedmq.Drop("never")
        if message.body == "retry" and message.attempt == 1:
            raise fedmq.Retry("later")
        if message.body == "error":
            raise fedmq.ConsumerError("the database is down")

    config = make_config(max_errors=1, retry={"delays": [0.2], "max_attempts": 3})
    consumer = await fedmq.consume(callback, config=config)
    broker.publish(queue_name, ["nack", "drop", "retry"])
    broker.publish(queue_name, [b"{not json"])
    broker.publish(queue_name, ["fine"])
    dead = queue_name + ".dead"
    await wait_for(lambda: broker.counts(dead) == (1, 0), what="the undecodable body parked")
    await wait_for(lambda: runs.count("retry") == 2, what="the retried message's second run")
    await wait_for(lambda: broker.counts(queue_name) == (0, 0), what="every message settled")
    assert not consumer.result.called, "a verdict on a message stopped the consumer"
    assert sorted(runs) == ["drop", "fine", "nack", "nack", "retry", "retry"]
    # The positive control: a consumer error does count, and with max_errors = 1 it stops.
    broker.publish(queue_name, ["error"])
    with pytest.raises(CallbackError):
        await consumer.result
    assert broker.counts(queue_name) == (1, 0)
