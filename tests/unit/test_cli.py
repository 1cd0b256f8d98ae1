"""The ``fedmq`` command without a broker: options, topology, JSON lines, and errors.

Everything here happens before a reactor would run: what needs the broker is
in tests/integration/test_cli.py.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import json
from pathlib import Path
from typing import Any

import pytest

from fedmq._records import dump_record, message_from_record, message_record
from fedmq.cli import build_parser, main, with_overrides
from fedmq.config import QueueConfig, config_from_mapping
from fedmq.message import Properties


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    except SystemExit as exited:
        status = exited.code if isinstance(exited.code, int) else 1
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "fedmq.example:printer"\n')
    return path


# --- topology from the command line ----------------------------------------------


BASE = config_from_mapping(
    {
        "queues": {"orders": {"durable": False, "arguments": {"x-max-length": 10}}},
        "bindings": [{"queue": "orders", "exchange": "shop", "routing_keys": ["order.#"]}],
    }
)


def test_without_topology_options_the_config_is_unchanged():
    assert with_overrides(BASE) is BASE


def test_a_queue_name_alone_consumes_that_queue_without_bindings():
    config = with_overrides(BASE, queue_name="audit")
    assert config.queues == (QueueConfig(name="audit"),)
    assert config.bindings == ()


def test_a_queue_name_the_config_declares_keeps_its_settings():
    config = with_overrides(BASE, queue_name="orders", routing_keys=["order.new"])
    assert config.queues == BASE.queues
    (binding,) = config.bindings
    assert (binding.queue, binding.exchange, binding.routing_keys) == (
        "orders",
        "amq.topic",
        ("order.new",),
    )


def test_routing_keys_without_a_queue_name_use_a_temporary_server_named_queue():
    config = with_overrides(BASE, routing_keys=["a.#", "b.#"], exchange="shop")
    (queue,) = config.queues
    assert queue == QueueConfig(name="", durable=False, auto_delete=True, exclusive=True)
    (binding,) = config.bindings
    assert (binding.queue, binding.exchange, binding.routing_keys) == ("", "shop", ("a.#", "b.#"))


def test_an_exchange_alone_binds_everything():
    (binding,) = with_overrides(BASE, exchange="shop").bindings
    assert binding.routing_keys == ("#",)


def test_app_name_changes_only_the_app_client_property():
    config = with_overrides(BASE, app_name="billing")
    assert config.client_properties["app"] == "billing"
    assert config.client_properties["product"] == BASE.client_properties["product"]
    assert config.queues == BASE.queues


# --- errors before anything connects -------------------------------------------------


def test_every_command_has_help_and_the_top_level_lists_them(capsys):
    status, out, _ = run(capsys, "--help")
    assert status == 0
    for name in ["consume", "publish", "get", "record", "check-config"]:
        assert name in out
        status, out_sub, _ = run(capsys, name, "--help")
        assert status == 0 and out_sub.startswith(f"usage: fedmq {name}")


def test_a_usage_mistake_is_one_line_and_exit_2(capsys):
    status, out, err = run(capsys, "get")
    assert status == 2
    assert out == ""
    assert err == (
        "fedmq get: the following arguments are required: --queue/-q (see 'fedmq get --help')\n"
    )


def test_a_count_below_one_is_refused(capsys):
    status, _, err = run(capsys, "get", "-q", "x", "--count", "0")
    assert status == 2 and "at least 1" in err


def test_no_command_is_a_usage_error(capsys):
    status, _, err = run(capsys)
    assert status == 2 and err.count("\n") == 1


def test_check_config_prints_a_summary_of_a_valid_file(capsys, config_path):
    status, out, err = run(capsys, "check-config", str(config_path))
    assert (status, err) == (0, "")
    assert out == f"{config_path}: valid (0 queues, 0 bindings, callback fedmq.example:printer)\n"


def test_check_config_reports_a_missing_file(capsys, tmp_path):
    status, _, err = run(capsys, "check-config", str(tmp_path / "absent.toml"))
    assert status == 2
    assert err == f"fedmq: config file {tmp_path / 'absent.toml'} does not exist\n"


def test_check_config_loads_the_callback_as_the_service_would(capsys, tmp_path):
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "fedmq.example:no_such_function"\n')
    status, _, err = run(capsys, "check-config", str(path))
    assert status == 2
    assert "no_such_function" in err and err.count("\n") == 1


def test_check_config_reports_a_callback_class_that_fails_to_build_as_usage(capsys, tmp_path):
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "tests.integration.service_callbacks:Unbuildable"\n')
    status, _, err = run(capsys, "check-config", str(path))
    assert status == 2
    assert "no database" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--exchange", "x", "{}"], "--routing-key is required to publish a BODY"),
        (["--routing-key", "k"], "give the message body"),
        (["--routing-key", "k", "--header", "novalue", "{}"], "--header 'novalue' is not of"),
        (["--routing-key", "k", "not json"], "is not valid JSON"),
        (["--routing-key", "k", "--file", "x.jsonl", "{}"], "give a BODY or --file, not both"),
        (["--file", "absent.jsonl"], "cannot read absent.jsonl"),
    ],
)
def test_publish_mistakes_are_reported_before_connecting(
    capsys, config_path, tmp_path, monkeypatch, args, says
):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "publish", "-c", str(config_path), *args)
    assert status == 2
    assert says in err and err.count("\n") == 1


def test_publishing_an_empty_file_is_refused(capsys, config_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    status, _, err = run(capsys, "publish", "-c", str(config_path), "--file", str(empty))
    assert status == 2 and "holds no records" in err


def test_consume_with_no_queues_is_refused(capsys, config_path):
    status, _, err = run(capsys, "consume", "-c", str(config_path))
    assert status == 2
    assert "declares no queues" in err and err.count("\n") == 1


def test_record_to_a_file_that_cannot_be_written_is_refused(capsys, config_path, tmp_path):
    target = tmp_path / "no-such-dir" / "out.jsonl"
    status, _, err = run(capsys, "record", str(target), "-c", str(config_path), "--queue-name", "q")
    assert status == 2
    assert err == f"fedmq: cannot write {target}: No such file or directory\n"


def test_the_parser_is_fedmq():
    assert build_parser().prog == "fedmq"
