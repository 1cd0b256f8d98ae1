"""fedmq.testing.mock_sends: the same verdicts as fedora-messaging's mock_sends.

Each scenario runs twice: the code under test publishing with
fedora-messaging's ``api.publish`` inside its ``mock_sends``, and with
``fedmq.publish`` inside fedmq's. The verdicts must be the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import jsonschema.exceptions
import pytest
from fedmq_test_schemas import BuildFinishedV1
from fedora_messaging import api as fm_api
from fedora_messaging import testing as fm_testing
from fedora_messaging.message import Message as FmMessage

import fedmq
from fedmq.testing import mock_sends

BUILD = {"build_id": 3, "package": "bash", "owner": "carol", "succeeded": True}


def verdict(
    helper: Callable[..., Any], publish: Callable[[Any], Any], sends: list[Any], expected: list[Any]
) -> str:
    """What ``helper(*expected)`` says of a block publishing ``sends``: "ok" or the error type."""
    try:
        with helper(*expected) as sent:
            for message in sends:
                publish(message)
    except (AssertionError, jsonschema.exceptions.ValidationError) as error:
        return type(error).__name__
    assert sent == sends
    return "ok"


SCENARIOS: dict[str, tuple[Callable[[], list[Any]], Callable[[], list[Any]], str]] = {
    "classes-and-instances": (
        lambda: [FmMessage(body={"Hello": "world"}), FmMessage(body={"Hello": "world"})],
        lambda: [FmMessage, FmMessage(body={"Hello": "world"})],
        "ok",
    ),
    "too-few-sent": (lambda: [FmMessage(body={"a": 1})], lambda: [FmMessage, FmMessage], "Assert"),
    "too-many-sent": (lambda: [FmMessage(body={"a": 1})] * 2, lambda: [FmMessage], "Assert"),
    "nothing-expected-nothing-sent": (list, list, "ok"),
    "wrong-class": (lambda: [FmMessage(body={"a": 1})], lambda: [BuildFinishedV1], "Assert"),
    "subclass-matches-base": (lambda: [BuildFinishedV1(body=BUILD)], lambda: [FmMessage], "ok"),
    "other-body": (
        lambda: [FmMessage(body={"a": 1})],
        lambda: [FmMessage(body={"a": 2})],
        "Assert",
    ),
    "other-topic": (
        lambda: [FmMessage(body={"a": 1}, topic="x")],
        lambda: [FmMessage(body={"a": 1}, topic="y")],
        "Assert",
    ),
    "other-headers": (
        lambda: [FmMessage(body={"a": 1}, headers={"k": 1})],
        lambda: [FmMessage(body={"a": 1}, headers={"k": 2})],
        "Assert",
    ),
    "sent-message-fails-its-schema": (
        lambda: [BuildFinishedV1(body={"build_id": 0})],
        lambda: [BuildFinishedV1],
        "ValidationError",
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_mock_sends_gives_fedora_messagings_verdict(scenario: str):
    make_sends, make_expected, wanted = SCENARIOS[scenario]
    sends = make_sends()
    theirs = verdict(fm_testing.mock_sends, fm_api.publish, sends, make_expected())
    ours = verdict(mock_sends, fedmq.publish, sends, make_expected())
    assert ours == theirs
    assert ours.startswith(wanted)


def test_mock_sends_compares_fedmq_messages_by_class_topic_body_and_headers():
    with mock_sends(fedmq.Message, fedmq.Message({"a": 1}, topic="t", headers={"k": "v"})):
        fedmq.publish(fedmq.Message({"b": 2}, topic="other"))
        fedmq.publish(fedmq.Message({"a": 1}, topic="t", headers={"k": "v"}))
    with (
        pytest.raises(AssertionError, match="headers"),
        mock_sends(fedmq.Message({"a": 1}, topic="t", headers={"k": "v"})),
    ):
        fedmq.publish(fedmq.Message({"a": 1}, topic="t", headers={"k": "w"}))


def test_mock_sends_records_publishes_from_other_threads_and_sends_nothing():
    # No broker listens on this config's port: a real publish would fail.
    config = fedmq.Config(amqp_url="amqp://127.0.0.1:9/")
    with mock_sends(fedmq.Message, fedmq.Message) as sent:
        fedmq.publish(fedmq.Message({"n": 1}, topic="main"), config=config)
        worker = threading.Thread(
            target=fedmq.publish, args=(fedmq.Message({"n": 2}, topic="worker"),)
        )
        worker.start()
        worker.join()
    assert [message.topic for message in sent] == ["main", "worker"]


def test_after_mock_sends_publish_is_no_longer_intercepted():
    with mock_sends(fedmq.Message):
        fedmq.publish(fedmq.Message({"n": 1}, topic="t"))
    seen: list[Any] = []
    with fedmq.api.intercepting_publishes(seen.append):
        with mock_sends():
            pass
        fedmq.publish(fedmq.Message({"n": 2}, topic="t"))
    assert [message.body for message in seen] == [{"n": 2}]
