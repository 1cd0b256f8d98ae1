"""fedmq's pytest plugin: nothing changes for a suite that does not use it; its fixtures
and its publish guard work for one that does. Each scenario runs pytest in a subprocess.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

UNUSED = """
import sys

import pytest

def test_passes(tmp_path):
    assert tmp_path.exists()

def test_fails():
    assert 1 == 2

@pytest.fixture
def thing():
    return 3

def test_uses_a_fixture(thing):
    assert thing == 3

def test_nothing_of_fedmq_is_imported():
    # (pytest-twisted, when installed, imports the reactor itself.)
    assert not [name for name in sys.modules if name.split(".")[0] == "fedmq"]
"""


def _summary(result: pytest.RunResult) -> dict[str, int]:
    return result.parseoutcomes()


def _plan(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith(("SETUP", "TEARDOWN", "  "))]


def test_a_suite_that_does_not_use_the_plugin_runs_exactly_as_without_it(
    pytester: pytest.Pytester,
):
    """Same outcomes, same fixture setup plan, and no module of fedmq imported."""
    pytester.makepyfile(test_unused=UNUSED)
    with_plugin = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:fedmq")
    assert _summary(with_plugin) == _summary(without) == {"passed": 3, "failed": 1}
    plan_with = pytester.runpytest_subprocess("--setup-plan", "-p", "no:cacheprovider")
    plan_without = pytester.runpytest_subprocess(
        "--setup-plan", "-p", "no:cacheprovider", "-p", "no:fedmq"
    )
    assert _plan(plan_with) == _plan(plan_without) != []


def test_the_plugin_is_loaded_from_its_entry_point(pytester: pytest.Pytester):
    """Pytest lists fedmq's fixtures with their documentation once fedmq is installed."""
    result = pytester.runpytest_subprocess("--fixtures")
    text = result.stdout.str()
    for name in ("fedmq_run_callback", "fedmq_publishes", "fedmq_broker", "fedmq_amqp_url"):
        assert name in text


FIXTURES = """
import fedmq
from fedmq import Message, Retry
from fedmq.config import config_from_mapping
from fedmq.consumer import Consumer
from fedmq.testing import Outcome

def retry(message):
    fedmq.publish(Message(message.body, "org.example.retrying"))
    raise Retry()

def test_run_callback(fedmq_run_callback):
    result = fedmq_run_callback(retry, "x")
    assert result.outcome is Outcome.RETRY
    result.published.assert_published("org.example.#")

def test_publishes(fedmq_publishes):
    fedmq.publish(Message(1, "a.b"))
    fedmq_publishes.assert_published("a.*", body=1, count=1)

def test_broker(fedmq_broker, fedmq_clock):
    config = config_from_mapping({
        "queues": {"q": {}},
        "bindings": [{"queue": "q", "exchange": "amq.topic", "routing_keys": ["#"]}],
    })
    seen = []
    consumer = Consumer(config, seen.append, reactor=fedmq_clock, connect=fedmq_broker.connect)
    consumer.start()
    fedmq_broker.publish(Message("hi", "x"))
    fedmq_clock.run_until(lambda: consumer.counts["acked"] == 1)
    assert [m.body for m in seen] == ["hi"]
"""


def test_the_fixtures_run_callbacks_capture_publishes_and_serve_a_consumer(
    pytester: pytest.Pytester,
):
    """fedmq_run_callback, fedmq_publishes and fedmq_broker work in a user's suite."""
    pytester.makepyfile(test_fixtures=FIXTURES)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert _summary(result) == {"passed": 3}


GUARDED = """
import pytest
import fedmq
from fedmq import Message
from fedmq.config import config_from_mapping

def test_stray_publish():
    fedmq.publish(Message(1, "org.example.stray"))

def test_captured_publish(fedmq_publishes):
    fedmq.publish(Message(1, "org.example.fine"))
    fedmq_publishes.assert_published("org.example.fine")

@pytest.mark.fedmq_allow_publish
def test_allowed_publish_goes_to_the_broker():
    # On pytest-twisted's reactor: a Deferred still waiting on the (refused) connection.
    config = config_from_mapping({"amqp_url": "amqp://127.0.0.1:1/"})
    sent = fedmq.publish(Message({"n": 1}, "org.example.real"), config=config)
    assert not sent.called
    sent.addErrback(lambda _: None)
"""


def test_with_the_guard_on_a_stray_publish_fails_at_once_and_says_what_to_do(
    pytester: pytest.Pytester,
):
    """fedmq_guard_publishes = true: an uncaptured publish fails naming its topic and the
    remedies; a captured one passes; a marked one goes to the network.
    """
    pytester.makeini("[pytest]\nfedmq_guard_publishes = true\n")
    pytester.makepyfile(test_guarded=GUARDED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    assert _summary(result) == {"passed": 2, "failed": 1}
    result.stdout.fnmatch_lines(
        [
            (
                "*PublishNotCaptured: fedmq.publish() of a message with topic 'org.example.stray'"
                " in a test that set up no broker*"
            ),
        ]
    )
    assert result.duration < 60


def test_the_guard_is_off_unless_enabled(pytester: pytest.Pytester):
    """Without the option, the marker is unknown to --strict-markers: nothing was registered."""
    pytester.makepyfile(test_guarded=GUARDED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.stdout.fnmatch_lines(["*'fedmq_allow_publish' not found in `markers`*"])
