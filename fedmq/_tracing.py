"""OpenTelemetry traces and metrics for publishing and consuming: all of fedmq's OpenTelemetry code.

Everything here is off unless the ``otel`` extra (``opentelemetry-api``) is
installed *and* the application configured an SDK: a tracer provider or a
meter provider other than the API's default. The check is made when a
consumer opens a session and when a publish finds tracing off, so a process
without an SDK pays one function call per message and nothing more; the
worker threads and asyncio tasks then run the callback exactly as without
this module.

What is made, following the OpenTelemetry semantic conventions for RabbitMQ
(messaging conventions of semantic conventions 1.44):

- ``send {exchange}`` (PRODUCER) from a publish until the broker confirms
  it; its context goes into the message's ``traceparent`` and
  ``tracestate`` headers unless the message already carries them.
- ``process {queue}`` (CONSUMER) from the start of decoding, around the
  callback, to the settlement of the delivery (the copy's confirm, for a
  retried, parked or dropped message). It links to the context the message
  was sent in and, unless ``[tracing] link_only``, is that context's child.
  It is the current span in the worker thread or asyncio task running the
  callback, and on the reactor thread while fedmq settles the delivery.
- with ``[tracing] settle_spans``, an ``ack``, ``nack`` or ``reject`` span
  (CLIENT) per settlement, a child of the ``process`` span.
- the metrics ``messaging.client.sent.messages``,
  ``messaging.client.operation.duration`` (sends),
  ``messaging.client.consumed.messages`` and ``messaging.process.duration``,
  with the exchange (sends) or the queue (deliveries) as the destination, so
  that routing keys do not multiply the series.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq.message import Properties

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.trace import Span

_T = TypeVar("_T")

#: The headers a W3C trace context travels in.
TRACE_HEADERS = ("traceparent", "tracestate")

#: Outcome codes of fedmq._executors, by position: (fedmq outcome, settlement).
#: A retried, parked or dropped copy refines them once it is published.
_OUTCOMES = (
    ("ack", "ack"),  # ACK
    ("nack", "nack"),  # NACK
    ("drop", "reject"),  # DROP
    ("drop", "reject"),  # UNDECODABLE (parked, if it has a dead queue)
    ("nack", "nack"),  # RETURNED
    ("drop", "reject"),  # RETRY (retried, if it has retry queues)
    ("drop", "reject"),  # INVALID
    ("park", "ack"),  # PARKED
    ("nack", "nack"),  # CONSUMER_ERROR
    ("nack", "nack"),  # ERROR
    ("halt", "ack"),  # HALT
    ("deferred", "defer"),  # DEFERRED: its Settlement settles it later
)
_ERROR = 9
_HALT = 10
_COPIES = {"retried": ("retry", "ack"), "parked": ("park", "ack"), "dropped": ("drop", "reject")}

#: Bucket bounds (seconds) the conventions advise for their duration histograms.
_DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

#: True while an SDK is configured: spans and metrics are being made.
active = False
#: None until the API was looked for; False when it is not installed.
_api: Any = None
_telemetry: _Telemetry | None = None
#: Spans of deliveries whose callback ran, until the reactor settles them (by id of the delivery).
_running: dict[int, _Processing] = {}
#: Spans of the deliveries being settled in the current batch on the reactor thread.
_settling: dict[int, _Processing] = {}
_attached: list[Token[Context]] = []


class _Telemetry:
    """The tracer and the metric instruments, for one tracer and meter provider."""

    def __init__(self, api: Any, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace

        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer = trace.get_tracer("fedmq", tracer_provider=tracer_provider)
        meter = metrics.get_meter("fedmq", meter_provider=meter_provider)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Number of messages producer attempted to send to the broker.",
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Number of messages that were delivered to the application.",
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description=(
                "Duration of messaging operation initiated by a producer or consumer client."
            ),
            explicit_bucket_boundaries_advisory=list(_DURATION_BOUNDS),
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Duration of processing operation.",
            explicit_bucket_boundaries_advisory=list(_DURATION_BOUNDS),
        )
        self.api = api


def refresh() -> bool:
    """Turn tracing on if an OpenTelemetry SDK is configured now; whether it is on.

    Cheap enough to call at each consumer session and each publish made
    while it is off: when the API is missing, a global lookup; when it is
    there and no provider was set since the last answer, two more.
    """
    if not active and _api is not None and _unchanged_since_off():
        return False
    return _look_again()


def _look_again() -> bool:
    # One lazily built state per process.
    global _api, _telemetry, active, _off_providers  # noqa: PLW0603
    _off_providers = None
    if _api is False:
        return False
    if _api is None:
        try:
            from opentelemetry import metrics, propagate, trace
        except ImportError:
            _api = False
            return False
        _api = (trace, metrics, propagate)
    trace, metrics, _propagate = _api
    tracer_provider = trace.get_tracer_provider()
    meter_provider = metrics.get_meter_provider()
    configured = not _is_default(tracer_provider) or not _is_default(meter_provider)
    if configured and (
        _telemetry is None
        or _telemetry.tracer_provider is not tracer_provider
        or _telemetry.meter_provider is not meter_provider
    ):
        _telemetry = _Telemetry(_api, tracer_provider, meter_provider)
    active = configured
    if not configured:
        _off_providers = _provider_globals()
    return configured


# The API keeps the providers an application set (in code, or named by an
# OTEL_PYTHON_*_PROVIDER variable once asked for) in two module globals, None
# until then. While neither has changed since tracing was found off, it is
# still off: two attribute reads instead of the API's environment lookups,
# which cost a publish made without an SDK a few microseconds. An API that
# names them otherwise gets the full look every time.
_off_providers: tuple[Any, Any, object, object] | None = None


def _provider_globals() -> tuple[Any, Any, object, object] | None:
    """The API's modules holding the provider globals, and their values; None if not found."""
    try:
        import opentelemetry.metrics._internal as metrics_internal
        import opentelemetry.trace as trace_module
    except ImportError:  # pragma: no cover - an API laid out otherwise
        return None
    if not hasattr(trace_module, "_TRACER_PROVIDER") or not hasattr(
        metrics_internal, "_METER_PROVIDER"
    ):
        return None  # pragma: no cover - an API laid out otherwise
    return (
        trace_module,
        metrics_internal,
        trace_module._TRACER_PROVIDER,  # noqa: SLF001 - see _off_providers
        metrics_internal._METER_PROVIDER,  # noqa: SLF001 - see _off_providers
    )


