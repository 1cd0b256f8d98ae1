"""Tests for fedmq.config: loading, merging and checking the TOML configuration."""

from __future__ import annotations

import dataclasses
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from fedmq import config as config_module
from fedmq.config import (
    DEFAULT_BINDING,
    DEFAULT_QUEUE,
    BindingConfig,
    Config,
    ExchangeConfig,
    QosConfig,
    QueueConfig,
    TLSConfig,
    config_from_mapping,
    load_config,
    parse_bindings,
    parse_exchanges,
    parse_queues,
    redact_url,
)
from fedmq.exceptions import ConfigurationError

SECRET = "s3cr3t-pa55"

FEDORA_MESSAGING_SAMPLE = f"""
# A fedora-messaging config.toml, as its users have them today.
amqp_url = "amqps://fedmq:{SECRET}@rabbitmq.example.org/%2Fpubsub"
passive_declares = true
publish_exchange = "amq.topic"
topic_prefix = "org.example"
callback = "example.consumers:Printer"

[tls]
ca_cert = "/etc/fedora-messaging/cacert.pem"
keyfile = "/etc/fedora-messaging/fedora-key.pem"
certfile = "/etc/fedora-messaging/fedora-cert.pem"

[client_properties]
app = "Example consumer"
app_url = "https://example.org/consumer"
app_contacts_email = ["admin@example.org"]

[exchanges."amq.topic"]
type = "topic"
durable = true
auto_delete = false
arguments = {{}}

[queues."example.queue"]
durable = true
auto_delete = false
exclusive = false
arguments = {{x-queue-type = "quorum"}}

[[bindings]]
queue = "example.queue"
exchange = "amq.topic"
routing_keys = ["org.example.prod.#", "org.example.stg.#"]

[[bindings]]
queue = "example.queue"
exchange = "amq.topic"
routing_keys = ["org.example.dev.#"]

[qos]
prefetch_size = 0
prefetch_count = 25

[consumer_config]
greeting = "hello"
limits = {{retries = 3}}

[log_config]
version = 1
disable_existing_loggers = true

[log_config.root]
level = "INFO"
"""


