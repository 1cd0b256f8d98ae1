"""sd_notify, the notifier service on a fake clock, and the shipped systemd unit."""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock

from fedmq._systemd import NotifyService, notify, watchdog_interval
from fedmq.config import Config
from tests.helpers import NotifySocket
from tests.unit.fakes import FakeConsumer, FakeConsumerService

REPO_ROOT = Path(__file__).parents[2]
UNIT = REPO_ROOT / "contrib" / "systemd" / "fedmq@.service"
SHIPPED_TWISTD = "/opt/fedmq/bin/twistd"


def start_notifier(
    consumer: FakeConsumer | None, environ: dict[str, str]
) -> tuple[NotifyService, MemoryReactorClock]:
    reactor = MemoryReactorClock()
    service = NotifyService(FakeConsumerService(consumer), reactor, environ)
    service.startService()
    return service, reactor


# --- sd_notify ------------------------------------------------------------------


def test_notify_sends_one_datagram_to_the_socket_systemd_names(notify_socket):
    assert notify("READY=1\nSTATUS=hello", {"NOTIFY_SOCKET": notify_socket.path})
    assert notify_socket.messages() == ["READY=1\nSTATUS=hello"]


def test_notify_reaches_a_socket_in_the_abstract_namespace():
    listener = NotifySocket(f"@fedmq-test-{secrets.token_hex(4)}")
    try:
        assert notify("WATCHDOG=1", {"NOTIFY_SOCKET": listener.path})
        assert listener.messages() == ["WATCHDOG=1"]
    finally:
        listener.close()


def test_notify_without_notify_socket_does_nothing():
    assert notify("READY=1", {}) is False
    assert notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_a_socket_that_is_gone_is_logged_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "gone")
    assert notify("READY=1", {"NOTIFY_SOCKET": missing}) is False
    assert f"Cannot notify systemd through {missing}" in caplog.text


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_the_watchdog_interval_is_half_what_systemd_asks_for_this_process(environ, interval):
    assert watchdog_interval(environ) == interval


# --- the notifier service ---------------------------------------------------------


def test_ready_is_sent_once_the_consumer_first_consumes(notify_socket):
    consumer = FakeConsumer(state="connecting", queues=("orders", "audit"))
    start_notifier(consumer, {"NOTIFY_SOCKET": notify_socket.path})
    assert notify_socket.messages() == ["STATUS=Connecting to the broker"]
    consumer.become("consuming")
    assert notify_socket.messages() == ["READY=1\nSTATUS=Consuming from orders, audit"]


def test_ready_is_sent_at_once_for_a_consumer_already_consuming(notify_socket):
    start_notifier(FakeConsumer(state="consuming"), {"NOTIFY_SOCKET": notify_socket.path})
    assert notify_socket.messages() == ["READY=1\nSTATUS=Consuming from orders"]


def test_a_consumer_suspended_from_its_start_is_ready_and_says_why_it_waits(notify_socket):
    """Started on an unhealthy host: READY=1 all the same (else systemd kills the start)."""
    consumer = FakeConsumer(state="connecting")
    start_notifier(consumer, {"NOTIFY_SOCKET": notify_socket.path})
    notify_socket.messages()
    consumer.become("suspended")
    consumer.become("consuming")
    assert notify_socket.messages() == [
        (
            "READY=1\nSTATUS=Suspended: the host is unhealthy; queues with "
            "suspend_on_bad_host_health wait (of orders)"
        ),
        "STATUS=Consuming from orders",
    ]


def test_after_ready_state_changes_update_the_status_only(notify_socket):
    consumer = FakeConsumer(state="consuming")
    start_notifier(consumer, {"NOTIFY_SOCKET": notify_socket.path})
    notify_socket.messages()
    consumer.become("reconnecting")
    consumer.become("consuming")
    consumer.become("blocked")
    assert notify_socket.messages() == [
        "STATUS=Reconnecting to the broker",
        "STATUS=Consuming from orders",
        "STATUS=Blocked by the broker (a resource alarm); not consuming",
    ]


def test_a_consumer_made_after_the_notifier_starts_is_followed_once_the_reactor_runs(
    notify_socket,
):
    consumer_service = FakeConsumerService(None)
    reactor = MemoryReactorClock()
    service = NotifyService(consumer_service, reactor, {"NOTIFY_SOCKET": notify_socket.path})
    service.startService()
    consumer_service.consumer = consumer = FakeConsumer(state="consuming")
    reactor.run()
    assert consumer.listeners
    assert notify_socket.messages() == ["READY=1\nSTATUS=Consuming from orders"]