def _unchanged_since_off() -> bool:
    seen = _off_providers
    if seen is None:
        return False
    trace_module, metrics_internal, tracer_provider, meter_provider = seen
    return (
        trace_module._TRACER_PROVIDER is tracer_provider  # noqa: SLF001 - see _off_providers
        and metrics_internal._METER_PROVIDER is meter_provider  # noqa: SLF001 - see _off_providers
    )


def _is_default(provider: object) -> bool:
    # The API's own providers before the application sets one: the proxies,
    # and the no-op ones an OTEL_PYTHON_*_PROVIDER variable may name.
    return type(provider).__name__ in {
        "ProxyTracerProvider",
        "NoOpTracerProvider",
        "_ProxyMeterProvider",
        "NoOpMeterProvider",
    }


class _Settings:
    """What a consumer's config says about its spans, and where its broker is."""

    __slots__ = ("link_only", "server", "settle_spans")

    def __init__(self, consumer: Any) -> None:
        config = getattr(consumer, "config", None)
        tracing = getattr(config, "tracing", None)
        self.link_only = bool(getattr(tracing, "link_only", False))
        self.settle_spans = bool(getattr(tracing, "settle_spans", False))
        self.server = _server(getattr(consumer, "broker_address", None), config)


def _server(address: str | None, config: Any) -> dict[str, Any]:
    """``server.address`` and ``server.port``: the broker's host and port, never credentials."""
    if address:
        host, _, port_text = address.rpartition(":")
        if host and port_text.isdigit():
            return {"server.address": host, "server.port": int(port_text)}
        # Not "host:port" (an in-memory broker, a test's fake): name it as it is.
        return {"server.address": address}
    urls = getattr(config, "broker_urls", None)
    if not urls:
        return {}
    parts = urlsplit(urls[0])
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return {"server.address": parts.hostname or "localhost", "server.port": port}