@pytest.fixture(autouse=True)
def _no_system_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep a real /etc/fedmq/config.toml on the test machine out of every test."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> str:
    """The message of the error loading ``text`` from a file raises."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, environ={})
    return str(caught.value)


# --- defaults -----------------------------------------------------------------


def test_without_any_file_the_defaults_apply() -> None:
    config = load_config(environ={})

    assert config.source == "<defaults>"
    assert config.amqp_url == "amqp://"
    assert config.passive_declares is False
    assert config.publish_exchange == "amq.topic"
    assert config.topic_prefix == ""
    assert config.exchanges == ()
    assert config.queues == (DEFAULT_QUEUE,) and config.bindings == (DEFAULT_BINDING,)
    assert config.qos == QosConfig(prefetch_count=100, prefetch_size=0)
    assert config.callback is None
    assert dict(config.consumer_config) == {}
    assert config.tls is None
    assert config.log_config is None
    assert (config.concurrency, config.heartbeat, config.connect_timeout) == (1, 60, 10.0)


def test_default_client_properties_name_fedmq_and_its_version() -> None:
    properties = load_config(environ={}).client_properties

    assert properties["app"] == "fedmq"
    assert properties["product"] == "fedmq"
    assert isinstance(properties["version"], str) and properties["version"]
    assert isinstance(properties["information"], str)


def test_an_empty_file_gives_the_defaults_with_the_file_as_source(tmp_path: Path) -> None:
    path = write(tmp_path, "")

    config = load_config(path, environ={})

    assert config == Config(source=str(path))


def test_a_config_built_directly_equals_the_loaded_defaults() -> None:
    assert Config() == load_config(environ={})


# --- a full fedora-messaging file ---------------------------------------------


def test_a_fedora_messaging_config_file_loads_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, FEDORA_MESSAGING_SAMPLE)

    config = load_config(path, environ={})

    assert config.source == str(path)
    assert config.amqp_url.endswith("@rabbitmq.example.org/%2Fpubsub")
    assert config.passive_declares is True
    assert config.topic_prefix == "org.example"
    assert config.callback == "example.consumers:Printer"
    assert config.tls == TLSConfig(
        ca_cert="/etc/fedora-messaging/cacert.pem",
        certfile="/etc/fedora-messaging/fedora-cert.pem",
        keyfile="/etc/fedora-messaging/fedora-key.pem",
    )
    assert config.tls.uses_external_auth
    assert config.exchanges == (ExchangeConfig(name="amq.topic", type="topic"),)
    assert config.queues == (
        QueueConfig(name="example.queue", arguments={"x-queue-type": "quorum"}),
    )
    assert config.bindings == (
        BindingConfig("example.queue", "amq.topic", ("org.example.prod.#", "org.example.stg.#")),
        BindingConfig("example.queue", "amq.topic", ("org.example.dev.#",)),
    )
    assert config.qos == QosConfig(prefetch_count=25, prefetch_size=0)
    assert dict(config.consumer_config) == {"greeting": "hello", "limits": {"retries": 3}}
    assert config.log_config is not None
    assert config.log_config["root"] == {"level": "INFO"}


def test_client_properties_are_merged_over_fedmq_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FEDORA_MESSAGING_SAMPLE), environ={})

    assert config.client_properties["app"] == "Example consumer"
    assert config.client_properties["app_contacts_email"] == ["admin@example.org"]
    assert config.client_properties["product"] == "fedmq"
    assert "version" in config.client_properties


def test_fedmq_keys_load_and_an_integer_timeout_becomes_a_float(tmp_path: Path) -> None:
    path = write(tmp_path, "concurrency = 4\nheartbeat = 0\nconnect_timeout = 3\n")

    config = load_config(path, environ={})

    assert (config.concurrency, config.heartbeat) == (4, 0)
    assert config.connect_timeout == 3.0 and isinstance(config.connect_timeout, float)


# --- nested tables merge with their defaults ------------------------------------


def test_nested_tables_keep_defaults_for_keys_they_leave_out(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [qos]
        prefetch_count = 5
        [exchanges.events]
        type = "fanout"
        [queues.work]
        exclusive = true
        [tls]
        ca_cert = "/ca.pem"
        """,
    )

    config = load_config(path, environ={})

    assert config.qos == QosConfig(prefetch_count=5, prefetch_size=0)
    assert config.exchanges == (
        ExchangeConfig("events", type="fanout", durable=True, auto_delete=False, arguments={}),
    )
    assert config.queues == (
        QueueConfig("work", durable=True, auto_delete=False, exclusive=True, arguments={}),
    )
    assert config.tls == TLSConfig(ca_cert="/ca.pem", certfile=None, keyfile=None)
    assert not config.tls.uses_external_auth


