"""Controlling a running service: the control socket, the HTTP endpoint, signals, their config.

A fake consumer stands in for fedmq.Consumer's pause(), resume() and
queue_states(); reactors are memory ones; sockets and files are real.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport

from fedmq._control import Controller, Request
from fedmq._control_http import ControlHTTPService
from fedmq._control_socket import ControlSocketService
from fedmq.cli import main
from fedmq.config import check_runnable, config_from_mapping, load_config
from fedmq.exceptions import ConfigurationError
from fedmq.monitoring import MonitoringService
from fedmq.service import ConsumerService
from tests.unit.test_flow import Harness, SlowAnswers
from tests.unit.test_monitoring import Response

TOKEN = "s3cret-t0ken-for-tests"


class QueueState(NamedTuple):
    consuming: bool
    reasons: frozenset[str]


class PausableConsumer:
    """Stands in for a Consumer's pause, resume and queue states; records every call."""

    def __init__(self, queues: tuple[str, ...] = ("orders", "invoices")) -> None:
        self.state = "consuming"
        self.held: dict[str, set[str]] = {queue: set() for queue in queues}
        self.calls: list[tuple[str, str | None]] = []
        self.answer: defer.Deferred[None] | None = None  # None: done at once

    def _targets(self, queue: str | None) -> list[str]:
        return list(self.held) if queue is None else [queue]

    def pause(self, queue: str | None = None) -> defer.Deferred[None]:
        self.calls.append(("pause", queue))
        for name in self._targets(queue):
            self.held[name].add("paused")
        return self.answer if self.answer is not None else defer.succeed(None)

    def resume(self, queue: str | None = None) -> defer.Deferred[None]:
        self.calls.append(("resume", queue))
        for name in self._targets(queue):
            self.held[name].discard("paused")
        return self.answer if self.answer is not None else defer.succeed(None)

    def queue_states(self) -> dict[str, QueueState]:
        return {name: QueueState(not why, frozenset(why)) for name, why in self.held.items()}


class Holder:
    def __init__(self, consumer: Any) -> None:
        self.consumer = consumer


def controller(consumer: Any, clock: Any = None, timeout: float = 10.0) -> Controller:
    return Controller(Holder(consumer), clock or Clock(), timeout)


