"""The ``fedmq`` command without a broker: options, topology, and errors.

Everything here happens before a reactor would run: what needs the broker is
in tests/integration/test_cli.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmq.cli import UsageError, build_parser, main, with_fedora_overrides, with_overrides
from fedmq.config import QueueConfig, config_from_mapping


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


# --- topology from the command line: fedora-messaging's meaning -------------------

SERVER_NAMED = QueueConfig(name="", durable=False, auto_delete=True, exclusive=True)
NO_QUEUES = config_from_mapping({})
TWO_QUEUES = config_from_mapping(
    {
        "queues": {"orders": {}, "audit": {"durable": False}},
        "bindings": [
            {"queue": "orders", "exchange": "shop", "routing_keys": ["order.#"]},
            {"queue": "audit", "exchange": "amq.topic", "routing_keys": ["#", "x.y"]},
        ],
    }
)


def topology(config):
    return config.queues, [(b.queue, b.exchange, b.routing_keys) for b in config.bindings]


def test_without_flags_the_configured_topology_is_consumed_as_it_is():
    assert with_fedora_overrides(TWO_QUEUES) is TWO_QUEUES


def test_routing_keys_replace_the_keys_of_every_configured_binding_and_keep_the_queues():
    queues, bindings = topology(with_fedora_overrides(TWO_QUEUES, routing_keys=["a.#", "b"]))
    assert queues == TWO_QUEUES.queues
    assert bindings == [("orders", "shop", ("a.#", "b")), ("audit", "amq.topic", ("a.#", "b"))]


def test_an_exchange_replaces_the_exchange_of_every_configured_binding():
    _, bindings = topology(with_fedora_overrides(TWO_QUEUES, exchange="events"))
    assert bindings == [("orders", "events", ("order.#",)), ("audit", "events", ("#", "x.y"))]


def test_without_queues_the_flags_edit_fedora_messagings_default_server_named_queue():
    queues, bindings = topology(with_fedora_overrides(NO_QUEUES, routing_keys=["a.#"]))
    assert queues == (SERVER_NAMED,)
    assert bindings == [("", "amq.topic", ("a.#",))]


def test_a_queue_name_names_the_default_queue_which_stays_exclusive_and_auto_deleted():
    config = with_fedora_overrides(NO_QUEUES, queue_name="mine", exchange="shop")
    queues, bindings = topology(config)
    assert queues == (QueueConfig(name="mine", durable=False, auto_delete=True, exclusive=True),)
    assert bindings == [("mine", "shop", ("#",))]


def test_a_queue_name_renames_the_one_configured_queue_and_every_binding_follows():
    one = config_from_mapping(
        {
            "queues": {"orders": {"arguments": {"x-max-length": 10}}},
            "bindings": [
                {"queue": "orders", "exchange": "shop", "routing_keys": ["order.#"]},
                {"queue": "elsewhere", "exchange": "amq.topic", "routing_keys": ["k"]},
            ],
        }
    )
    queues, bindings = topology(with_fedora_overrides(one, queue_name="orders-test"))
    assert queues == (QueueConfig(name="orders-test", arguments={"x-max-length": 10}),)
    assert bindings == [("orders-test", "shop", ("order.#",)), ("orders-test", "amq.topic", ("k",))]


def test_bindings_of_a_config_without_queues_bind_the_default_queue_when_it_is_renamed():
    config = config_from_mapping(
        {"bindings": [{"queue": "", "exchange": "shop", "routing_keys": ["a"]}]}
    )
    _, bindings = topology(with_fedora_overrides(config, queue_name="q"))
    assert bindings == [("q", "shop", ("a",))]


def test_empty_queue_name_and_exchange_count_as_not_given():
    assert with_fedora_overrides(TWO_QUEUES, queue_name="", exchange="") is TWO_QUEUES


def test_a_queue_name_with_several_configured_queues_is_refused_naming_them():
    with pytest.raises(UsageError) as raised:
        with_fedora_overrides(TWO_QUEUES, queue_name="q")
    assert "--queue-name" in str(raised.value) and "2 ('orders', 'audit')" in str(raised.value)


def test_a_routing_key_with_queues_but_no_bindings_is_refused_instead_of_doing_nothing():
    config = config_from_mapping({"queues": {"orders": {}}})
    with pytest.raises(UsageError) as raised:
        with_fedora_overrides(config, routing_keys=["k"])
    assert str(raised.value).startswith("--routing-key changes the configuration's bindings")


# --- --replace-topology: fedmq's own meaning of the flags ---------------------------------


BASE = config_from_mapping(
    {
        "queues": {"orders": {"durable": False, "arguments": {"x-max-length": 10}}},
        "bindings": [{"queue": "orders", "exchange": "shop", "routing_keys": ["order.#"]}],
    }
)


def test_replace_without_topology_options_leaves_the_config_unchanged():
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
    assert out == f"{config_path}: valid (1 queue, 1 binding, callback fedmq.example:printer)\n"


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


def test_check_config_imports_the_health_check_as_the_service_would(capsys, tmp_path):
    path = tmp_path / "fedmq.toml"
    path.write_text('health_check = "fedmq.example:no_such_check"\n')
    status, _, err = run(capsys, "check-config", str(path))
    assert status == 2
    assert f"{path}: health_check:" in err and "no_such_check" in err
    assert err.count("\n") == 1


def test_check_config_reports_a_callback_class_that_fails_to_build_as_usage(capsys, tmp_path):
    path = tmp_path / "fedmq.toml"
    path.write_text('callback = "tests.integration.service_callbacks:Unbuildable"\n')
    status, _, err = run(capsys, "check-config", str(path))
    assert status == 2
    assert "no database" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--exchange", "x", "--body", "{}"], "--routing-key is required with --body"),
        (["--routing-key", "k"], "give a FILE of messages ('-': standard input), or --body"),
        (["--routing-key", "k", "--header", "novalue", "--body", "{}"], "--header 'novalue' is"),
        (["--routing-key", "k", "--body", "not json"], "is not valid JSON"),
        (["--body", "{}", "x.jsonl"], "give --body or a FILE, not both"),
        (["x.jsonl", "--file", "y.jsonl"], "give FILE or --file, not both"),
        (["absent.jsonl"], "cannot read absent.jsonl: No such file or directory"),
        (["--routing-key", "k", "{}"], "(a message body goes in --body)"),
        (["--format", "xml", "x.jsonl"], "argument --format: invalid choice: 'xml'"),
    ],
)
def test_publish_mistakes_are_reported_before_connecting(
    capsys, config_path, tmp_path, monkeypatch, args, says
):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "publish", "-c", str(config_path), *args)
    assert status == 2
    assert says in err and err.count("\n") == 1


def test_publishing_a_file_in_the_wrong_format_names_the_line_and_the_other_format(
    capsys, config_path, tmp_path
):
    records = tmp_path / "records.jsonl"
    records.write_text('{"topic": "a", "body": {"n": 1}}\n{"topic": "b", "body": [2]}\n')
    status, _, err = run(capsys, "publish", "-c", str(config_path), str(records))
    assert status == 2
    assert err.startswith(f"fedmq: {records}:2: body must be a JSON object in fedora-messaging's")
    assert "--format fedmq" in err and err.count("\n") == 1


def test_publishing_an_empty_file_is_refused(capsys, config_path, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    status, _, err = run(capsys, "publish", "-c", str(config_path), str(empty))
    assert status == 2 and "holds no records" in err


def test_consume_with_an_empty_queues_table_is_refused(capsys, tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('callback = "fedmq.example:printer"\nqueues = {}\n')
    status, _, err = run(capsys, "consume", "-c", str(path))
    assert status == 2
    assert err == (
        f"fedmq: {path}: the queues table is empty, so there is nothing to consume; name a "
        "queue in it, or leave it out to consume from a server-named queue\n"
    )


def test_record_to_a_file_that_cannot_be_written_is_refused(capsys, config_path, tmp_path):
    target = tmp_path / "no-such-dir" / "out.jsonl"
    status, _, err = run(capsys, "record", str(target), "-c", str(config_path), "--queue-name", "q")
    assert status == 2
    assert err == f"fedmq: cannot write {target}: No such file or directory\n"


def test_conf_is_read_before_the_command_as_fedora_messaging_takes_it(capsys, tmp_path):
    absent = tmp_path / "absent.toml"
    status, _, err = run(capsys, "--conf", str(absent), "consume", "--routing-key", "k")
    assert status == 2
    assert err == f"fedmq: config file {absent} does not exist\n"


def test_conf_is_also_an_alias_of_config_after_the_command(capsys, tmp_path):
    absent = tmp_path / "absent.toml"
    status, _, err = run(capsys, "record", "out.jsonl", "--conf", str(absent))
    assert status == 2
    assert err == f"fedmq: config file {absent} does not exist\n"


def test_conf_before_and_after_the_command_is_refused(capsys, config_path):
    status, _, err = run(
        capsys, "--conf", str(config_path), "consume", "--config", str(config_path)
    )
    assert status == 2
    assert err == "fedmq: give --config (or --conf) once: before the command or after it\n"


def test_replace_topology_alone_is_refused(capsys, config_path):
    status, _, err = run(capsys, "consume", "-c", str(config_path), "--replace-topology")
    assert status == 2
    assert err.startswith("fedmq: --replace-topology needs --queue-name") and err.count("\n") == 1


@pytest.mark.parametrize(
    ("source", "spec", "says"),
    [
        (None, "handlers.py", "--callback-file 'handlers.py' is not of the form"),
        (None, "absent.py:handle", "--callback-file: cannot read absent.py: No such file"),
        (
            "def handle(:\n",
            "handlers.py:handle",
            "--callback-file: handlers.py is not valid Python",
        ),
        ("1 / 0\n", "handlers.py:handle", "--callback-file: running handlers.py raised"),
        ("x = 1\n", "handlers.py:handle", "--callback-file: handlers.py defines no object named"),
        ("handle = 5\n", "handlers.py:handle", "--callback-file: 'handle' in handlers.py is not"),
    ],
)
def test_a_callback_file_that_does_not_give_a_callback_is_one_line_and_exit_2(
    capsys, config_path, tmp_path, monkeypatch, source, spec, says
):
    monkeypatch.chdir(tmp_path)
    if source is not None:
        (tmp_path / "handlers.py").write_text(source)
    status, _, err = run(
        capsys, "consume", "-c", str(config_path), "--routing-key", "k", "--callback-file", spec
    )
    assert status == 2
    assert err.startswith(f"fedmq: {says}") and err.count("\n") == 1


def test_the_parser_is_fedmq():
    assert build_parser().prog == "fedmq"
