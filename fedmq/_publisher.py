"""A message's wire form: the routing key, body and properties it is published with.

Before anything is sent, a message is put in its wire form here: the topic
prefix joined with a dot, ``publish_priority`` for a message that sets no
priority, what fedora-messaging's consumers need on a JSON object body, and
the ``publish_format`` check. A fedora-messaging message is validated and
sent with the properties its class built.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fedmq import _fedora
from fedmq.config import Config
from fedmq.exceptions import PublishFormatError
from fedmq.message import Message, Properties

log = logging.getLogger("fedmq")

#: Topics already warned about for a non-object JSON body: one warning each per process.
_warned_topics: set[str] = set()
_warned_lock = threading.Lock()


def wire_form(message: Any, config: Config) -> tuple[str, bytes, Properties]:
    """``(routing key, body, properties)`` for ``message`` as ``config`` publishes it.

    Args:
        message: a :class:`~fedmq.Message`, or a fedora-messaging message.
        config: the ``topic_prefix``, ``publish_priority`` and
            ``publish_format`` to apply.

    Raises:
        PublishFormatError: with ``publish_format = "fedora-messaging"``, the
            body is not a JSON object; or a fedora-messaging message fails its schemas.
        TypeError: ``message`` is neither kind of message.

    """
    if isinstance(message, Message):
        topic, data = message.topic, message.data
        problem = _fedora.format_problem(message)
        if problem is not None and config.publish_format == "fedora-messaging":
            raise PublishFormatError(
                f"Message {message.id} (topic {topic!r}) was not published: {problem}, and "
                f'publish_format is "fedora-messaging", whose consumers drop such messages'
            )
        if problem is not None and _fedora.is_json_type(message.properties.content_type):
            _warn_once(topic, problem)
        properties = _fedora.add_compatibility_headers(message) or message.properties
    elif _fedora.is_schema_message(message):
        topic, data, properties = _fedora.wire_form(message, config.publish_priority)
    else:
        raise TypeError(
            f"publish() takes a fedmq.Message or a fedora-messaging Message, "
            f"not {type(message).__name__}"
        )
    if properties.priority is None and config.publish_priority is not None:
        if properties is message.properties:
            properties = Properties.from_object(properties)  # the message stays as it was
        properties.priority = config.publish_priority
    return _fedora.join_topic(config.topic_prefix, topic), data, properties


def _warn_once(topic: str, problem: str) -> None:
    with _warned_lock:
        if topic in _warned_topics:
            return
        _warned_topics.add(topic)
    log.warning(
        "Publishing to topic %r a message fedora-messaging consumers will drop (%s); "
        'set publish_format = "fedora-messaging" to refuse such messages instead',
        topic,
        problem,
    )


__all__ = ["wire_form"]