def test_watchdog_pings_come_from_the_reactor_every_half_timeout(notify_socket):
    environ = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "10000000"}
    _, reactor = start_notifier(FakeConsumer(state="consuming"), environ)
    assert notify_socket.messages().count("WATCHDOG=1") == 1
    reactor.advance(4.9)
    assert notify_socket.messages() == []
    reactor.advance(0.1)
    assert notify_socket.messages() == ["WATCHDOG=1"]
    reactor.advance(5.0)
    reactor.advance(5.0)
    assert notify_socket.messages() == ["WATCHDOG=1", "WATCHDOG=1"]


def test_no_watchdog_pings_unless_systemd_asks_for_them(notify_socket):
    _, reactor = start_notifier(FakeConsumer("connecting"), {"NOTIFY_SOCKET": notify_socket.path})
    assert reactor.getDelayedCalls() == []


def test_without_notify_socket_the_service_does_nothing():
    consumer = FakeConsumer("connecting")
    service, reactor = start_notifier(consumer, {"WATCHDOG_USEC": "10000000"})
    assert reactor.getDelayedCalls() == []
    assert consumer.listeners == []
    service.stopService()


def test_stopping_says_stopping_and_pings_until_the_consumer_has_drained(notify_socket):
    consumer = FakeConsumer(state="consuming")
    environ = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "10000000"}
    service, reactor = start_notifier(consumer, environ)
    notify_socket.messages()
    service.stopService()
    consumer.become("draining")
    [stopping, draining] = notify_socket.messages()
    assert stopping.startswith("STOPPING=1\n")
    assert draining == "STATUS=Draining: waiting for callbacks in flight"
    reactor.advance(5.0)
    assert notify_socket.messages() == ["WATCHDOG=1"]
    consumer.become("stopped")
    assert notify_socket.messages() == ["STATUS=Stopped"]
    assert reactor.getDelayedCalls() == []


def test_stopping_without_a_consumer_stops_the_pings_at_once(notify_socket):
    environ = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "10000000"}
    service, reactor = start_notifier(None, environ)
    service.stopService()
    assert reactor.getDelayedCalls() == []
    assert [m for m in notify_socket.messages() if m.startswith("STOPPING=1")]


# --- the unit -------------------------------------------------------------------


def unit_settings() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def seconds(value: str) -> float:
    assert value.isdigit(), f"{value!r}: write plain seconds, for this test"
    return float(value)


def test_the_unit_runs_twistd_in_the_foreground_on_the_instances_config_file():
    service = unit_settings()["Service"]
    command = service["ExecStart"].split()
    assert command[0] == SHIPPED_TWISTD
    assert command[1:] == ["--nodaemon", "--pidfile=", "fedmq", "--config", "%d/%i.toml"]
    assert service["LoadCredential"] == "%i.toml:/etc/fedmq/%i.toml"


def test_the_unit_is_type_notify_with_a_watchdog():
    service = unit_settings()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert seconds(service["WatchdogSec"]) >= 10


def test_the_unit_restarts_on_failure_but_gently_and_not_after_a_usage_error():
    service = unit_settings()["Service"]
    assert service["Restart"] == "on-failure"
    assert seconds(service["RestartSec"]) >= 10
    assert "2" in service["RestartPreventExitStatus"].split()


def test_the_unit_gives_the_drain_time_to_finish_before_killing():
    service = unit_settings()["Service"]
    assert seconds(service["TimeoutStopSec"]) > Config().drain_timeout


def test_the_unit_is_sandboxed():
    service = unit_settings()["Service"]
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(
            "systemd-analyze is not installed, so the systemd unit cannot be checked: "
            "install the Debian package 'systemd' (apt-get install systemd)",
            pytrace=False,
        )
    # The shipped unit runs /opt/fedmq/bin/twistd, which this machine may not
    # have; verify checks that ExecStart exists, so point it at this venv's.
    twistd = Path(sys.executable).parent / "twistd"
    assert twistd.exists(), f"{twistd} is missing: is Twisted installed in this venv?"
    text = UNIT.read_text()
    assert SHIPPED_TWISTD in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(SHIPPED_TWISTD, str(twistd)))
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys or bad values too; it only warns about them.
    complaints = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if UNIT.name in line or "fedmq@" in line
    ]
    assert result.returncode == 0, result.stdout + result.stderr
    assert complaints == []
