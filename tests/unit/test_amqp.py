"""The pika seam, fedmq/_amqp.py, in memory: a MemoryReactorClock for time and the
network, a FakeBroker speaking AMQP frames, an in-memory TLS handshake. No broker,
no sockets, no sleeps.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pika.credentials
import pika.exceptions
import pika.spec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer, error, ssl
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from fedmq._amqp import (
    AMQPConnection,
    BrokerSilent,
    connection_parameters,
    tls_options,
    translate_error,
)
from fedmq.config import Config, config_from_mapping
from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    ConfigurationError,
    ConnectionFailed,
    PublishNacked,
    PublishReturned,
)
from tests.unit.fakes import FakeBroker

WHERE = "rabbit.example.com:5672"
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def make_config(**keys: Any) -> Config:
    return config_from_mapping({"amqp_url": URL, **keys}, source="test.toml")


def connect(reactor: MemoryReactorClock, config: Config) -> tuple[list[Any], FakeBroker]:
    """Start connecting; what the connect Deferred fired with (so far), and the broker's end."""
    outcome: list[Any] = []
    AMQPConnection.connect(config, reactor).addBoth(outcome.append)
    return outcome, FakeBroker(reactor)


def open_connection(
    config: Config, broker_heartbeat: int = 60
) -> tuple[MemoryReactorClock, FakeBroker, AMQPConnection, list[Any]]:
    """An open connection; also what its ``closed`` Deferred fired with (so far)."""
    reactor = MemoryReactorClock()
    outcome, broker = connect(reactor, config)
    broker.open(heartbeat=broker_heartbeat)
    [connection] = outcome
    assert isinstance(connection, AMQPConnection), connection
    return reactor, broker, connection, record(connection.closed)


def record(d: defer.Deferred[Any]) -> list[Any]:
    """What ``d`` fires with (so far), leaving its result as it was for later callbacks."""
    seen: list[Any] = []

    def keep(result: Any) -> Any:
        seen.append(result)
        return result

    d.addBoth(keep)
    return seen


# --- translate_error ------------------------------------------------------------------

TLS_VERIFY_FAILED = SSL.Error([("SSL routines", "", "certificate verify failed")])
TLS_HINT = "(check tls.ca_cert, and that the host name in amqp_url is in the broker's certificate)"

#: (what pika or Twisted reported, the fedmq exception class, what its message says).
TRANSLATIONS = [
    (
        pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED - Login was refused"),
        AuthenticationFailed,
        (
            f"The broker at {WHERE} refused the credentials (check the user name and password "
            "in amqp_url): ACCESS_REFUSED - Login was refused"
        ),
    ),
    (
        pika.exceptions.ProbableAuthenticationError(),
        AuthenticationFailed,
        (
            f"The broker at {WHERE} refused the credentials (check the user name and password "
            "in amqp_url): ProbableAuthenticationError"
        ),
    ),
    (
        pika.exceptions.ProbableAccessDeniedError("NOT_ALLOWED - vhost /x not found"),
        AuthenticationFailed,
        (
            f"The broker at {WHERE} refused access to the virtual host (it is missing or the "
            "user has no permission on it): NOT_ALLOWED - vhost /x not found"
        ),
    ),
    (
        pika.exceptions.AuthenticationError("EXTERNAL"),
        AuthenticationFailed,
        (
            f"The broker at {WHERE} does not offer the authentication mechanism fedmq asked "
            "for: EXTERNAL"
        ),
    ),
    (
        pika.exceptions.ConnectionClosedByBroker(403, "ACCESS_REFUSED"),
        AuthenticationFailed,
        f"The broker at {WHERE} refused access: 403 ACCESS_REFUSED",
    ),
    (
        pika.exceptions.ConnectionClosed(530, "NOT_ALLOWED"),
        AuthenticationFailed,
        f"The broker at {WHERE} refused access: 530 NOT_ALLOWED",
    ),
    (
        pika.exceptions.ConnectionClosedByBroker(320, "CONNECTION_FORCED - shutdown"),
        ConnectionFailed,
        f"The broker at {WHERE} closed the connection: 320 CONNECTION_FORCED - shutdown",
    ),
    (
        pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'orders'"),
        BrokerError,
        "The broker closed the channel: 404 NOT_FOUND - no queue 'orders'",
    ),
    (
        pika.exceptions.NackError([]),
        PublishNacked,
        f"The broker refused (nacked) the message published to {WHERE}",
    ),
    (
        pika.exceptions.UnroutableError([]),
        PublishReturned,
        f"The broker could not route the mandatory message published to {WHERE} to any queue",
    ),
    (
        TLS_VERIFY_FAILED,
        ConnectionFailed,
        (
            f"The TLS handshake with the broker at {WHERE} failed: "
            f"certificate verify failed {TLS_HINT}"
        ),
    ),
    (
        SSL.Error("unexpected eof"),
        ConnectionFailed,
        f"The TLS handshake with the broker at {WHERE} failed: unexpected eof {TLS_HINT}",
    ),
    (
        SSL.Error(),
        ConnectionFailed,
        f"The TLS handshake with the broker at {WHERE} failed: TLS error {TLS_HINT}",
    ),
    (
        error.ConnectionRefusedError(),
        ConnectionFailed,
        f"Could not connect to the broker at {WHERE}: connection refused",
    ),
    (
        error.TimeoutError(),
        ConnectionFailed,
        f"Could not connect to the broker at {WHERE}: timed out",
    ),
    (
        defer.TimeoutError("the AMQP handshake took more than 3 s"),
        ConnectionFailed,
        f"Could not connect to the broker at {WHERE}: timed out",
    ),
    (
        error.DNSLookupError("rabbit.example.com"),
        ConnectionFailed,
        f"Could not connect to the broker at {WHERE}: unknown host",
    ),
    (
        error.ConnectionDone(),
        ConnectionFailed,
        f"The connection to the broker at {WHERE} was lost",
    ),
    (
        error.ConnectionLost(),
        ConnectionFailed,
        f"The connection to the broker at {WHERE} was lost",
    ),
    (
        BrokerSilent("no data from the broker for 4 s (2 heartbeat intervals)"),
        ConnectionFailed,
        (
            f"The connection to the broker at {WHERE} was lost: no data from the broker for 4 s "
            "(2 heartbeat intervals)"
        ),
    ),
    (
        pika.exceptions.IncompatibleProtocolError("StreamLostError"),
        ConnectionFailed,
        (
            f"The connection to the broker at {WHERE} failed: IncompatibleProtocolError: "
            "The protocol returned by the server is not supported: ('StreamLostError',)"
        ),
    ),
    (
        OSError("Network is unreachable"),
        ConnectionFailed,
        f"The connection to the broker at {WHERE} failed: Network is unreachable",
    ),
    (None, ConnectionFailed, f"The connection to the broker at {WHERE} failed"),
    (KeyboardInterrupt(), ConnectionFailed, f"The connection to the broker at {WHERE} failed"),
]


