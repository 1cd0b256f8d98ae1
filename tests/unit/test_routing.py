"""fedmq.testing.routing routes as RabbitMQ does, case for case of the shared table."""

from __future__ import annotations

import pytest

from fedmq.testing import headers_match, topic_matches
from tests.routing_cases import case_id, headers_cases, recorded_verdicts, topic_cases


def test_the_topic_router_agrees_with_rabbitmq_on_every_case_of_the_table():
    """Each (pattern, routing key) of the table routes as the recorded broker routed it."""
    recorded = recorded_verdicts()["topic"]
    assert len(recorded) == len(topic_cases()) >= 500
    disagreements = [
        case for case in topic_cases() if topic_matches(*case) != recorded[case_id(case)]
    ]
    assert disagreements == []


def test_the_headers_router_agrees_with_rabbitmq_on_every_case_of_the_table():
    """Each (binding arguments, headers) of the table routes as the recorded broker routed it."""
    recorded = recorded_verdicts()["headers"]
    assert len(recorded) == len(headers_cases()) >= 300
    disagreements = [
        case for case in headers_cases() if headers_match(*case) != recorded[case_id(case)]
    ]
    assert disagreements == []


@pytest.mark.parametrize(
    ("pattern", "key"), [("a.#", "a"), ("#.b", "b"), ("a.#.b", "a.b"), ("#", ""), ("#.#", "a")]
)
def test_a_hash_stands_for_zero_words(pattern: str, key: str):
    """``#`` matches no word at all, at the start, the end, the middle or alone."""
    assert topic_matches(pattern, key)


@pytest.mark.parametrize(("pattern", "key"), [("*", ""), ("a.*", "a"), ("a*", "ab"), ("", "a")])
def test_a_star_needs_exactly_one_word(pattern: str, key: str):
    """``*`` never matches a missing word, and wildcards inside a word are literal."""
    assert not topic_matches(pattern, key)


def test_an_unknown_x_match_is_refused_with_the_modes_named():
    """A binding with x-match "some" is an error listing the four modes."""
    with pytest.raises(ValueError, match="all, any, all-with-x, any-with-x"):
        headers_match({"x-match": "some"}, {})
