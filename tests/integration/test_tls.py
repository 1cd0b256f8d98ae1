"""Connecting over TLS, with the server's certificate checked against a CA, and logging
in with a client certificate (EXTERNAL).
"""

from __future__ import annotations

import secrets

import pytest
import pytest_twisted

import fedmq
from fedmq.exit_codes import ACCESS_REFUSED, exit_code_for
from fedmq.testing import TEST_CLIENT_NAME, make_test_certificates
from tests.anchors import sdist_dir
from tests.integration.conftest import wait_for


@pytest_twisted.ensureDeferred
async def test_a_consumer_connects_over_tls_and_checks_the_servers_certificate(
    rabbit, broker, queue_name, make_config
):
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"over": "tls"}])
    config = make_config(amqp_url=rabbit.tls_url, tls={"ca_cert": str(rabbit.tls_files["ca_cert"])})
    seen = []
    consumer = await fedmq.consume(seen.append, config=config)
    await wait_for(lambda: seen)
    await consumer.cancel()
    assert seen[0].body == {"over": "tls"}
    assert broker.counts(queue_name) == (0, 0)


@pytest_twisted.ensureDeferred
async def test_a_server_certificate_from_another_ca_is_refused(rabbit, tmp_path, make_config):
    make_test_certificates(tmp_path)
    config = make_config(
        amqp_url=rabbit.tls_url,
        tls={"ca_cert": str(tmp_path / "ca.pem")},
        reconnect={"max_attempts": 1},
    )
    with pytest.raises(fedmq.ConnectionFailed) as raised:
        await fedmq.consume(print, config=config)
    assert f"localhost:{rabbit.tls_port}" in str(raised.value)
    assert "TLS" in str(raised.value) and "certificate verify failed" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_a_client_certificate_logs_in_as_its_common_name_with_external(
    rabbit, broker, queue_name, make_config
):
    """Certfile and keyfile: fedmq logs in with EXTERNAL, as the certificate's user.

    Before that user exists the broker refuses the login (exit status 4); once it
    exists, with rights on the vhost, the consumer consumes with no password at all.
    """
    files = rabbit.tls_files
    config = make_config(
        amqp_url=f"amqps://localhost:{rabbit.tls_port}/%2F",
        tls={
            "ca_cert": str(files["ca_cert"]),
            "certfile": str(files["client_cert"]),
            "keyfile": str(files["client_key"]),
        },
        reconnect={"max_attempts": 1},
    )
    with pytest.raises(fedmq.AuthenticationFailed) as refused:
        await fedmq.consume(print, config=config)
    assert exit_code_for(refused.value) == ACCESS_REFUSED

    rabbit.add_user(TEST_CLIENT_NAME, secrets.token_hex(16))
    try:
        broker.declare_queue(queue_name)
        broker.publish(queue_name, [{"by": "certificate"}])
        seen = []
        consumer = await fedmq.consume(seen.append, config=config)
        await wait_for(lambda: seen)
        await consumer.cancel()
    finally:
        rabbit.ctl("delete_user", TEST_CLIENT_NAME)
    assert seen[0].body == {"by": "certificate"}


@pytest_twisted.ensureDeferred
async def test_every_authority_of_a_ca_bundle_is_trusted(
    rabbit, broker, queue_name, make_config, tmp_path
):
    """A bundle whose first certificate is another CA's (Fedora's, as fedora-messaging
    ships it) still trusts the broker's CA further down, as system bundles do.
    """
    bundle = tmp_path / "bundle.pem"
    other_ca = (sdist_dir("fedora-messaging") / "configs" / "cacert.pem").read_bytes()
    bundle.write_bytes(other_ca + b"\n" + rabbit.tls_files["ca_cert"].read_bytes())
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"trusted": "by the second"}])
    config = make_config(
        amqp_url=rabbit.tls_url, tls={"ca_cert": str(bundle)}, reconnect={"max_attempts": 1}
    )
    seen = []
    consumer = await fedmq.consume(seen.append, config=config)
    await wait_for(lambda: seen)
    await consumer.cancel()
    assert seen[0].body == {"trusted": "by the second"}


@pytest_twisted.ensureDeferred
async def test_a_tls_table_does_not_turn_a_plain_url_into_tls(
    broker, queue_name, make_config, tmp_path
):
    """[tls] applies to amqps:// URLs only: with amqp:// the consumer connects in the
    clear with the URL's user, even though the table names a client certificate.
    """
    broker.declare_queue(queue_name)
    broker.publish(queue_name, [{"in": "the clear"}])
    config = make_config(
        tls={
            "ca_cert": str(tmp_path / "missing-ca.pem"),
            "certfile": str(tmp_path / "missing-cert.pem"),
            "keyfile": str(tmp_path / "missing-key.pem"),
        }
    )
    seen = []
    consumer = await fedmq.consume(seen.append, config=config)
    await wait_for(lambda: seen)
    await consumer.cancel()
    assert seen[0].body == {"in": "the clear"}


@pytest_twisted.ensureDeferred
async def test_an_unreadable_ca_file_is_a_configuration_error(rabbit, make_config, tmp_path):
    """Not a lost connection to retry, and not a failed callback (exit 5): exit 2,
    naming the key and the path.
    """
    missing = tmp_path / "missing-ca.pem"
    config = make_config(amqp_url=rabbit.tls_url, tls={"ca_cert": str(missing)})
    with pytest.raises(fedmq.ConfigurationError) as raised:
        await fedmq.consume(print, config=config)
    assert str(raised.value) == (
        f"<arguments>: tls.ca_cert: {missing} cannot be read: No such file or directory"
    )
    assert exit_code_for(raised.value) == 2
