"""The seam between fedmq and pika: the only module of fedmq that imports pika.

pika's Twisted adapter is deprecated on pika's main branch, so everything
fedmq needs from an AMQP client goes through :class:`AMQPConnection` and
:class:`AMQPChannel` here, in fedmq's own terms: Deferreds, fedmq's
exceptions and fedmq's :class:`~fedmq.message.Properties`. Swapping the client
means rewriting this one module.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import pika
import pika.credentials
import pika.data
import pika.exceptions
import pika.spec
from OpenSSL.SSL import Error as TLSError
from pika.adapters.twisted_connection import TwistedChannel, TwistedProtocolConnection
from twisted.internet import defer, endpoints, error, protocol, ssl
from twisted.python.failure import Failure

from fedmq._config_checks import uses_tls
from fedmq._deferreds import chain
from fedmq._frames import PublishEncoder
from fedmq._idle import IdleTimeout
from fedmq.config import Config, ExchangeConfig, QueueConfig, redact_url
from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    ConfigurationError,
    ConnectionFailed,
    PublishConnectionLost,
    PublishNacked,
    PublishReturned,
)
from fedmq.message import PROPERTY_NAMES, Properties

log = logging.getLogger(__name__)

#: Called on the reactor thread for each delivery:
#: (delivery_tag, redelivered, exchange, routing_key, properties, body).
#: ``properties`` carries the attributes of :class:`fedmq.message.Properties`.
DeliveryHandler = Callable[[int, bool, str, str, Any, bytes], None]


class BrokerSilent(error.ConnectionLost):
    """fedmq gave up a connection on which the broker had gone silent.

    Nothing came from the broker for two heartbeat intervals: a dead peer, or a
    network that drops everything.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no data from the broker"


def translate_error(reason: BaseException | Failure | None, where: str) -> Exception:
    """Turn a pika or Twisted error into the fedmq exception a user can act on.

    Args:
        reason: what pika or Twisted reported.
        where: the broker's address (password-free) or the object concerned.

    """
    if isinstance(reason, Failure):
        reason = reason.value
    for kinds, translate in _TRANSLATIONS:
        if isinstance(reason, kinds):
            return translate(reason, where)
    if isinstance(reason, Exception):
        return ConnectionFailed(f"The connection to the broker at {where} failed: {reason}")
    return ConnectionFailed(f"The connection to the broker at {where} failed")


def _connection_closed(reason: Any, where: str) -> Exception:
    code, text = reason.reply_code, reason.reply_text
    if code in (403, 530):
        return AuthenticationFailed(f"The broker at {where} refused access: {code} {text}")
    return ConnectionFailed(f"The broker at {where} closed the connection: {code} {text}")


def _channel_closed(reason: Any, _where: str) -> Exception:
    code, text = reason.reply_code, reason.reply_text
    return BrokerError(f"The broker closed the channel: {code} {text}", code, text)


def _tls_failed(reason: TLSError, where: str) -> Exception:
    # OpenSSL's last reason is the telling one ("certificate verify failed").
    details = reason.args[0] if reason.args else None
    if isinstance(details, list) and details and isinstance(details[-1], tuple):
        tls_reason = str(details[-1][-1])
    else:
        tls_reason = str(reason) or "TLS error"
    return ConnectionFailed(
        f"The TLS handshake with the broker at {where} failed: {tls_reason} (check "
        "tls.ca_cert, and that the host name in amqp_url is in the broker's certificate)"
    )


def _reason_text(reason: BaseException) -> str:
    text = str(reason.args[-1]) if reason.args else ""
    return text or type(reason).__name__


def _could_not_connect(why: str) -> Callable[[BaseException, str], Exception]:
    return lambda _reason, where: ConnectionFailed(
        f"Could not connect to the broker at {where}: {why}"
    )