@pytest.mark.parametrize(
    ("reason", "kind", "says"),
    TRANSLATIONS,
    ids=[f"{type(reason).__name__}-{index}" for index, (reason, _, _) in enumerate(TRANSLATIONS)],
)
def test_each_client_error_becomes_the_fedmq_exception_that_says_what_to_fix(reason, kind, says):
    for given in (reason, Failure(reason)) if reason is not None else (None,):
        translated = translate_error(given, WHERE)
        assert type(translated) is kind
        assert str(translated) == says


def test_a_refused_channel_operation_keeps_the_brokers_reply_code_and_text():
    translated = translate_error(pika.exceptions.ChannelClosedByBroker(406, "PRECONDITION"), WHERE)
    assert isinstance(translated, BrokerError)
    assert (translated.reply_code, translated.reply_text) == (406, "PRECONDITION")


@pytest.mark.parametrize(
    "already",
    [
        AuthenticationFailed("refused"),
        ConnectionFailed("gone"),
        BrokerError("closed", 404, "NOT_FOUND"),
    ],
)
def test_a_fedmq_exception_passes_through_unchanged(already):
    assert translate_error(already, WHERE) is already
    assert translate_error(Failure(already), WHERE) is already


# --- the idle timeout ------------------------------------------------------------------


def test_a_broker_silent_for_two_heartbeat_intervals_is_given_up_with_the_reason():
    reactor, broker, _connection, closed = open_connection(make_config(heartbeat=5))
    assert broker.received()[-2].heartbeat == 5  # connection.tune-ok: what was agreed

    reactor.advance(9.9)
    assert not broker.transport.aborted

    reactor.advance(0.2)
    assert broker.transport.aborted
    reactor.advance(0)  # the reactor reports the abort on its next turn
    [reason] = closed
    assert isinstance(reason, ConnectionFailed)
    assert str(reason) == (
        "The connection to the broker at 127.0.0.1:5672 was lost: no data from the broker "
        "for 10 s (2 heartbeat intervals)"
    )


def test_anything_the_broker_sends_keeps_the_connection_alive():
    reactor, broker, connection, closed = open_connection(make_config(heartbeat=2))
    for _ in range(30):  # a minute of heartbeats, each just inside the deadline
        reactor.advance(3.9)
        broker.send_heartbeat()
    assert connection.is_open
    assert not broker.transport.aborted
    assert closed == []

    reactor.advance(4.1)
    assert broker.transport.aborted


