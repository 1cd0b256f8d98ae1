"""Connecting over TLS, with the server's certificate checked against a CA, and logging
in with a client certificate (EXTERNAL)."""

from __future__ import annotations

import secrets

import pytest
import pytest_twisted

import fedmq
from fedmq.exit_codes import ACCESS_REFUSED, exit_code_for
from fedmq.testing import TEST_CLIENT_NAME, make_test_certificates
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
    """certfile and keyfile: fedmq logs in with EXTERNAL, as the certificate's user.

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