def test_a_queue_named_empty_lets_the_broker_choose(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[queues.""]\nexclusive = true\n'), environ={})

    assert config.queues == (QueueConfig(name="", exclusive=True),)


def test_a_single_bindings_table_and_a_single_routing_key_string_are_accepted(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[bindings]\nqueue = "q"\nexchange = "x"\nrouting_key = "a.b"\n')

    config = load_config(path, environ={})

    assert config.bindings == (BindingConfig(queue="q", exchange="x", routing_keys=("a.b",)),)


# --- TOML syntax errors -----------------------------------------------------------


def test_a_toml_syntax_error_gives_file_line_and_column(tmp_path: Path) -> None:
    message = error_for(tmp_path, 'amqp_url = "amqp://"\nheartbeat = ?\n')

    assert message.startswith(f"{tmp_path / 'config.toml'}:2:13: not valid TOML: ")
    assert "invalid value" in message.lower()


def test_a_file_cut_short_points_at_its_end(tmp_path: Path) -> None:
    message = error_for(tmp_path, "heartbeat = 5\nconcurrency = ")

    assert message.startswith(f"{tmp_path / 'config.toml'}:2:15: not valid TOML: ")


def test_a_file_that_is_not_utf8_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'topic_prefix = "\xff"\n')

    with pytest.raises(ConfigurationError, match="not UTF-8"):
        load_config(path, environ={})


# --- unknown keys -------------------------------------------------------------------


def test_an_unknown_key_names_itself_and_lists_the_valid_keys(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[qos]\nprefetch_cout = 3\n")

    assert str(tmp_path / "config.toml") in message
    assert "unknown key qos.prefetch_cout" in message
    assert "did you mean qos.prefetch_count?" in message
    assert "valid keys in qos are: prefetch_count, prefetch_size" in message


def test_an_unknown_top_level_key_lists_every_top_level_key(tmp_path: Path) -> None:
    message = error_for(tmp_path, "amqp_uri = 'amqp://'\n")

    assert "unknown key amqp_uri (did you mean amqp_url?)" in message
    assert "valid keys at the top level are: amqp_url, client_properties" in message
    assert "connect_timeout" in message
    assert "source" not in message


def test_an_unknown_key_with_no_close_match_suggests_nothing(tmp_path: Path) -> None:
    message = error_for(tmp_path, "[tls]\nzzz = 1\n")

    assert "unknown key tls.zzz;" in message
    assert "did you mean" not in message


def test_an_unknown_key_in_a_named_table_quotes_the_name(tmp_path: Path) -> None:
    message = error_for(tmp_path, '[exchanges."amq.topic"]\ndurabel = true\n')

    assert 'unknown key exchanges."amq.topic".durabel' in message
    assert 'did you mean exchanges."amq.topic".durable?' in message


def test_an_unknown_key_in_a_binding_names_its_position(tmp_path: Path) -> None:
    message = error_for(
        tmp_path,
        """
        [[bindings]]
        queue = "q"
        exchange = "x"
        routing_keys = ["a"]
        [[bindings]]
        queue = "q"
        exchange = "x"
        routing_keys = ["b"]
        routing_kyes = ["c"]
        """,
    )

    assert "unknown key bindings[1].routing_kyes" in message


# --- wrong types --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("amqp_url = 5", "amqp_url must be a string, got an integer (5)"),
        (
            "passive_declares = 'yes'",
            "passive_declares must be a boolean (true or false), got a string",
        ),
        ("publish_exchange = ['a']", "publish_exchange must be a string, got an array"),
        ("callback = 1.5", "callback must be a string, got a float (1.5)"),
        ("concurrency = true", "concurrency must be an integer, got a boolean (true)"),
        ("heartbeat = 1.5", "heartbeat must be an integer, got a float (1.5)"),
        ("connect_timeout = false", "connect_timeout must be a number, got a boolean (false)"),
        ("consumer_config = 3", "consumer_config must be a table, got an integer (3)"),
        ("log_config = 'x'", "log_config must be a table, got a string"),
        ("qos = 3", "qos must be a table, got an integer (3)"),
        ("[qos]\nprefetch_count = '10'", "qos.prefetch_count must be an integer, got a string"),
        ("[tls]\nca_cert = true", "tls.ca_cert must be a string, got a boolean (true)"),
        ("[client_properties]\napp = {a = 1}", "client_properties.app must be a string, number"),
        ("exchanges = []", "exchanges must be a table, got an array"),
        ("[exchanges.x]\ndurable = 1", "exchanges.x.durable must be a boolean (true or false)"),
        ("[exchanges.x]\narguments = 1", "exchanges.x.arguments must be a table, got an integer"),
        ("[queues]\nq = 1", "queues.q must be a table, got an integer (1)"),
        ("[queues.q]\nexclusive = 'no'", "queues.q.exclusive must be a boolean"),
        ("bindings = 'q'", "bindings must be a table or an array of tables, got a string"),
        ("bindings = [1]", "bindings[0] must be a table, got an integer (1)"),
        (
            "[[bindings]]\nqueue = 1\nexchange = 'x'\nrouting_keys = ['a']",
            "bindings[0].queue must be a string, got an integer (1)",
        ),
        (
            "[[bindings]]\nqueue = 'q'\nexchange = 'x'\nrouting_keys = ['a', 2]",
            "bindings[0].routing_keys[1] must be a string, got an integer (2)",
        ),
        (
            "[[bindings]]\nqueue = 'q'\nexchange = 'x'\nrouting_keys = 3",
            "bindings[0].routing_keys must be a string or an array of strings",
        ),
    ],
)
def test_a_value_of_the_wrong_type_names_key_expected_and_actual_type(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_for(tmp_path, text + "\n")

    assert message.startswith(f"{tmp_path / 'config.toml'}: ")
    assert expected in message


# --- values out of range and broken rules ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("concurrency = 0", "concurrency must be at least 1, got 0"),
        ("heartbeat = -1", "heartbeat must be at least 0, got -1"),
        ("connect_timeout = 0", "connect_timeout must be more than 0 seconds, got 0.0"),
        ("[qos]\nprefetch_count = 70000", "qos.prefetch_count must be from 0 to 65535, got 70000"),
        ("[qos]\nprefetch_size = 1", "qos.prefetch_size must be 0"),
        (
            "concurrency = 11\n[qos]\nprefetch_count = 10",
            "concurrency (11) must not exceed qos.prefetch_count (10)",
        ),
        ("callback = 'just_a_module'", "callback must look like 'package.module:object'"),
        ("amqp_url = 'http://localhost/'", "amqp_url must start with amqp:// or amqps://"),
        ("amqp_url = 'amqp://localhost:notaport/'", "amqp_url has a port that is not a number"),
        ("[tls]\ncertfile = '/c.pem'", "tls.certfile is set but tls.keyfile is not"),
        ("[tls]\nkeyfile = '/k.pem'", "tls.keyfile is set but tls.certfile is not"),
        ("[tls]\nca_cert = ''", "tls.ca_cert must be a file path, not an empty string"),
        ('[exchanges.""]\ntype = "topic"', 'exchanges."": the default exchange cannot be declared'),
        ("[[bindings]]\nqueue = 'q'", "bindings[0] is missing exchange and routing_keys"),
        (
            "[[bindings]]\nqueue = 'q'\nexchange = ''\nrouting_keys = ['a']",
            "bindings[0].exchange must not be empty",
        ),
        (
            "[[bindings]]\nqueue = 'q'\nexchange = 'x'\nrouting_keys = []",
            "bindings[0].routing_keys must not be empty",
        ),
        (
            "[[bindings]]\nqueue = 'q'\nexchange = 'x'\nrouting_keys = ['a']\nrouting_key = 'b'",
            "bindings[0] has routing_key and routing_keys; keep one",
        ),
    ],
)
def test_a_value_that_breaks_a_rule_says_which_rule(
    tmp_path: Path, text: str, expected: str
) -> None:
    message = error_for(tmp_path, text + "\n")

    assert message.startswith(f"{tmp_path / 'config.toml'}: ")
    assert expected in message