def result_of(d: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    return results[0]


# --- the commands -------------------------------------------------------------------


def test_pause_and_resume_one_queue_or_all_and_answer_each_queues_state():
    consumer = PausableConsumer()
    control = controller(consumer)
    reply = result_of(control(Request("pause", "orders"), "a test"))
    assert reply.body == {
        "ok": True,
        "state": "consuming",
        "queues": {
            "orders": {"consuming": False, "reasons": ["paused"]},
            "invoices": {"consuming": True, "reasons": []},
        },
    }
    result_of(control(Request("pause"), "a test"))
    result_of(control(Request("resume", "invoices"), "a test"))
    assert consumer.calls == [("pause", "orders"), ("pause", None), ("resume", "invoices")]
    status = result_of(control(Request("status"), "a test")).body["queues"]
    assert status["orders"]["consuming"] is False and status["invoices"]["consuming"] is True


def test_a_request_whose_handling_raises_still_gets_an_answer(caplog):
    """Anything going wrong inside (here: reading the queues' states) is a "failed" reply."""

    class Broken(PausableConsumer):
        def queue_states(self) -> dict[str, QueueState]:
            raise RuntimeError("states unreadable")

    reply = result_of(controller(Broken())(Request("status"), "a test"))
    assert reply.body["ok"] is False
    assert "status failed: states unreadable" in reply.body["error"]
    assert "The control request 'status' failed" in caplog.text


def test_an_unknown_queue_is_a_usage_error_and_nothing_is_paused():
    consumer = PausableConsumer()
    reply = result_of(controller(consumer)(Request("pause", "nope"), "a test"))
    assert reply.body["kind"] == "usage" and "'nope'" in reply.body["error"]
    assert "'orders'" in reply.body["error"]
    assert consumer.calls == []


def test_without_a_running_consumer_every_command_is_unavailable():
    for consumer in (None, PausableConsumer()):
        if consumer is not None:
            consumer.state = "stopped"
        reply = result_of(controller(consumer)(Request("status"), "a test"))
        assert reply.body == {
            "ok": False,
            "kind": "unavailable",
            "error": "the consumer is not running",
        }


def test_a_pause_answers_once_it_has_taken_effect_and_fails_after_the_timeout():
    consumer = PausableConsumer()
    consumer.answer = defer.Deferred()
    clock = Clock()
    control = controller(consumer, clock, timeout=10)
    answer = control(Request("pause"), "a test")
    clock.advance(9)
    assert not answer.called  # waits for the broker to stop the deliveries
    consumer.answer.callback(None)
    assert result_of(answer).ok

    consumer.answer = defer.Deferred()
    late = control(Request("resume"), "a test")
    clock.advance(10)
    reply = result_of(late)
    assert reply.body["kind"] == "failed" and "within 10 s" in reply.body["error"]


def test_a_pause_that_fails_answers_why():
    consumer = PausableConsumer()
    consumer.answer = defer.fail(RuntimeError("channel closed"))
    reply = result_of(controller(consumer)(Request("pause", "orders"), "a test"))
    assert reply.body["kind"] == "failed" and "channel closed" in reply.body["error"]


def test_a_pause_not_done_in_time_answers_so_and_is_still_made():
    """A resume holds the queue past the timeout: the pause answers "failed", then happens.

    The answer never claims a pause the broker did not make, and the pause is
    not called off: once the resume's slow basic.consume is answered, the
    consumer is cancelled and nothing is told to the failure listeners.
    """
    slow = SlowAnswers()
    failures: list[Any] = []
    h = Harness(lambda message: None, queues={"orders": {}}, slow=slow, connect_timeout=30)
    h.consumer.flow.add_reconsume_failed_listener(lambda *failure: failures.append(failure))
    h.consumer.pause("orders")
    h.clock.run_pending()
    slow.delays["consume"] = 12.0
    h.consumer.resume("orders")  # t=0: consume-ok at t=12
    h.clock.advance(1)
    answer = Controller(Holder(h.consumer), h.clock, 10.0)(Request("pause", "orders"), "a test")
    h.clock.advance(10)  # t=11: the controller's timeout
    reply = result_of(answer)
    assert reply.body["kind"] == "failed"
    assert "not done within 10 s" in reply.body["error"]
    assert h.broker.consumer_count("orders") == 1  # the resume's consumer, still there
    h.clock.advance(1)  # t=12: consume-ok, then the pause goes ahead
    h.until(lambda: h.broker.consumer_count("orders") == 0)
    assert h.consumer.queue_states()["orders"].reasons == {"paused"}
    assert failures == []
    h.stop()


# --- the control socket -------------------------------------------------------------


class UnixListeningReactor(MemoryReactorClock):
    """A memory reactor whose listenUNIX binds a real socket file, as Twisted's does.

    ``created_modes`` records each file's mode the moment it exists, before
    the chmod to ``mode`` that Twisted's listenUNIX does after binding.
    """

    def __init__(self) -> None:
        super().__init__()
        self.created_modes: list[int] = []
        self.sockets: list[socket.socket] = []

    def listenUNIX(self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666) -> Any:
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(address)
        self.created_modes.append(stat.S_IMODE(Path(address).stat().st_mode))
        Path(address).chmod(mode)
        self.sockets.append(listening)
        return super().listenUNIX(address, factory, backlog, mode)


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # A short path: a UNIX socket's path has at most 107 bytes.
    path = Path(
        tempfile.mkdtemp(prefix="fedmq-ctl-", dir="/tmp")
    )  # short: a socket path has at most 107 bytes
    yield path
    for leftover in path.iterdir():
        leftover.unlink()
    path.rmdir()


def socket_service(
    path: Path, consumer: Any = None, reactor: Any = None
) -> tuple[ControlSocketService, Any]:
    reactor = reactor or UnixListeningReactor()
    config = config_from_mapping({"control": {"socket": str(path)}}, "/etc/fedmq/orders.toml")
    service = ControlSocketService(config, controller(consumer or PausableConsumer()), reactor)
    return service, reactor


def talk(reactor: Any, *lines: bytes) -> list[Any]:
    """Send lines to what the control socket listens with; the JSON replies."""
    [(_address, factory, _backlog, _mode, _want_pid)] = reactor.unixServers
    protocol = factory.buildProtocol(UNIXAddress(None))
    transport = StringTransport()
    protocol.makeConnection(transport)
    for line in lines:
        protocol.dataReceived(line)
    return [json.loads(reply) for reply in transport.value().splitlines()]


def test_the_socket_is_its_owners_alone_from_its_first_moment_whatever_the_umask(socket_dir):
    path = socket_dir / "control.sock"
    service, reactor = socket_service(path)
    before = os.umask(0)
    try:
        service.privilegedStartService()
        assert os.umask(0) == 0  # put back as it was
    finally:
        os.umask(before)
    assert reactor.created_modes == [0o600]  # before any chmod
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert [(str(path), 0o600)] == [(entry[0], entry[3]) for entry in reactor.unixServers]


def test_one_line_in_one_json_line_out_in_order(socket_dir):
    consumer = PausableConsumer()
    service, reactor = socket_service(socket_dir / "c.sock", consumer)
    service.startService()
    replies = talk(
        reactor,
        b'{"command": "pause", "queue": "orders"}\n{"command": "status"}\r\n',
        b"\n",
        b'{"command": "resume"}\n',
    )
    assert [reply["ok"] for reply in replies] == [True, True, True]
    assert replies[1]["queues"]["orders"] == {"consuming": False, "reasons": ["paused"]}
    assert consumer.calls == [("pause", "orders"), ("resume", None)]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"pause\n", "one JSON object"),
        (b'["pause"]\n', "one JSON object"),
        (b'{"command": "drain"}\n', "unknown command 'drain'"),
        (b'{"command": "pause", "queue": 3}\n', "queue must be"),
        (b'{"command": "pause", "queues": "orders"}\n', "unknown request keys"),
        (b'{"command": "status", "queue": "orders"}\n', "status takes no queue"),
    ],
)
def test_a_bad_request_is_answered_with_a_usage_error_and_changes_nothing(socket_dir, line, words):
    consumer = PausableConsumer()
    service, reactor = socket_service(socket_dir / "c.sock", consumer)
    service.startService()
    [reply] = talk(reactor, line)
    assert reply["ok"] is False and reply["kind"] == "usage" and words in reply["error"]
    assert consumer.calls == []