#: What each error becomes, in order: the first entry whose classes match wins.
_TRANSLATIONS: tuple[
    tuple[type[BaseException] | tuple[type[BaseException], ...], Callable[[Any, str], Exception]],
    ...,
] = (
    ((AuthenticationFailed, ConnectionFailed, BrokerError), lambda reason, _where: reason),
    (
        pika.exceptions.ProbableAuthenticationError,
        lambda reason, where: AuthenticationFailed(
            f"The broker at {where} refused the credentials (check the user name and "
            f"password in amqp_url): {_reason_text(reason)}"
        ),
    ),
    (
        pika.exceptions.ProbableAccessDeniedError,
        lambda reason, where: AuthenticationFailed(
            f"The broker at {where} refused access to the virtual host (it is missing or "
            f"the user has no permission on it): {_reason_text(reason)}"
        ),
    ),
    (
        pika.exceptions.AuthenticationError,
        lambda reason, where: AuthenticationFailed(
            f"The broker at {where} does not offer the authentication mechanism "
            f"fedmq asked for: {reason}"
        ),
    ),
    (pika.exceptions.ConnectionClosed, _connection_closed),
    (pika.exceptions.ChannelClosed, _channel_closed),
    (
        pika.exceptions.NackError,
        lambda _reason, where: PublishNacked(
            f"The broker refused (nacked) the message published to {where}"
        ),
    ),
    (
        pika.exceptions.UnroutableError,
        lambda _reason, where: PublishReturned(
            f"The broker could not route the mandatory message published to {where} to any queue"
        ),
    ),
    (TLSError, _tls_failed),
    (error.ConnectionRefusedError, _could_not_connect("connection refused")),
    ((error.TimeoutError, defer.TimeoutError), _could_not_connect("timed out")),
    (error.DNSLookupError, _could_not_connect("unknown host")),
    (
        BrokerSilent,
        lambda reason, where: ConnectionFailed(
            f"The connection to the broker at {where} was lost: {reason}"
        ),
    ),
    (
        (error.ConnectionDone, error.ConnectionLost),
        lambda _reason, where: ConnectionFailed(
            f"The connection to the broker at {where} was lost"
        ),
    ),
    (
        pika.exceptions.AMQPError,
        lambda reason, where: ConnectionFailed(
            f"The connection to the broker at {where} failed: {reason!r}"
        ),
    ),
)


class _Protocol(TwistedProtocolConnection):  # type: ignore[misc]
    """pika's Twisted protocol, keeping why a handshake failed, giving up on silence.

    It keeps the real reason a handshake failed, and gives up on a broker that
    has gone silent.

    pika replaces the handshake's error (a refused password, a missing vhost)
    with a bare ``AMQPConnectionError``; fedmq needs the original to tell the
    user what to fix.

    Once open, with heartbeats negotiated, a connection on which nothing
    arrives for two heartbeat intervals is aborted, as the AMQP specification
    says a peer may: the broker sends a heartbeat at least every half interval
    whenever it has nothing else to send, so such silence means the broker or
    the network is gone. pika's own check takes up to twice ``heartbeat + 5``.
    """

    def __init__(self, parameters: pika.URLParameters, reactor: Any) -> None:
        super().__init__(parameters, custom_reactor=reactor)
        self._idle = IdleTimeout(reactor, self._broker_silent)
        self._silence: BrokerSilent | None = None

    def dataReceived(self, data: bytes) -> None:
        self._idle.received()
        self._impl.data_received(data)

    def _on_connection_ready(self, connection: Any) -> None:
        # pika has stored the heartbeat agreed in connection.tune-ok; 0 is off.
        heartbeat = self._impl.params.heartbeat
        if heartbeat:
            self._idle.start(2 * heartbeat)
        super()._on_connection_ready(connection)

    def _broker_silent(self) -> None:
        self._silence = BrokerSilent(
            f"no data from the broker for {self._idle.timeout:g} s (2 heartbeat intervals)"
        )
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._idle.stop()
        # When the broker closes the connection (connection.close: a refused
        # login, CONNECTION_FORCED), pika keeps its reason pending and then,
        # on the TCP close that follows, overwrites it with ConnectionDone.
        # Hand pika the broker's reason instead. Over TLS the close that follows
        # the broker's may come as ConnectionLost; the broker's own close frame
        # still says why.
        pending = getattr(self._impl, "_error", None)
        if self._silence is not None:
            reason = Failure(self._silence)
        elif (
            pending is not None
            and not isinstance(pending, pika.exceptions.ConnectionClosedByClient)
            and (
                reason.check(error.ConnectionDone)
                or isinstance(pending, pika.exceptions.ConnectionClosedByBroker)
            )
        ):
            reason = Failure(pending)
        super().connectionLost(reason)

    def _on_connection_failed(self, _connection: Any, error_message: Any = None) -> None:
        d: Any = self.ready  # type: ignore[has-type]
        self.ready = None
        if d:
            d.errback(error_message or pika.exceptions.AMQPConnectionError("handshake failed"))