def test_with_heartbeats_off_a_silent_broker_is_not_given_up():
    reactor, broker, connection, _closed = open_connection(
        make_config(heartbeat=0), broker_heartbeat=0
    )
    assert broker.received()[-2].heartbeat == 0
    reactor.advance(3600)
    assert connection.is_open
    assert not broker.transport.aborted


# --- the handshake timeout -------------------------------------------------------------


def test_a_broker_that_accepts_tcp_and_never_answers_fails_after_connect_timeout():
    reactor = MemoryReactorClock()
    outcome, broker = connect(reactor, make_config(connect_timeout=3))
    reactor.advance(2.9)
    assert outcome == []

    reactor.advance(0.2)
    [failure] = outcome
    assert isinstance(failure, Failure)
    assert failure.check(ConnectionFailed)
    assert str(failure.value) == "Could not connect to the broker at 127.0.0.1:5672: timed out"
    assert broker.transport.aborted
    reactor.advance(0)  # the abort reaches the protocol, which must not fire anything again


def test_a_broker_that_stops_answering_mid_handshake_fails_after_connect_timeout():
    reactor = MemoryReactorClock()
    outcome, broker = connect(reactor, make_config(connect_timeout=3))
    broker.send(pika.spec.Connection.Start(mechanisms="PLAIN", locales="en_US"))
    reactor.advance(3.1)
    [failure] = outcome
    assert isinstance(failure, Failure) and failure.check(ConnectionFailed)
    assert broker.transport.aborted


# --- closing ---------------------------------------------------------------------------


def test_close_says_goodbye_and_fires_once_the_broker_answers():
    reactor, broker, connection, closed = open_connection(make_config())
    done = record(connection.close())
    assert isinstance(broker.received()[-1], pika.spec.Connection.Close)
    assert done == []

    broker.send(pika.spec.Connection.CloseOk())
    reactor.advance(0)
    assert done == [None]
    assert closed == [None]
    assert not broker.transport.aborted


def test_close_of_a_connection_that_is_no_longer_open_drops_it_at_once():
    """The broker never answered the first close: the second close does not wait for it."""
    reactor, broker, connection, closed = open_connection(make_config())
    connection.close()
    assert not connection.is_open
    done = record(connection.close())
    assert broker.transport.aborted
    reactor.advance(0)
    assert done == [None]
    assert closed == [None]


def test_close_after_the_connection_was_lost_fires_at_once_with_why():
    reactor, broker, connection, _closed = open_connection(make_config())
    broker.transport.loseConnection()  # the broker went away
    reactor.advance(0)
    done = record(connection.close())
    [reason] = done
    assert isinstance(reason, ConnectionFailed)
    assert "was lost" in str(reason)


def test_abort_drops_the_connection_without_a_close_and_without_an_error():
    reactor, broker, connection, closed = open_connection(make_config())
    sent = len(broker.received())
    connection.abort()
    reactor.advance(0)
    assert broker.transport.aborted
    assert len(broker.received()) == sent  # no connection.close: the broker requeues
    assert closed == [None]


# --- connection parameters ---------------------------------------------------------------


def test_the_parameters_carry_the_heartbeat_and_client_properties():
    config = make_config(heartbeat=7, client_properties={"team": "infra"})
    params = connection_parameters(config)
    assert params.heartbeat == 7
    assert params.client_properties["team"] == "infra"
    assert params.client_properties["product"] == "fedmq"
    assert params.host == "127.0.0.1"


def test_the_parameters_are_for_the_url_given_rather_than_the_configs():
    params = connection_parameters(make_config(), "amqp://bob:pw@rabbit-2:5673/orders")
    assert (params.host, params.port, params.virtual_host) == ("rabbit-2", 5673, "orders")
    assert params.credentials.username == "bob"


@pytest.mark.parametrize(
    ("url", "tls", "mechanism"),
    [
        ("amqps://bob:pw@rabbit/%2F", {"certfile": "c.pem", "keyfile": "c.key"}, "EXTERNAL"),
        ("amqps://bob:pw@rabbit/%2F", {"ca_cert": "ca.pem"}, "PLAIN"),
        ("amqps://bob:pw@rabbit/%2F", None, "PLAIN"),
        ("amqp://bob:pw@rabbit/%2F", {"certfile": "c.pem", "keyfile": "c.key"}, "PLAIN"),
    ],
)
def test_a_client_certificate_logs_in_with_external_only_over_amqps(url, tls, mechanism):
    config = make_config(amqp_url=url, **({"tls": tls} if tls else {}))
    credentials = connection_parameters(config).credentials
    if mechanism == "EXTERNAL":
        assert isinstance(credentials, pika.credentials.ExternalCredentials)
    else:
        assert isinstance(credentials, pika.credentials.PlainCredentials)
        assert credentials.username == "bob"


# --- TLS options -------------------------------------------------------------------------