def test_unlimited_prefetch_allows_any_concurrency(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "concurrency = 500\n[qos]\nprefetch_count = 0\n"), environ={}
    )

    assert config.concurrency == 500


def test_errors_are_one_line_without_a_chained_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "heartbeat = [\n")

    with pytest.raises(ConfigurationError) as caught:
        load_config(path, environ={})

    assert "\n" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- which file, and the environment -----------------------------------------------------------


def test_a_missing_file_given_by_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(
        ConfigurationError, match=re.escape(f"config file {missing} does not exist")
    ):
        load_config(missing, environ={})


def test_a_path_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"cannot read config file {tmp_path}:")):
        load_config(tmp_path, environ={})


def test_fedmq_config_names_the_file_when_no_path_is_given(tmp_path: Path) -> None:
    path = write(tmp_path, "heartbeat = 7\n")

    config = load_config(environ={"FEDMQ_CONFIG": str(path)})

    assert (config.source, config.heartbeat) == (str(path), 7)


def test_a_missing_fedmq_config_file_is_named_with_the_variable(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.toml")

    with pytest.raises(ConfigurationError) as caught:
        load_config(environ={"FEDMQ_CONFIG": missing})

    assert missing in str(caught.value) and "$FEDMQ_CONFIG" in str(caught.value)


def test_an_explicit_path_wins_over_fedmq_config(tmp_path: Path) -> None:
    chosen = write(tmp_path, "heartbeat = 1\n", name="chosen.toml")
    ignored = write(tmp_path, "heartbeat = 2\n", name="ignored.toml")

    config = load_config(chosen, environ={"FEDMQ_CONFIG": str(ignored)})

    assert config.heartbeat == 1


def test_the_system_file_is_read_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = write(tmp_path, "heartbeat = 9\n", name="system.toml")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(system))

    config = load_config(environ={})

    assert (config.source, config.heartbeat) == (str(system), 9)