def connection_parameters(config: Config, url: str | None = None) -> pika.URLParameters:
    """The pika parameters for ``url`` (default: the config's), with fedmq's settings."""
    url = url or config.amqp_url
    params = pika.URLParameters(url)
    params.heartbeat = config.heartbeat
    params.client_properties = dict(config.client_properties)
    if uses_tls(url) and config.tls is not None and config.tls.uses_external_auth:
        # A client certificate authenticates, whatever user the URL names.
        params.credentials = pika.credentials.ExternalCredentials()
    return params


class _QuietFactory(protocol.Factory):
    """Hands out one protocol, as ``endpoints.connectProtocol`` does, but quietly.

    It does not log "Starting factory" and "Stopping factory" at every connection.
    """

    noisy = False

    def __init__(self, built: Any) -> None:
        self._built = built

    def buildProtocol(self, addr: Any) -> Any:
        del addr  # the one protocol serves whatever the address
        return self._built


#: What pika reports after a close or abort fedmq asked for.
_CLOSED_AS_ASKED = (
    pika.exceptions.ConnectionClosedByClient,
    error.ConnectionDone,
    error.ConnectionAborted,
)


class AMQPConnection:
    """One open AMQP connection.

    Attributes:
        closed: a Deferred that fires, with a fedmq exception (or None for a
            close fedmq asked for), when the connection ends.
        address: ``host:port`` of the broker, with no credentials.

    """

    def __init__(self, protocol: Any, address: str) -> None:
        self._protocol = protocol
        self.address = address
        self.closed: defer.Deferred[Exception | None] = defer.Deferred()
        self._closing = False
        protocol.closed.addBoth(self._on_closed)

    @classmethod
    def connect(
        cls, config: Config, reactor: Any, url: str | None = None
    ) -> defer.Deferred[AMQPConnection]:
        """Connect and complete the AMQP handshake.

        Args:
            config: the settings (TLS, heartbeat, timeouts, client properties).
            reactor: the reactor to run on (also handed to pika for its timers).
            url: the broker to connect to; the config's ``amqp_url`` by default.

        Returns:
            A Deferred firing with the connection, or failing with
            :class:`AuthenticationFailed` or :class:`ConnectionFailed`.

        """
        url = url or config.amqp_url
        parts = urlsplit(url)
        host = parts.hostname or "localhost"
        # An amqps:// URL means TLS; the [tls] table only says how (so one
        # file serves a plain local broker and a TLS remote one).
        tls = uses_tls(url)
        port = parts.port or (5671 if tls else 5672)
        address = f"{host}:{port}"
        params = connection_parameters(config, url)
        protocol = _Protocol(params, reactor)
        endpoint: Any
        if tls:
            endpoint = endpoints.SSL4ClientEndpoint(
                reactor, host, port, tls_options(config, host), timeout=config.connect_timeout
            )
        else:
            endpoint = endpoints.TCP4ClientEndpoint(
                reactor, host, port, timeout=config.connect_timeout
            )

        d = endpoint.connect(_QuietFactory(protocol))

        def handshake(_: Any) -> Any:
            # Settlements and cancels are small frames: without NODELAY the
            # last of a burst can wait ~40 ms for the broker's delayed ACK.
            transport = protocol.transport
            if transport is not None and hasattr(transport, "setTcpNoDelay"):
                transport.setTcpNoDelay(True)
            ready: Any = protocol.ready
            ready.addTimeout(config.connect_timeout, reactor, _abort_handshake(protocol))
            return ready

        d.addCallback(handshake)
        d.addCallback(lambda _: cls(protocol, address))

        def failed(failure: Failure) -> Failure:
            return Failure(translate_error(failure, address))

        d.addErrback(failed)
        log.debug("Connecting to %s", redact_url(url))
        return d  # type: ignore[no-any-return]

    def _on_closed(self, reason: Any) -> None:
        # Closed (connection.close, then the TCP close that follows the broker's
        # close-ok) or dropped (abort) as fedmq asked: no error.
        if self._closing and (reason is None or isinstance(reason, _CLOSED_AS_ASKED)):
            self.closed.callback(None)
        else:
            self.closed.callback(translate_error(reason, self.address))

    @property
    def is_open(self) -> bool:
        return bool(self._protocol.is_open)

    def channel(self) -> defer.Deferred[AMQPChannel]:
        """Open a new channel."""
        return self._protocol.channel().addCallback(AMQPChannel)  # type: ignore[no-any-return]

    def close(self) -> defer.Deferred[Exception | None]:
        """Close the connection; the returned Deferred fires once it is closed."""
        self._closing = True
        if self._protocol.is_open:
            self._protocol.close()
        elif self._protocol.transport is not None and not self.closed.called:
            self._protocol.transport.abortConnection()
        return chain(self.closed)

    def abort(self) -> None:
        """Drop the TCP connection without an AMQP close (the broker requeues)."""
        self._closing = True
        if self._protocol.transport is not None:
            self._protocol.transport.abortConnection()

    def add_blocked_callbacks(
        self, on_blocked: Callable[[str], None], on_unblocked: Callable[[], None]
    ) -> None:
        """Be told of connection.blocked (with the broker's reason) and unblocked."""
        # pika's Twisted adapter exposes no public handle on its connection.
        impl = self._protocol._impl  # noqa: SLF001
        impl.add_on_connection_blocked_callback(
            lambda _c, frame: on_blocked(str(getattr(frame.method, "reason", "")))
        )
        impl.add_on_connection_unblocked_callback(lambda _c, _frame: on_unblocked())