class _Processing:
    """A delivery's ``process`` span, from the worker to the settlement."""

    __slots__ = (
        "attributes",
        "context",
        "destination",
        "outcome",
        "settle_spans",
        "settlement",
        "span",
        "started",
    )

    def __init__(
        self,
        span: Span,
        context: Context,
        destination: str,
        attributes: dict[str, Any],
        settle_spans: bool,
    ) -> None:
        self.span = span
        self.context = context
        self.destination = destination
        self.attributes = attributes
        self.settle_spans = settle_spans
        self.started = monotonic()
        self.outcome = "nack"
        self.settlement = "nack"


class _HeaderGetter:
    """Reads a trace context from AMQP headers, whose values may arrive as bytes."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier)


class _HeaderSetter:
    def set(self, carrier: MutableMapping[str, Any], key: str, value: str) -> None:
        carrier[key] = value


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def _carried_context(headers: Any) -> Context | None:
    """The trace context a message's headers carry, or None."""
    if not headers or "traceparent" not in headers:
        return None
    _trace, _metrics, propagate = _api
    context: Context = propagate.extract(headers, getter=_GETTER)
    return context


def _message_attributes(properties: Any, attributes: dict[str, Any]) -> dict[str, Any]:
    message_id = getattr(properties, "message_id", None)
    if message_id:
        attributes["messaging.message.id"] = str(message_id)
    correlation_id = getattr(properties, "correlation_id", None)
    if correlation_id:
        attributes["messaging.message.conversation_id"] = str(correlation_id)
    return attributes


def process_destination(exchange: str, routing_key: str, queue: str) -> str:
    """``messaging.destination.name`` of a delivery: ``{exchange}:{routing key}:{queue}``.

    Empty parts are left out, and a routing key equal to the queue's name is given once.
    """
    parts = [exchange, routing_key] if routing_key != queue else [exchange]
    return ":".join(part for part in (*parts, queue) if part)


def send_destination(exchange: str, routing_key: str) -> str:
    """``messaging.destination.name`` of a publish: ``{exchange}:{routing key}``.

    Either alone when the other is empty; ``amq.default`` when both are.
    """
    return ":".join(part for part in (exchange, routing_key) if part) or "amq.default"


# --- consuming: the worker side ---------------------------------------------


def traced(run: Callable[..., _T], consumer: Any) -> Callable[..., _T]:
    """``run`` (:func:`fedmq._executors.run_sync`) inside a ``process`` span, when tracing is on.

    Returns ``run`` itself when it is off: the worker threads pay nothing.
    """
    if not refresh():
        return run
    settings = _Settings(consumer)
    attach, detach = _context_functions()

    def run_traced(callback: Any, item: Any, *args: Any) -> _T:
        processing = _start_processing(item, settings)
        token = attach(processing.context)
        try:
            return run(callback, item, *args)
        finally:
            detach(token)
            _running[id(item)] = processing

    return run_traced


def traced_async(run: Callable[..., Awaitable[_T]], consumer: Any) -> Callable[..., Awaitable[_T]]:
    """``run`` (:func:`fedmq._executors.run_async`) in a ``process`` span, when tracing is on."""
    if not refresh():
        return run
    settings = _Settings(consumer)
    attach, detach = _context_functions()

    async def run_traced(callback: Any, item: Any, *args: Any) -> _T:
        processing = _start_processing(item, settings)
        # Attached in this asyncio task's own context: the callback's awaits
        # and the tasks it creates see the span; other tasks do not.
        token = attach(processing.context)
        try:
            return await run(callback, item, *args)
        finally:
            detach(token)
            _running[id(item)] = processing

    return run_traced


def _context_functions() -> tuple[
    Callable[[Context], Token[Context]], Callable[[Token[Context]], None]
]:
    from opentelemetry import context

    return context.attach, context.detach


