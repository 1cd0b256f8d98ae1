"""fedmq._http: a port that cannot be listened on is a configuration error naming its keys."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import reactor
from twisted.web.resource import Resource

from fedmq._http import QuietSite, listen_tcp
from fedmq.exceptions import ConfigurationError


def test_a_port_in_use_names_the_keys_that_chose_it():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        site = QuietSite(Resource(), "fedmq test", reactor)
        with pytest.raises(ConfigurationError) as raised:
            listen_tcp(reactor, site, "127.0.0.1", port, "monitoring", "monitoring.port")
    finally:
        taken.close()
    assert str(raised.value).startswith(
        f"cannot serve monitoring on 127.0.0.1:{port} (monitoring.port): "
    )


def test_a_free_port_is_listened_on_under_the_sites_name():
    site = QuietSite(Resource(), "fedmq test", reactor)
    listening, host = listen_tcp(reactor, site, "127.0.0.1", 0, "monitoring", "monitoring.port")
    try:
        assert host == "127.0.0.1"
        assert listening.getHost().port > 0
    finally:
        listening.stopListening()
    assert site.logPrefix() == "fedmq test"


def test_what_a_refused_client_sent_reaches_the_log_with_control_characters_escaped():
    from fedmq._control_http import _printable

    assert _printable(b"/pause") == "/pause"
    assert _printable(b"/x\x1b[31m\nforged line") == "/x\\x1b[31m\\nforged line"