def test_an_empty_fedmq_config_counts_as_unset() -> None:
    assert load_config(environ={"FEDMQ_CONFIG": ""}).source == "<defaults>"


def test_fedmq_amqp_url_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "amqp_url = 'amqp://file-host/'\n")

    config = load_config(path, environ={"FEDMQ_AMQP_URL": "amqps://env-host/vhost"})

    assert config.amqp_url == "amqps://env-host/vhost"


def test_fedmq_amqp_url_overrides_the_defaults() -> None:
    config = load_config(environ={"FEDMQ_AMQP_URL": "amqp://broker:5673/"})

    assert (config.amqp_url, config.source) == ("amqp://broker:5673/", "<defaults>")


def test_a_bad_fedmq_amqp_url_names_the_variable_and_hides_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(environ={"FEDMQ_AMQP_URL": f"http://user:{SECRET}@host/"})

    message = str(caught.value)
    assert message.startswith("$FEDMQ_AMQP_URL must start with amqp:// or amqps://")
    assert "user:***@host" in message
    assert SECRET not in message


def test_the_real_environment_is_read_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEDMQ_CONFIG", str(write(tmp_path, "heartbeat = 3\n")))
    monkeypatch.setenv("FEDMQ_AMQP_URL", "amqp://from-env/")

    config = load_config()

    assert (config.heartbeat, config.amqp_url) == (3, "amqp://from-env/")


# --- the password stays secret ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("amqp://", "amqp://"),
        ("amqp://guest@localhost/", "amqp://guest@localhost/"),
        (f"amqp://guest:{SECRET}@localhost:5672/%2F", "amqp://guest:***@localhost:5672/%2F"),
        (f"amqps://:{SECRET}@host/?heartbeat=5", "amqps://:***@host/?heartbeat=5"),
        (f"amqps://u:{SECRET}@h/v?cacert=/a@b", "amqps://u:***@h/v?cacert=/a@b"),
        ("amqp://u:pa/ss#wo@rd@host/", "amqp://u:***@host/"),
        (f"guest:{SECRET}@localhost", "guest:***@localhost"),
    ],
)
def test_redact_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_repr_shows_the_redacted_url_and_never_the_password() -> None:
    config = config_from_mapping({"amqp_url": f"amqp://fedmq:{SECRET}@broker/"})

    assert SECRET not in repr(config)
    assert "redacted_url='amqp://fedmq:***@broker/'" in repr(config)
    assert config.redacted_url == "amqp://fedmq:***@broker/"


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{SECRET}@host/",
        f"amqp://user:{SECRET}@host:port/",
        f"user:{SECRET}@host",
    ],
)
def test_errors_about_the_url_never_show_the_password(tmp_path: Path, url: str) -> None:
    message = error_for(tmp_path, f"amqp_url = '{url}'\n")

    assert "amqp_url" in message and "***" in message
    assert SECRET not in message


def test_errors_elsewhere_in_a_file_with_a_password_never_show_it(tmp_path: Path) -> None:
    message = error_for(tmp_path, f"amqp_url = 'amqp://u:{SECRET}@h/'\nheartbeat = '{SECRET}'\n")

    assert "heartbeat must be an integer, got a string" in message
    assert SECRET not in message


# --- immutability and replace() -----------------------------------------------------------------