def _start_processing(item: Any, settings: _Settings) -> _Processing:
    from opentelemetry import trace
    from opentelemetry.context import Context

    assert _telemetry is not None  # noqa: S101 - narrows the state: tracing is on here
    tag, _redelivered, exchange, routing_key, properties, _body, queue = item
    destination = process_destination(exchange, routing_key, queue)
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": destination,
        "messaging.rabbitmq.message.delivery_tag": tag,
        **settings.server,
    }
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    _message_attributes(properties, attributes)
    carried = _carried_context(getattr(properties, "headers", None))
    links = []
    if carried is not None:
        sent = trace.get_current_span(carried).get_span_context()
        if sent.is_valid:
            links.append(trace.Link(sent))
    # A trace of its own unless the sender's context is the parent: never the
    # worker's ambient context, which belongs to no message.
    parent = carried if carried is not None and not settings.link_only else Context()
    span = _telemetry.tracer.start_span(
        f"process {queue}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
        links=links,
    )
    metric_attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.destination.name": queue,
        **settings.server,
    }
    return _Processing(
        span,
        trace.set_span_in_context(span),
        destination,
        metric_attributes,
        settings.settle_spans,
    )


# --- consuming: settlement on the reactor thread ----------------------------


def settling(item: Any, outcome: int, exc: BaseException | None) -> None:
    """The reactor thread starts settling ``item``: its span becomes current there.

    Call once per result, before fedmq acts on it; :func:`batch_settled`
    ends the spans once the batch is settled.
    """
    if not _running:
        return
    processing = _running.pop(id(item), None)
    if processing is None:
        return
    from opentelemetry import context

    if _attached:
        context.detach(_attached.pop())
    processing.outcome, processing.settlement = _OUTCOMES[outcome]
    if outcome == _HALT and getattr(exc, "requeue", False):
        processing.settlement = "nack"
    span = processing.span
    if outcome == _ERROR and exc is not None:
        from opentelemetry.trace import StatusCode

        error_type = _type_name(exc)
        span.set_attribute("error.type", error_type)
        processing.attributes["error.type"] = error_type
        span.record_exception(exc)
        span.set_status(StatusCode.ERROR, f"{error_type}: {exc}")
    _settling[id(item)] = processing
    _attached.append(context.attach(processing.context))


def republishing(item: Any, route: Any, published: defer.Deferred[_T]) -> defer.Deferred[_T]:
    """``item``'s copy along ``route`` is being published: its span ends on the confirm.

    Returns ``published``, with an observer that ends the span.
    """
    processing = _settling.pop(id(item), None) if _settling else None
    if processing is None:
        return published
    processing.outcome, processing.settlement = _COPIES.get(route[3], ("drop", "reject"))

    def confirmed(result: _T) -> _T:
        if isinstance(result, Failure):
            # The copy was refused: the original goes back to its queue.
            processing.outcome = processing.settlement = "nack"
        _end_processing(processing)
        return result

    return published.addBoth(confirmed)


def batch_settled() -> None:
    """The reactor thread settled a batch: end the spans of what it settled."""
    if not _attached:
        return
    from opentelemetry import context

    context.detach(_attached.pop())
    for processing in _settling.values():
        _end_processing(processing)
    _settling.clear()


def _end_processing(processing: _Processing) -> None:
    assert _telemetry is not None  # noqa: S101 - narrows the state: tracing is on here
    span = processing.span
    span.set_attribute("fedmq.message.outcome", processing.outcome)
    if processing.settle_spans:
        from opentelemetry import trace

        _telemetry.tracer.start_span(
            f"{processing.settlement} {processing.destination}",
            context=processing.context,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.name": processing.settlement,
                "messaging.operation.type": "settle",
                "messaging.destination.name": processing.destination,
            },
        ).end()
    span.end()
    _telemetry.consumed.add(1, processing.attributes)
    _telemetry.process_duration.record(monotonic() - processing.started, processing.attributes)