def _abort_handshake(protocol: Any) -> Callable[[Any, float], NoReturn]:
    def on_timeout(_result: Any, timeout: float) -> NoReturn:
        # What this returns replaces the handshake's result: it must stay a failure.
        if protocol.transport is not None:
            protocol.transport.abortConnection()
        raise defer.TimeoutError(f"the AMQP handshake took more than {timeout:g} s")

    return on_timeout


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


def tls_options(config: Config, host: str) -> Any:
    """Twisted's client TLS options: every CA of ``tls.ca_cert`` trusted, the host name checked.

    Raises:
        ConfigurationError: a ``[tls]`` file cannot be read or holds no usable PEM data.

    """
    tls = config.tls
    trust_root: Any = None
    client_cert: Any = None
    if tls is not None and tls.ca_cert:
        pem = _read_tls_file(config, "ca_cert", tls.ca_cert)
        try:
            authorities = [
                ssl.Certificate.loadPEM(found.group(0)) for found in _PEM_CERTIFICATE.finditer(pem)
            ]
        except Exception as exc:  # OpenSSL's errors carry no common base of use here
            problem = f"has a bad certificate: {exc}"
            raise _tls_file_error(config, "ca_cert", tls.ca_cert, problem) from None
        if not authorities:
            raise _tls_file_error(config, "ca_cert", tls.ca_cert, "holds no PEM certificate")
        trust_root = ssl.trustRootFromCertificates(authorities)
    if tls is not None and tls.certfile and tls.keyfile:
        pair = _read_tls_file(config, "certfile", tls.certfile) + b"\n"
        pair += _read_tls_file(config, "keyfile", tls.keyfile)
        try:
            client_cert = ssl.PrivateCertificate.loadPEM(pair)
        except Exception as exc:
            problem = f"and tls.keyfile do not make a key pair: {exc}"
            raise _tls_file_error(config, "certfile", tls.certfile, problem) from None
    return ssl.optionsForClientTLS(host, trustRoot=trust_root, clientCertificate=client_cert)