def test_a_config_cannot_be_changed_in_place(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FEDORA_MESSAGING_SAMPLE), environ={})

    with pytest.raises(dataclasses.FrozenInstanceError):
        config.heartbeat = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.qos.prefetch_count = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.client_properties["app"] = "other"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.consumer_config["greeting"] = "bye"  # type: ignore[index]
    with pytest.raises(TypeError):
        config.queues[0].arguments["x-queue-type"] = "classic"  # type: ignore[index]
    assert isinstance(config.exchanges, tuple) and isinstance(
        config.bindings[0].routing_keys, tuple
    )


def test_changing_the_callers_dict_afterwards_changes_nothing() -> None:
    consumer_config: dict[str, Any] = {"limits": {"retries": 3}}
    arguments: dict[str, Any] = {"x-max-length": 10}
    config = config_from_mapping(
        {"consumer_config": consumer_config, "queues": {"q": {"arguments": arguments}}}
    )

    consumer_config["limits"]["retries"] = 99
    arguments["x-max-length"] = 99

    assert config.consumer_config["limits"] == {"retries": 3}
    assert config.queues[0].arguments["x-max-length"] == 10


def test_replace_returns_a_checked_copy_and_leaves_the_original() -> None:
    original = Config()

    changed = original.replace(concurrency=4, queues=[QueueConfig("q")])

    assert (changed.concurrency, changed.queues) == (4, (QueueConfig("q"),))
    assert original.concurrency == 1 and original.queues == (DEFAULT_QUEUE,)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"concurrency": 0}, "<defaults>: concurrency must be at least 1, got 0"),
        ({"concurrency": "2"}, "<defaults>: concurrency must be an integer, got a string"),
        ({"qos": QosConfig(prefetch_count=2), "concurrency": 3}, "must not exceed"),
        ({"tls": TLSConfig(certfile="/c.pem")}, "tls.certfile is set but tls.keyfile is not"),
        ({"amqp_url": f"redis://u:{SECRET}@h"}, "amqp_url must start with amqp://"),
    ],
)
def test_replace_rejects_what_loading_would_reject(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Config().replace(**changes)

    assert expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_tls_uses_external_auth_only_with_both_certificate_and_key() -> None:
    assert TLSConfig(certfile="/c.pem", keyfile="/k.pem").uses_external_auth
    assert not TLSConfig(ca_cert="/ca.pem").uses_external_auth


# --- the parse_* helpers take fedora-messaging's consume() arguments ------------------------------


def test_parse_queues_reads_fedora_messagings_queues_dict() -> None:
    queues = parse_queues(
        {
            "my_queue": {"durable": False, "auto_delete": True, "exclusive": True, "arguments": {}},
            "other": {},
        }
    )

    assert queues == (
        QueueConfig("my_queue", durable=False, auto_delete=True, exclusive=True),
        QueueConfig("other"),
    )


def test_parse_bindings_reads_one_dict_or_a_list() -> None:
    one = {"queue": "q", "exchange": "amq.topic", "routing_keys": ["#"]}
    two = {"queue": "q", "exchange": "x", "routing_keys": "k", "arguments": {"x-match": "any"}}

    assert parse_bindings(one) == (BindingConfig("q", "amq.topic", ("#",)),)
    assert parse_bindings([one, two]) == (
        BindingConfig("q", "amq.topic", ("#",)),
        BindingConfig("q", "x", ("k",), arguments={"x-match": "any"}),
    )


def test_parse_exchanges_fills_in_defaults() -> None:
    assert parse_exchanges({"logs": {"type": "fanout"}}) == (
        ExchangeConfig("logs", type="fanout", durable=True, auto_delete=False),
    )


def test_parse_helpers_name_their_source_and_key_in_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_queues({"q": {"durible": True}})

    assert str(caught.value).startswith("<arguments>: unknown key queues.q.durible")

    missing = r"^consume\(\): bindings\[0\] is missing exchange$"
    with pytest.raises(ConfigurationError, match=missing):
        parse_bindings([{"queue": "q", "routing_keys": ["#"]}], source="consume()")


def test_config_from_mapping_names_arguments_as_its_source() -> None:
    assert config_from_mapping({}).source == "<arguments>"
    with pytest.raises(
        ConfigurationError, match=r"^<arguments>: the configuration must be a table"
    ):
        config_from_mapping([])  # type: ignore[arg-type]


# --- quiet --------------------------------------------------------------------------------------


def test_loading_logs_and_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    load_config(write(tmp_path, FEDORA_MESSAGING_SAMPLE), environ={})
    with pytest.raises(ConfigurationError):
        load_config(write(tmp_path, "[qos]\nprefetch = 1\n", name="bad.toml"), environ={})

    assert caplog.records == []
    assert capsys.readouterr() == ("", "")


# --- keys for running as a service and reconnecting ---------------------------


def test_service_keys_have_their_defaults():
    config = config_from_mapping({})
    assert config.drain_timeout == 30.0
    assert config.log_format == "text"
    assert config.monitoring.port is None and config.monitoring.address == "127.0.0.1"
    assert config.reconnect.initial_delay == 1.0 and config.reconnect.max_delay == 60.0
    assert config.reconnect.max_attempts == 0
    assert config.broker_urls == ("amqp://",)


def test_amqp_urls_list_a_clusters_nodes_and_never_show_their_passwords():
    config = config_from_mapping(
        {"amqp_urls": ["amqp://u:secret1@a:5672/", "amqp://u:secret2@b:5672/"]}
    )
    assert config.broker_urls == ("amqp://u:secret1@a:5672/", "amqp://u:secret2@b:5672/")
    assert "secret" not in repr(config)


def test_a_bad_url_in_amqp_urls_names_its_index():
    with pytest.raises(ConfigurationError, match=r"amqp_urls\[1\]"):
        config_from_mapping({"amqp_urls": ["amqp://a/", "http://b/"]})


def test_reconnect_and_monitoring_tables_merge_with_defaults_and_are_checked():
    config = config_from_mapping({"reconnect": {"max_delay": 10}, "monitoring": {"port": 9100}})
    assert config.reconnect.max_delay == 10 and config.reconnect.initial_delay == 1.0
    assert config.monitoring.port == 9100
    with pytest.raises(ConfigurationError, match=r"reconnect\.jitter"):
        config_from_mapping({"reconnect": {"jitter": 1.5}})
    with pytest.raises(ConfigurationError, match=r"unknown key monitoring\.prot"):
        config_from_mapping({"monitoring": {"prot": 1}})


def test_log_format_is_text_or_json():
    assert config_from_mapping({"log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigurationError, match="log_format"):
        config_from_mapping({"log_format": "xml"})


# --- keys for decoding message bodies -------------------------------------------


def test_decoding_is_on_with_a_64_mib_inflation_limit_by_default():
    config = config_from_mapping({})
    assert config.decode is True
    assert config.max_body_size == 64 * 1024 * 1024


def test_decode_and_max_body_size_are_read_from_the_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("decode = false\nmax_body_size = 1048576\n")
    config = load_config(path, environ={})
    assert config.decode is False
    assert config.max_body_size == 1048576


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"decode": "no"}, "decode must be a boolean (true or false), got a string"),
        ({"max_body_size": "64M"}, "max_body_size must be an integer, got a string"),
        ({"max_body_size": True}, "max_body_size must be an integer, got a boolean"),
        ({"max_body_size": 0}, "max_body_size must be at least 1, got 0"),
    ],
)
def test_a_bad_decode_or_max_body_size_names_the_key(data, expected):
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        config_from_mapping(data, source="c.toml")


def test_sample_config_loads_and_shows_every_key():
    """sample.toml loads as it is, and names every top-level key and table, commented out."""
    sample = Path(__file__).parents[2] / "sample.toml"
    load_config(sample)
    text = sample.read_text()
    for item in dataclasses.fields(Config):
        if item.name == "source":
            continue
        shown = re.search(
            rf"^#?\s*(\[\[?{item.name}[\].]|{item.name}\s*=)", text, flags=re.MULTILINE
        )
        assert shown, f"sample.toml does not show {item.name}"