def _type_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def forget_carried_context(headers: dict[str, Any]) -> None:
    """Take the trace context out of a retried, parked or dropped copy's headers.

    The copy is sent from the ``process`` span of the original, and carries
    the context of its own ``send`` span on. Without tracing, the copy keeps
    the original's context for whoever traces further along.
    """
    if active:
        for name in TRACE_HEADERS:
            headers.pop(name, None)


# --- publishing --------------------------------------------------------------


class _Sending:
    __slots__ = ("attributes", "span", "started")

    def __init__(self, span: Span, attributes: dict[str, Any]) -> None:
        self.span = span
        self.attributes = attributes
        self.started = monotonic()


def start_send(
    exchange: str, routing_key: str, properties: Properties, connection: Any, config: Any
) -> tuple[_Sending | None, Properties]:
    """Start the ``send`` span of a publish; the properties to send, with its context.

    Returns ``(None, properties)`` when tracing is off. The properties given
    are never changed: a copy carries the context.
    """
    if not active and not refresh():
        return None, properties
    from opentelemetry import trace

    assert _telemetry is not None  # noqa: S101 - narrows the state: tracing is on here
    _trace, _metrics, propagate = _api
    server = _server(getattr(connection, "address", None), config)
    attributes: dict[str, Any] = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": send_destination(exchange, routing_key),
        **server,
    }
    if routing_key:
        attributes["messaging.rabbitmq.destination.routing_key"] = routing_key
    _message_attributes(properties, attributes)
    carried = _carried_context(properties.headers)
    parent = None
    if carried is not None and not trace.get_current_span().get_span_context().is_valid:
        parent = carried  # a message that carries a context is sent in it
    span = _telemetry.tracer.start_span(
        f"send {exchange or 'amq.default'}",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes=attributes,
    )
    if carried is None:
        properties = Properties.from_object(properties)
        headers = dict(properties.headers or {})
        propagate.inject(headers, context=trace.set_span_in_context(span), setter=_SETTER)
        properties.headers = headers
    metric_attributes = {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": exchange or "amq.default",
        **server,
    }
    return _Sending(span, metric_attributes), properties


def end_send(sending: _Sending | None, confirmed: defer.Deferred[_T]) -> defer.Deferred[_T]:
    """End the ``send`` span when the broker confirms (or the publish fails); ``confirmed``."""
    if sending is None:
        return confirmed

    def done(result: _T) -> _T:
        _finish_send(sending, result.value if isinstance(result, Failure) else None)
        return result

    return confirmed.addBoth(done)


def ending_send(sending: _Sending | None, on_ack: Callable[[Any], None]) -> Callable[[Any], None]:
    """``on_ack``, ending the ``send`` span first with the :class:`~fedmq.Ack`'s outcome."""
    if sending is None:
        return on_ack

    def done(ack: Any) -> None:
        _finish_send(sending, ack.error)
        on_ack(ack)

    return done


def _finish_send(sending: _Sending, error: BaseException | None) -> None:
    assert _telemetry is not None  # noqa: S101 - narrows the state: tracing is on here
    attributes = sending.attributes
    if error is not None:
        from opentelemetry.trace import StatusCode

        error_type = _type_name(error)
        attributes = {**attributes, "error.type": error_type}
        sending.span.set_attribute("error.type", error_type)
        sending.span.set_status(StatusCode.ERROR, str(error))
    sending.span.end()
    _telemetry.sent.add(1, attributes)
    _telemetry.operation_duration.record(monotonic() - sending.started, attributes)


def in_caller_context(send: Callable[[], _T]) -> Callable[[], _T]:
    """``send``, to run on the reactor thread in the trace context of the thread calling this.

    A publish from a sync callback's worker thread is made on the reactor
    thread; this carries the callback's current span over. ``send`` itself
    when tracing is off.
    """
    if not active and not refresh():
        return send
    context = contextvars.copy_context()
    return lambda: context.run(send)


# --- logging -----------------------------------------------------------------


def log_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for a log line; empty without one."""
    if not active:
        return {}
    from opentelemetry import trace

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    return {
        "trace_id": format(span_context.trace_id, "032x"),
        "span_id": format(span_context.span_id, "016x"),
    }