def test_a_line_too_long_is_refused_and_the_connection_closed(socket_dir):
    service, reactor = socket_service(socket_dir / "c.sock")
    service.startService()
    [reply] = talk(reactor, b"x" * 5000)
    assert reply["kind"] == "usage" and "at most 4096 bytes" in reply["error"]


def test_a_stale_socket_is_replaced(socket_dir, caplog):
    path = socket_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays; nothing listens: a process that died
    service, reactor = socket_service(path)
    with caplog.at_level(logging.INFO, logger="fedmq.control"):
        service.startService()
    assert reactor.created_modes == [0o600]  # bound anew: the old file would refuse the bind
    assert "left by a process that has stopped" in caplog.text


def test_a_stale_socket_that_cannot_be_removed_is_a_clear_error(socket_dir, monkeypatch):
    """Another user's stale socket in a sticky directory: exit 2 naming the key, no traceback."""
    path = socket_dir / "c.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()

    def refuse(self, missing_ok=False):
        raise PermissionError(1, "Operation not permitted", str(self))

    monkeypatch.setattr(Path, "unlink", refuse)
    service, _reactor = socket_service(path)
    with pytest.raises(ConfigurationError) as raised:
        service.privilegedStartService()
    assert str(raised.value) == (
        f"/etc/fedmq/orders.toml: control.socket: {path} is left by a stopped process and "
        "cannot be removed: Operation not permitted"
    )