def _read_tls_file(config: Config, key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise _tls_file_error(config, key, path, f"cannot be read: {error.strerror}") from None


def _tls_file_error(config: Config, key: str, path: str, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{config.source}: tls.{key}: {path} {problem}")


class AMQPChannel:
    """One AMQP channel: declarations, consuming, settling and publishing."""

    def __init__(self, channel: TwistedChannel) -> None:
        self._twisted = channel
        # pika's Twisted adapter exposes no public handle on its channel.
        self._impl = channel._channel  # noqa: SLF001
        # Bound once: settling is on the per-message path.
        self.ack: Callable[[int, bool], None] = self._impl.basic_ack
        self.closed: defer.Deferred[BrokerError | None] = defer.Deferred()
        self._closing = False
        self._confirming = False
        self._cancel_handlers: dict[str, Callable[[], None]] = {}
        # Made on the first send(): the connection's frame size is known by then.
        self._encoder: PublishEncoder | None = None
        self._emit: Callable[[tuple[bytes]], None] = _no_emit
        self._impl.add_on_close_callback(self._on_closed)
        self._impl.add_on_cancel_callback(self._on_broker_cancel)

    @property
    def is_open(self) -> bool:
        return bool(self._impl.is_open)

    def _on_closed(self, _channel: Any, reason: Any) -> None:
        if self._closing or isinstance(reason, pika.exceptions.ChannelClosedByClient):
            result: BrokerError | None = None
        elif isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            result = BrokerError(
                f"The broker closed the channel: {reason.reply_code} {reason.reply_text}",
                reason.reply_code,
                reason.reply_text,
            )
        else:
            result = BrokerError(f"The channel closed: {reason}")
        if not self.closed.called:
            self.closed.callback(result)

    def _on_broker_cancel(self, frame: Any) -> None:
        handler = self._cancel_handlers.pop(frame.method.consumer_tag, None)
        if handler is not None:
            handler()

    def declare_exchange(
        self, exchange: ExchangeConfig, passive: bool = False
    ) -> defer.Deferred[Any]:
        return self._twisted.exchange_declare(  # type: ignore[no-any-return]
            exchange=exchange.name,
            exchange_type=exchange.type,
            passive=passive,
            durable=exchange.durable,
            auto_delete=exchange.auto_delete,
            arguments=dict(exchange.arguments),
        )

    def declare_queue(self, queue: QueueConfig, passive: bool = False) -> defer.Deferred[str]:
        """Declare a queue; fires with its name (the broker's choice for ``""``)."""
        d = self._twisted.queue_declare(
            queue=queue.name,
            passive=passive,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=dict(queue.arguments),
        )
        return d.addCallback(lambda frame: frame.method.queue)  # type: ignore[no-any-return]

    def queue_counts(self, queue: str) -> defer.Deferred[tuple[int, int]]:
        """(messages ready, consumers) of an existing queue, by a passive declare."""
        d = self._twisted.queue_declare(queue=queue, passive=True)
        return d.addCallback(  # type: ignore[no-any-return]
            lambda frame: (frame.method.message_count, frame.method.consumer_count)
        )

    def bind(
        self, queue: str, exchange: str, routing_key: str, arguments: Mapping[str, Any]
    ) -> defer.Deferred[Any]:
        return self._twisted.queue_bind(  # type: ignore[no-any-return]
            queue=queue, exchange=exchange, routing_key=routing_key, arguments=dict(arguments)
        )

    def qos(self, prefetch_count: int, prefetch_size: int = 0) -> defer.Deferred[Any]:
        return self._twisted.basic_qos(  # type: ignore[no-any-return]
            prefetch_count=prefetch_count, prefetch_size=prefetch_size
        )

    def consume(
        self,
        queue: str,
        on_delivery: DeliveryHandler,
        on_cancelled: Callable[[], None],
        arguments: Mapping[str, Any] | None = None,
    ) -> defer.Deferred[str]:
        """Start consuming ``queue``; fires with the consumer tag.

        Deliveries go straight to ``on_delivery`` on the reactor thread, with
        no Deferred or queue in between (this is the per-message path).
        ``on_cancelled`` is called if the broker cancels the consumer.
        ``arguments`` are the consume's (``x-priority``, say).
        """
        d: defer.Deferred[str] = defer.Deferred()

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            on_delivery(
                method.delivery_tag,
                method.redelivered,
                method.exchange,
                method.routing_key,
                properties,
                body,
            )

        def on_ok(frame: Any) -> None:
            tag = frame.method.consumer_tag
            self._cancel_handlers[tag] = on_cancelled
            d.callback(tag)

        def on_close(result: Any) -> Any:
            if not d.called:
                d.errback(BrokerError(f"The channel closed before consuming from {queue!r}"))
            return result

        self.closed.addBoth(on_close)
        self._impl.basic_consume(
            queue,
            on_message,
            auto_ack=False,
            arguments=dict(arguments) if arguments else None,
            callback=on_ok,
        )
        return d

    def cancel(self, consumer_tag: str) -> defer.Deferred[Any]:
        """Stop a consumer (basic.cancel); fires once the broker confirms."""
        self._cancel_handlers.pop(consumer_tag, None)
        if not self._impl.is_open:
            return defer.succeed(None)
        d: defer.Deferred[Any] = defer.Deferred()
        self._impl.basic_cancel(consumer_tag, callback=lambda _frame: d.callback(None))

        def on_close(result: Any) -> Any:
            if not d.called:
                d.callback(None)
            return result

        self.closed.addBoth(on_close)
        return d

    def nack(self, delivery_tag: int, requeue: bool = True) -> None:
        """Return one delivery to its queue (or dead-letter it, without requeue)."""
        self._impl.basic_nack(delivery_tag, multiple=False, requeue=requeue)

    def reject(self, delivery_tag: int) -> None:
        """Reject one delivery without requeueing it."""
        self._impl.basic_reject(delivery_tag, requeue=False)

    def get(self, queue: str) -> defer.Deferred[tuple[int, bool, str, str, Any, bytes, int] | None]:
        """basic.get: fires with one message from ``queue``, or None when it is empty.

        The message comes as (tag, redelivered, exchange, routing_key,
        properties, body, messages_left).
        """
        d = self._twisted.basic_get(queue=queue, auto_ack=False)

        def unpack(result: Any) -> Any:
            if result is None:
                return None
            m = result.method
            return (
                m.delivery_tag,
                m.redelivered,
                m.exchange,
                m.routing_key,
                result.properties,
                result.body,
                m.message_count,
            )

        return d.addCallback(unpack)  # type: ignore[no-any-return]

    def confirm_select(self) -> defer.Deferred[Any]:
        """Turn on publisher confirms on this channel."""
        if self._confirming:
            return defer.succeed(None)
        self._confirming = True
        return self._twisted.confirm_delivery()  # type: ignore[no-any-return]

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> defer.Deferred[None]:
        """Publish one message; with confirms on, fires on the broker's ack.

        Fails with :class:`PublishNacked` or :class:`PublishReturned`.
        """
        props = pika.BasicProperties(**{name: getattr(properties, name) for name in PROPERTY_NAMES})
        where = f"exchange {exchange!r} with routing key {routing_key!r}"
        d = self._twisted.basic_publish(
            exchange=exchange,
            routing_key=routing_key,
            body=body,
            properties=props,
            mandatory=mandatory,
        )
        d.addCallbacks(lambda _: None, lambda failure: Failure(_publish_error(failure, where)))
        return d  # type: ignore[no-any-return]

    def track_confirms(
        self,
        on_confirm: Callable[[bool, int, bool], None],
        on_return: Callable[[str | None], None],
    ) -> defer.Deferred[Any]:
        """Turn on publisher confirms, reported to fedmq's own bookkeeping.

        Unlike :meth:`confirm_select`, no Deferred is made per message: for
        use with :meth:`send` only.

        Args:
            on_confirm: called with (acked, delivery tag, multiple) for each
                basic.ack (acked True) and basic.nack (False).
            on_return: called with the ``message_id`` of each message the
                broker returns (mandatory and unroutable), before its confirm.

        """
        self._confirming = True
        ack_class = pika.spec.Basic.Ack

        def on_ack_nack(frame: Any) -> None:
            method = frame.method
            on_confirm(isinstance(method, ack_class), method.delivery_tag, method.multiple)

        self._impl.add_on_return_callback(
            lambda _channel, _method, properties, _body: on_return(properties.message_id)
        )
        d: defer.Deferred[Any] = defer.Deferred()
        self._impl.confirm_delivery(ack_nack_callback=on_ack_nack, callback=d.callback)
        return d

    def send(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        mandatory: bool = False,
    ) -> None:
        """Write one basic.publish; its confirm goes to :meth:`track_confirms`' callback.

        Raises:
            PublishConnectionLost: the channel is closed.

        """
        encoder = self._encoder
        if encoder is None:
            connection = self._impl.connection
            encoder = self._encoder = PublishEncoder(
                self._impl.channel_number,
                connection._body_max_length,  # noqa: SLF001 - pika's own frame limit
                pika.data.encode_table,
            )
            self._emit = connection._output_marshaled_frames  # noqa: SLF001 - pika's writer
        frames = encoder.encode(exchange, routing_key, body, properties, mandatory)
        if frames is not None and self._impl.is_open:
            self._emit((frames,))
            return
        # What the encoder leaves aside, and a closed channel: pika's own path and errors.
        p = properties
        props = pika.BasicProperties(
            p.content_type,
            p.content_encoding,
            p.headers,
            p.delivery_mode,
            p.priority,
            p.correlation_id,
            p.reply_to,
            p.expiration,
            p.message_id,
            p.timestamp,
            p.type,
            p.user_id,
            p.app_id,
            p.cluster_id,
        )
        try:
            self._impl.basic_publish(exchange, routing_key, body, props, mandatory)
        except pika.exceptions.AMQPError as error:
            raise PublishConnectionLost(
                f"The channel to publish to exchange {exchange!r} is closed: {error!r}"
            ) from None

    def close(self) -> defer.Deferred[Any]:
        """Close the channel; fires once closed. Unsettled deliveries are requeued."""
        self._closing = True
        if self._impl.is_open:
            self._impl.close()
        return chain(self.closed)


def _no_emit(_frames: tuple[bytes]) -> None:
    raise AssertionError("send() emits once its encoder is made")


def _publish_error(failure: Failure, where: str) -> Exception:
    value = failure.value
    if isinstance(value, (pika.exceptions.NackError, pika.exceptions.UnroutableError)):
        return translate_error(value, where)
    if isinstance(value, pika.exceptions.ChannelClosed):
        code, text = value.reply_code, value.reply_text
        return BrokerError(f"Publishing to {where} failed: {code} {text}", code, text)
    if isinstance(value, (pika.exceptions.AMQPError, error.ConnectionDone, error.ConnectionLost)):
        return PublishConnectionLost(
            f"The connection closed before the broker confirmed the message published "
            f"to {where}: {type(value).__name__}"
        )
    if isinstance(value, Exception):
        return value
    return BrokerError(f"Publishing to {where} failed: {value!r}")


__all__ = [
    "AMQPChannel",
    "AMQPConnection",
    "BrokerSilent",
    "DeliveryHandler",
    "connection_parameters",
    "tls_options",
    "translate_error",
]
