"""The meaning fedmq gives fedora-messaging's configuration keys: defaults for the
topology, bindings without a queue, per-queue ``passive``, upper-case keys, the
files it looks for, and which TLS settings apply when.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmq.config import (
    DEFAULT_BINDING,
    DEFAULT_QUEUE,
    BindingConfig,
    QueueConfig,
    check_runnable,
    config_from_mapping,
    load_config,
)
from fedmq.exceptions import ConfigurationError
from fedmq.testing import make_test_certificates


def test_without_queues_and_bindings_a_server_named_queue_gets_everything_on_amq_topic() -> None:
    config = config_from_mapping({"callback": "fedmq.example:printer"})

    assert config.queues == (QueueConfig(name="", durable=False, auto_delete=True, exclusive=True),)
    assert config.bindings == (BindingConfig(queue="", exchange="amq.topic", routing_keys=("#",)),)
    assert (config.queues, config.bindings) == ((DEFAULT_QUEUE,), (DEFAULT_BINDING,))


def test_a_binding_without_a_queue_binds_the_server_named_queue() -> None:
    config = config_from_mapping(
        {"bindings": [{"exchange": "amq.topic", "routing_keys": ["org.fedoraproject.#"]}]}
    )

    assert config.queues == (DEFAULT_QUEUE,)
    assert config.bindings == (
        BindingConfig(queue="", exchange="amq.topic", routing_keys=("org.fedoraproject.#",)),
    )


def test_named_queues_without_bindings_get_no_default_binding() -> None:
    config = config_from_mapping({"queues": {"orders": {}}})

    assert [queue.name for queue in config.queues] == ["orders"]
    assert config.bindings == ()


def test_a_binding_without_a_queue_beside_only_named_queues_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        config_from_mapping(
            {"queues": {"orders": {}}, "bindings": [{"exchange": "x", "routing_keys": "#"}]},
            source="c.toml",
        )

    assert str(caught.value) == (
        "c.toml: bindings[0] names no queue, so it binds the server-named queue, but the "
        "queues table declares none; add a queue key naming one of its queues"
    )


def test_an_empty_queues_table_loads_but_cannot_run() -> None:
    config = config_from_mapping({"queues": {}}, source="c.toml")

    assert config.queues == () and config.bindings == ()
    with pytest.raises(ConfigurationError, match=r"^c.toml: the queues table is empty"):
        check_runnable(config)


def test_passive_may_be_set_per_queue_and_per_exchange() -> None:
    config = config_from_mapping(
        {
            "exchanges": {"events": {"type": "topic", "passive": True}},
            "queues": {"mine": {"passive": False}, "theirs": {"passive": True}, "any": {}},
        }
    )

    assert config.exchanges[0].passive is True
    assert [queue.passive for queue in config.queues] == [False, True, None]


def test_top_level_keys_are_read_whatever_their_case() -> None:
    config = config_from_mapping({"AMQP_URL": "amqp://broker/", "Topic_Prefix": "org.example"})

    assert (config.amqp_url, config.topic_prefix) == ("amqp://broker/", "org.example")


def test_a_key_given_twice_in_two_cases_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^c.toml: amqp_url is given twice"):
        config_from_mapping({"AMQP_URL": "amqp://a/", "amqp_url": "amqp://b/"}, source="c.toml")


def test_publish_priority_must_be_an_amqp_priority() -> None:
    assert config_from_mapping({"publish_priority": 5}).publish_priority == 5
    with pytest.raises(ConfigurationError, match=r"publish_priority must be from 0 to 255"):
        config_from_mapping({"publish_priority": 256})


def test_fedora_messagings_file_is_read_when_fedmq_has_none(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('amqp_url = "amqp://fedora-messaging-host/"\n')

    config = load_config(environ={"FEDORA_MESSAGING_CONF": str(path)})

    assert (config.source, config.amqp_url) == (str(path), "amqp://fedora-messaging-host/")
    # Its peers are fedora-messaging consumers.
    assert config.publish_format == "fedora-messaging"


def test_fedmqs_own_variable_wins_over_fedora_messagings(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours.toml", tmp_path / "theirs.toml"
    ours.write_text('amqp_url = "amqp://ours/"\n')
    theirs.write_text('amqp_url = "amqp://theirs/"\n')

    config = load_config(environ={"FEDMQ_CONFIG": str(ours), "FEDORA_MESSAGING_CONF": str(theirs)})

    assert (config.amqp_url, config.publish_format) == ("amqp://ours/", "fedmq")


# --- which TLS files matter ----------------------------------------------------------


def _tls_config(url: str, **tls: str) -> dict[str, object]:
    return {"amqp_url": url, "tls": tls}


def test_tls_files_of_a_plain_url_are_not_needed() -> None:
    config = config_from_mapping(_tls_config("amqp://", ca_cert="/nowhere/ca.pem"))

    check_runnable(config)  # fedora-messaging's example: [tls] unused with amqp://


def test_a_missing_tls_file_of_an_amqps_url_names_the_key_and_path() -> None:
    config = config_from_mapping(
        _tls_config("amqps://u:secret@broker/", ca_cert="/nowhere/ca.pem"), source="c.toml"
    )

    with pytest.raises(ConfigurationError) as caught:
        check_runnable(config)

    assert str(caught.value) == (
        "c.toml: tls.ca_cert: /nowhere/ca.pem does not exist (needed for the TLS connection "
        "to amqps://u:***@broker/)"
    )


def test_an_amqps_url_among_amqp_urls_needs_the_tls_files(tmp_path: Path) -> None:
    config = config_from_mapping(
        {
            "amqp_urls": ["amqp://a/", "amqps://b/"],
            "tls": {"certfile": str(tmp_path), "keyfile": str(tmp_path)},
        },
        source="c.toml",
    )

    with pytest.raises(ConfigurationError, match=r"tls.certfile: .* is a directory, not a file"):
        check_runnable(config)


def test_readable_pem_files_pass(tmp_path: Path) -> None:
    make_test_certificates(tmp_path)
    config = config_from_mapping(
        _tls_config(
            "amqps://broker/",
            ca_cert=str(tmp_path / "ca.pem"),
            certfile=str(tmp_path / "client.pem"),
            keyfile=str(tmp_path / "client.key"),
        )
    )

    check_runnable(config)