def test_a_live_socket_is_refused_and_left_alone(socket_dir):
    path = socket_dir / "c.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(1)
    try:
        service, reactor = socket_service(path)
        with pytest.raises(ConfigurationError) as raised:
            service.privilegedStartService()
        assert str(raised.value) == (
            f"/etc/fedmq/orders.toml: control.socket: {path} is in use: another process "
            "listens on it (is this consumer running already?); stop it, or give this one "
            "another control.socket"
        )
        assert reactor.unixServers == []
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))  # still the other process's
        probe.close()
    finally:
        live.close()


def test_a_file_that_is_not_a_socket_is_never_replaced(socket_dir):
    path = socket_dir / "c.sock"
    path.write_text("precious")
    service, _ = socket_service(path)
    with pytest.raises(ConfigurationError, match="exists and is not a socket"):
        service.startService()
    assert path.read_text() == "precious"


def test_a_missing_directory_is_a_clear_error(socket_dir):
    service, _ = socket_service(socket_dir / "no" / "c.sock")
    with pytest.raises(ConfigurationError, match="its directory does not exist"):
        service.startService()


# --- the HTTP control endpoint ------------------------------------------------------


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def http_config(token_file: Path, **control: Any) -> Any:
    return config_from_mapping(
        {"control": {"http_port": 0, "token_file": str(token_file), **control}},
        "/etc/fedmq/orders.toml",
    )


def http_service(token_file: Path, consumer: Any) -> tuple[ControlHTTPService, Any]:
    reactor = MemoryReactorClock()
    service = ControlHTTPService(http_config(token_file), controller(consumer), reactor)
    service.startService()
    return service, reactor


def http(reactor: Any, method: str, path: str, authorization: str | None = None) -> Response:
    """Send one HTTP request to the site the reactor listens with; the response."""
    [(_port, site, _backlog, _interface)] = reactor.tcpServers
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    headers = "Host: localhost\r\nConnection: close\r\nContent-Length: 0\r\n"
    if authorization is not None:
        headers += f"Authorization: {authorization}\r\n"
    protocol.dataReceived(f"{method} {path} HTTP/1.1\r\n{headers}\r\n".encode())
    return Response(transport.value())


def test_it_listens_on_the_loopback_address_by_default(token_file):
    _, reactor = http_service(token_file, PausableConsumer())
    [(port, _site, _backlog, interface)] = reactor.tcpServers
    assert (port, interface) == (0, "127.0.0.1")


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        f"Bearer {TOKEN}x",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer ",
        f"{TOKEN} Bearer",
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/pause"), ("POST", "/pause?queue=orders"), ("POST", "/resume"), ("GET", "/status")],
)
def test_a_request_without_the_token_is_401_and_changes_nothing(
    token_file, authorization, method, path, caplog
):
    consumer = PausableConsumer()
    consumer.held["orders"].add("paused")
    _, reactor = http_service(token_file, consumer)
    with caplog.at_level(logging.WARNING, logger="fedmq.control"):
        response = http(reactor, method, path, authorization)
    assert response.status == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="fedmq control"'
    assert response.json() == {"ok": False, "error": "a valid bearer token is needed"}
    assert consumer.calls == []
    assert consumer.held == {"orders": {"paused"}, "invoices": set()}
    assert "Refused a control request" in caplog.text and "from 192.168.1.1" in caplog.text
    assert TOKEN not in caplog.text and TOKEN.encode() not in response.body


def test_with_the_token_post_pauses_and_resumes_and_get_reports(token_file):
    consumer = PausableConsumer()
    _, reactor = http_service(token_file, consumer)
    bearer = f"Bearer {TOKEN}"
    paused = http(reactor, "POST", "/pause?queue=orders", bearer)
    assert paused.status == 200
    assert paused.json()["queues"]["orders"] == {"consuming": False, "reasons": ["paused"]}
    assert http(reactor, "POST", "/resume", f"bearer  {TOKEN}").status == 200
    status = http(reactor, "GET", "/status", bearer)
    assert status.status == 200 and status.headers["cache-control"] == "no-store"
    assert status.json()["state"] == "consuming"
    assert consumer.calls == [("pause", "orders"), ("resume", None)]


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/pause", 405),
        ("POST", "/status", 405),
        ("GET", "/metrics", 404),
        ("POST", "/pause?queue=nope", 400),
        ("POST", "/pause?queue=orders&queue=invoices", 400),
        ("GET", "/status?queue=orders", 400),
    ],
)
def test_with_the_token_a_wrong_request_is_refused_and_changes_nothing(
    token_file, method, path, code
):
    consumer = PausableConsumer()
    _, reactor = http_service(token_file, consumer)
    assert http(reactor, method, path, f"Bearer {TOKEN}").status == code
    assert consumer.calls == []


