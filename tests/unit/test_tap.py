"""``twistd fedmq``: its options, its service tree, and the one-line plugin."""

from __future__ import annotations

import runpy
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IServiceMaker, MultiService

from fedmq import tap
from fedmq._logging import twistd_log_observer
from fedmq.service import ConsumerService

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "twisted" / "plugins" / "fedmq_plugin.py"


@pytest.fixture(autouse=True)
def _keep_logging(restore_logging: None) -> None:
    """build_service sets up logging; leave the test process's as it was."""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "fedmq.example:printer"\n[queues.orders]\n')
    return path


def parsed(*args: str, parent: dict[str, Any] | None = None) -> tap.Options:
    options = tap.Options()
    # twistd sets this before parsing a subcommand's options.
    options.parent = {"logger": None} if parent is None else parent
    options.parseOptions(list(args))
    return options


def test_the_plugin_is_one_service_maker_pointing_at_fedmq_tap():
    maker = runpy.run_path(str(PLUGIN))["fedmq"]
    assert IServiceMaker.providedBy(maker)
    assert (maker.tapname, maker.module) == ("fedmq", "fedmq.tap")
    assert maker.options is tap.Options
    assert maker.makeService is tap.makeService
    assert not (PLUGIN.parent / "__init__.py").exists()


def test_options_load_the_config_file_given(config_path):
    options = parsed("--config", str(config_path))
    assert options.config.source == str(config_path)
    assert options["callback"] is None


def test_options_default_to_fedmq_config(config_path, monkeypatch):
    monkeypatch.setenv("FEDMQ_CONFIG", str(config_path))
    assert parsed().config.source == str(config_path)


def test_a_missing_config_file_exits_2_with_one_sentence(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        parsed("--config", str(tmp_path / "absent.toml"))
    assert exited.value.code == 2
    assert (
        capsys.readouterr().err == f"fedmq: config file {tmp_path / 'absent.toml'} does not exist\n"
    )


def test_an_invalid_config_exits_2_naming_the_key(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("concurrency = 0\n")
    with pytest.raises(SystemExit) as exited:
        parsed("-c", str(path))
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedmq: {path}: concurrency") and err.count("\n") == 1


def test_under_twistd_the_options_send_twisted_logging_to_fedmq(config_path):
    parent: dict[str, Any] = {"logger": None}
    parsed("-c", str(config_path), parent=parent)
    assert parent["logger"] == "fedmq._logging.twistd_log_observer"
    assert twistd_log_observer.__name__ == "twistd_log_observer"


def test_a_logger_given_to_twistd_is_kept(config_path):
    parent: dict[str, Any] = {"logger": "my.observer"}
    parsed("-c", str(config_path), parent=parent)
    assert parent["logger"] == "my.observer"


def test_make_service_builds_the_consumer_and_the_notifier(config_path):
    top = tap.makeService(parsed("-c", str(config_path)))
    assert isinstance(top, MultiService)
    names = [service.name for service in top]
    assert names == ["fedmq-consumer", "fedmq-systemd"]
    consumer_service = tap.consumer_service_of(top)
    assert isinstance(consumer_service, ConsumerService)
    assert consumer_service.config.source == str(config_path)


def test_the_callback_option_overrides_the_configured_one(config_path):
    top = tap.makeService(parsed("-c", str(config_path), "--callback", "fedmq.demo:main"))
    from fedmq.demo import main

    assert tap.consumer_service_of(top).callback is main


def test_a_callback_that_cannot_be_loaded_exits_2(config_path, capsys):
    options = parsed("-c", str(config_path), "--callback", "fedmq.nowhere:thing")
    with pytest.raises(SystemExit) as exited:
        tap.makeService(options)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "fedmq.nowhere:thing" in err and err.count("\n") == 1


def test_a_monitoring_port_adds_the_monitoring_service(tmp_path):
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "fedmq.example:printer"\n[monitoring]\nport = 0\n')
    top = tap.build_service(parsed("-c", str(path)).config, begin_twisted_logging=False)
    assert [service.name for service in top] == [
        "fedmq-consumer",
        "fedmq-monitoring",
        "fedmq-systemd",
    ]


def test_a_monitoring_port_in_use_is_one_line_and_exit_2(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "fedmq.toml"
        path.write_text(f'callback = "fedmq.example:printer"\n[monitoring]\nport = {port}\n')
        top = tap.build_service(parsed("-c", str(path)).config, begin_twisted_logging=False)
        with pytest.raises(SystemExit) as exited:
            top.privilegedStartService()
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and err.count("\n") == 1
