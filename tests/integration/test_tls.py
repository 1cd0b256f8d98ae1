"""Connecting over TLS, with the server's certificate checked against a CA."""

from __future__ import annotations

import pytest
import pytest_twisted

import fedmq
from fedmq.testing import make_test_certificates
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