def test_a_consumer_not_running_is_503(token_file):
    consumer = PausableConsumer()
    consumer.state = "stopped"
    _, reactor = http_service(token_file, consumer)
    response = http(reactor, "POST", "/pause", f"Bearer {TOKEN}")
    assert response.status == 503 and response.json()["kind"] == "unavailable"


def test_the_token_never_shows_in_a_repr(token_file):
    service, reactor = http_service(token_file, PausableConsumer())
    [(_port, site, _backlog, _interface)] = reactor.tcpServers
    shown = repr(vars(site.resource)) + repr(vars(service)) + repr(http_config(token_file))
    assert TOKEN not in shown and "<token>" in shown


def test_the_monitoring_listener_has_no_control_routes(token_file):
    consumer = PausableConsumer()
    reactor = MemoryReactorClock()
    config = http_config(token_file).replace(
        monitoring=config_from_mapping({"monitoring": {"port": 0}}).monitoring
    )
    MonitoringService(config, Holder(consumer), reactor).startService()
    bearer = f"Bearer {TOKEN}"
    assert http(reactor, "POST", "/pause", bearer).status == 405
    assert http(reactor, "POST", "/resume", bearer).status == 405
    assert http(reactor, "GET", "/status", bearer).status == 404
    assert http(reactor, "GET", "/pause", bearer).status == 404
    assert consumer.calls == []


def test_a_token_file_others_may_read_is_warned_about(token_file, caplog):
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="fedmq.control"):
        http_service(token_file, PausableConsumer())
    assert f"control.token_file {token_file} may be read by other users (mode 0644)" in caplog.text
    assert TOKEN not in caplog.text


def test_a_non_loopback_address_is_warned_about(token_file, caplog):
    reactor = MemoryReactorClock()
    config = http_config(token_file, http_address="0.0.0.0")  # noqa: S104 - the point
    with caplog.at_level(logging.WARNING, logger="fedmq.control"):
        ControlHTTPService(config, controller(PausableConsumer()), reactor).startService()
    assert "listens beyond this host (0.0.0.0)" in caplog.text


# --- signals ------------------------------------------------------------------------


def test_sigusr1_pauses_every_queue_and_sigusr2_resumes_them():
    consumer = PausableConsumer()
    reactor = MemoryReactorClock()
    reactor.running = True
    service = ConsumerService(
        config_from_mapping({}), "x:y", reactor, consumer_factory=lambda *_: consumer
    )
    service.consumer = consumer  # type: ignore[assignment]
    service.signalled(signal.SIGUSR1)
    assert consumer.held == {"orders": {"paused"}, "invoices": {"paused"}}
    service.signalled(signal.SIGUSR2)
    assert consumer.held == {"orders": set(), "invoices": set()}
    assert consumer.calls == [("pause", None), ("resume", None)]


def test_a_control_signal_before_the_consumer_exists_is_logged(caplog):
    service = ConsumerService(config_from_mapping({}), "x:y", MemoryReactorClock())
    with caplog.at_level(logging.WARNING, logger="fedmq.service"):
        service.signalled(signal.SIGUSR1)
    assert "Received SIGUSR1, and could not act on it: the consumer is not running" in caplog.text


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("control", "words"),
    [
        ({"http_port": 9188}, "control.http_port needs control.token_file"),
        ({"token_file": "/etc/t"}, "control.token_file is set but control.http_port is not"),
        ({"http_port": 70000, "token_file": "/t"}, "control.http_port must be from 0 to 65535"),
        ({"socket": "control.sock"}, "control.socket must be an absolute path"),
        ({"socket": "/" + "s" * 120}, "control.socket is longer than a UNIX socket path"),
        ({"http_port": "9188"}, "control.http_port must be an integer, got a string"),
        ({"sockets": "/run/c.sock"}, "unknown key control.sockets (did you mean control.socket?)"),
    ],
)
def test_a_bad_control_table_names_the_file_and_key(control, words):
    with pytest.raises(ConfigurationError) as raised:
        config_from_mapping({"control": control}, "/etc/fedmq/orders.toml")
    assert str(raised.value).startswith("/etc/fedmq/orders.toml: ")
    assert words in str(raised.value)