class Authority:
    """A throwaway certificate authority that signs certificates for ``localhost``."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = self._build(self.name, self.key.public_key(), ca=True)

    def _build(self, subject: x509.Name, public_key: Any, ca: bool) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if ca:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def server(self) -> Any:
        """A TLS server's options, with a certificate for localhost this authority signed."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        cert = self._build(name, key.public_key(), ca=False)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        pair = cert.public_bytes(serialization.Encoding.PEM) + key_pem
        return ssl.PrivateCertificate.loadPEM(pair).options()


@implementer(IHandshakeListener)
class HandshakeRecorder(Protocol):
    completed = False

    def handshakeCompleted(self) -> None:
        self.completed = True


def handshake_succeeds(client_options: Any, server_options: Any) -> bool:
    """Run a TLS handshake in memory; whether the client accepted the server."""
    ends = []
    for options, is_client in ((client_options, True), (server_options, False)):
        tls = TLSMemoryBIOFactory(options, is_client, Factory.forProtocol(HandshakeRecorder))
        protocol, transport = tls.buildProtocol(None), StringTransport()
        protocol.makeConnection(transport)
        ends.append((protocol, transport))
    (client, client_transport), (server, server_transport) = ends
    for _ in range(20):
        moved = False
        for source, target in ((client_transport, server), (server_transport, client)):
            data = source.value()
            source.clear()
            if data:
                moved = True
                target.dataReceived(data)
        if not moved:
            break
    return bool(client.wrappedProtocol.completed)


#: Twisted's TLS options hand pyOpenSSL the X509 and PKey objects it now deprecates.
twisted_tls_warnings = pytest.mark.filterwarnings("ignore:Passing pyOpenSSL:DeprecationWarning")


def tls_config(tmp_path: Path, **files: bytes) -> Config:
    table = {}
    for key, content in files.items():
        path = tmp_path / key
        path.write_bytes(content)
        table[key] = str(path)
    return make_config(amqp_url="amqps://localhost/%2F", tls=table)


@twisted_tls_warnings
def test_every_authority_of_a_ca_bundle_is_trusted(tmp_path):
    first, second, third = Authority("first CA"), Authority("second CA"), Authority("third CA")
    config = tls_config(tmp_path, ca_cert=first.pem + b"\n" + second.pem + third.pem)
    for authority in (first, second, third):
        assert handshake_succeeds(tls_options(config, "localhost"), authority.server())


@twisted_tls_warnings
def test_a_server_signed_by_an_authority_not_in_the_bundle_is_refused(tmp_path):
    trusted, stranger = Authority("trusted CA"), Authority("another CA")
    config = tls_config(tmp_path, ca_cert=trusted.pem)
    assert not handshake_succeeds(tls_options(config, "localhost"), stranger.server())


@twisted_tls_warnings
def test_a_server_certificate_for_another_host_name_is_refused(tmp_path):
    authority = Authority("the CA")
    config = tls_config(tmp_path, ca_cert=authority.pem)
    assert not handshake_succeeds(tls_options(config, "rabbit.example.com"), authority.server())


CERTIFICATE_LOOKALIKE = (
    b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
)


@pytest.mark.parametrize(
    ("files", "key", "problem"),
    [
        ({"ca_cert": b"just some text\n"}, "ca_cert", "holds no PEM certificate"),
        ({"ca_cert": CERTIFICATE_LOOKALIKE}, "ca_cert", "has a bad certificate"),
        (
            {"certfile": b"not a certificate", "keyfile": b"not a key"},
            "certfile",
            "and tls.keyfile do not make a key pair",
        ),
    ],
)
def test_a_tls_file_without_usable_pem_data_is_a_configuration_error(tmp_path, files, key, problem):
    config = tls_config(tmp_path, **files)
    with pytest.raises(ConfigurationError) as raised:
        tls_options(config, "localhost")
    assert str(raised.value).startswith(f"test.toml: tls.{key}: {tmp_path / key} {problem}")


@pytest.mark.parametrize("key", ["ca_cert", "certfile", "keyfile"])
def test_an_unreadable_tls_file_is_a_configuration_error_naming_key_and_path(tmp_path, key):
    table = {name: str(tmp_path / f"{name}.pem") for name in ("ca_cert", "certfile", "keyfile")}
    authority = Authority("the CA")
    (tmp_path / "ca_cert.pem").write_bytes(authority.pem)
    (tmp_path / "certfile.pem").write_bytes(authority.pem)
    (tmp_path / "keyfile.pem").write_bytes(b"")
    missing = tmp_path / "missing" / f"{key}.pem"
    table[key] = str(missing)
    config = make_config(amqp_url="amqps://localhost/%2F", tls=table)
    with pytest.raises(ConfigurationError) as raised:
        tls_options(config, "localhost")
    assert str(raised.value) == (
        f"test.toml: tls.{key}: {missing} cannot be read: No such file or directory"
    )
