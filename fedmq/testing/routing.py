"""How RabbitMQ routes: topic patterns and headers bindings, as pure functions.

These are the rules the in-memory broker (:mod:`fedmq.testing.memory`)
routes by, and that :class:`fedmq.testing.PublishCapture` matches topics
with. fedmq's suite checks them against a real RabbitMQ node on a generated
table of edge cases (see "Testing your consumers" in the documentation).

Topic rules, as RabbitMQ applies them: a routing key and a binding pattern
are split on ``.`` into words (an empty key has no words at all; ``"a."``
has two, the second empty); ``*`` matches exactly one word, empty or not;
``#`` matches zero or more words, wherever it stands.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["HEADERS_MATCH_MODES", "headers_match", "topic_matches"]

#: The values of a headers binding's ``x-match`` argument.
HEADERS_MATCH_MODES = ("all", "any", "all-with-x", "any-with-x")


def _words(key: str) -> tuple[str, ...]:
    return tuple(key.split(".")) if key else ()


def topic_matches(pattern: str, routing_key: str) -> bool:
    """Whether a topic exchange routes ``routing_key`` along a binding of ``pattern``.

    Args:
        pattern: the binding key, with ``*`` and ``#`` wildcards.
        routing_key: the message's routing key (its topic).

    Returns:
        True when RabbitMQ would route it.

    """
    return _match(_words(pattern), _words(routing_key))


@functools.lru_cache(maxsize=4096)
def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        # Zero words, or one more word and "#" still in force.
        return _match(rest, words) or (bool(words) and _match(pattern, words[1:]))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


def _same_value(bound: Any, sent: Any) -> bool:
    # AMQP tables are typed: a boolean is never equal to a number.
    if isinstance(bound, bool) != isinstance(sent, bool):
        return False
    return bool(bound == sent)


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """Whether a headers exchange routes a message with ``headers`` along a binding.

    Args:
        arguments: the binding's arguments: ``x-match`` (``all`` by default,
            ``any``, ``all-with-x`` or ``any-with-x``) and the headers to
            compare. A binding argument whose value is None matches any
            message that has that header, whatever its value.
        headers: the message's application headers.

    Returns:
        True when RabbitMQ would route it. Binding arguments whose names
        begin with ``x-`` take part only in the ``-with-x`` modes, and
        ``x-match`` never does. With ``all``, a binding with nothing to
        compare matches every message; with ``any``, none.

    Raises:
        ValueError: ``x-match`` is none of the four modes.

    """
    mode = arguments.get("x-match", "all")
    if mode not in HEADERS_MATCH_MODES:
        raise ValueError(f"x-match must be one of {', '.join(HEADERS_MATCH_MODES)}, not {mode!r}")
    with_x = mode.endswith("-with-x")
    wanted = {
        name: value
        for name, value in arguments.items()
        if name != "x-match" and (with_x or not name.startswith("x-"))
    }
    sent = headers or {}
    matched = [
        name in sent and (value is None or _same_value(value, sent[name]))
        for name, value in wanted.items()
    ]
    return all(matched) if mode.startswith("all") else any(matched)