def test_control_never_shares_the_monitoring_port():
    with pytest.raises(ConfigurationError, match=r"control.http_port \(9187\) is monitoring.port"):
        config_from_mapping(
            {"monitoring": {"port": 9187}, "control": {"http_port": 9187, "token_file": "/t"}}
        )


@pytest.mark.parametrize(("content", "problem"), [(None, "does not exist"), ("\n", "is empty")])
def test_a_token_file_that_holds_no_token_stops_the_start(tmp_path, content, problem):
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    config = http_config(path)
    with pytest.raises(ConfigurationError) as raised:
        check_runnable(config)
    assert str(raised.value) == (
        f"/etc/fedmq/orders.toml: control.token_file: {path} {problem} (the HTTP control "
        "endpoint needs the token it holds)"
    )


def test_check_config_exits_2_for_a_missing_token_file_and_never_shows_a_token(
    tmp_path, token_file, capsys
):
    missing = tmp_path / "bad.toml"
    missing.write_text('[control]\nhttp_port = 9188\ntoken_file = "/nonexistent/token"\n')
    assert main(["check-config", str(missing)]) == 2
    assert "control.token_file: /nonexistent/token does not exist" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text(f'[control]\nhttp_port = 9188\ntoken_file = "{token_file}"\n')
    assert main(["check-config", str(good)]) == 0
    assert TOKEN not in "".join(capsys.readouterr())


def test_the_socket_defaults_to_systemds_runtime_directory_else_off(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("")
    environ = {"RUNTIME_DIRECTORY": "/run/fedmq-orders:/run/other"}
    assert load_config(file, environ=environ).control.socket == "/run/fedmq-orders/control.sock"
    assert load_config(file, environ={}).control.socket is None
    file.write_text('[control]\nsocket = ""\n')
    assert load_config(file, environ=environ).control.socket == ""
    file.write_text('[control]\nsocket = "/run/x/c.sock"\n')
    assert load_config(file, environ=environ).control.socket == "/run/x/c.sock"
    assert config_from_mapping({}).control.socket is None


# --- the fedmq command --------------------------------------------------------------


def test_the_command_without_a_socket_to_talk_to_says_how_to_turn_one_on(tmp_path, capsys):
    file = tmp_path / "c.toml"
    file.write_text("")
    assert main(["pause", "--config", str(file)]) == 2
    err = capsys.readouterr().err
    assert f"fedmq: {file} turns no control socket on" in err
    assert "--socket PATH" in err and "[control] socket" in err


def test_the_command_with_no_consumer_listening_exits_7(socket_dir, capsys):
    path = socket_dir / "c.sock"
    assert main(["status", "--socket", str(path)]) == 7
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert main(["resume", "orders", "--socket", str(path)]) == 7
    err = capsys.readouterr().err
    assert err.count(f"fedmq: no consumer listens on the control socket {path}: it is not ") == 2


def test_status_takes_no_queue(capsys):
    with pytest.raises(SystemExit) as raised:
        main(["status", "orders", "--socket", "/run/x.sock"])
    assert raised.value.code == 2
    assert "unrecognized arguments: orders" in capsys.readouterr().err


def test_the_systemd_unit_gives_each_instance_a_private_runtime_directory_for_the_socket():
    from tests.unit.test_systemd import unit_settings

    service = unit_settings()["Service"]
    assert service["RuntimeDirectory"] == "fedmq-%i"
    assert service["RuntimeDirectoryMode"] == "0700"
    assert "AF_UNIX" in service["RestrictAddressFamilies"].split()
