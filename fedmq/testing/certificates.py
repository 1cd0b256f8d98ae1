"""Throwaway TLS certificates for tests: a CA, a server and a client certificate."""

from __future__ import annotations

from pathlib import Path

__all__ = ["TEST_CLIENT_NAME", "make_test_certificates"]

#: The common name of the client certificate :func:`make_test_certificates` writes:
#: the user a client logs in as with it (EXTERNAL).
TEST_CLIENT_NAME = "fedmq-test-client"


def make_test_certificates(directory: Path) -> None:
    """Write a throwaway CA and certificates signed by it into ``directory``.

    They are a server certificate for ``localhost`` and a client certificate
    for :data:`TEST_CLIENT_NAME`.

    For tests only: the keys are unencrypted and the CA signs anything asked of it.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmq test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    key_format = serialization.PrivateFormat.TraditionalOpenSSL
    (directory / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    for stem, common_name in (("server", "localhost"), ("client", TEST_CLIENT_NAME)):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
        )
        if stem == "server":
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        (directory / f"{stem}.pem").write_bytes(cert.public_bytes(pem))
        key_bytes = key.private_bytes(pem, key_format, serialization.NoEncryption())
        (directory / f"{stem}.key").write_bytes(key_bytes)
