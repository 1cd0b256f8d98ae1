"""Recording what code publishes, instead of sending it.

Both helpers stand on :func:`fedmq.api.intercepting_publishes`, the public
seam every :func:`fedmq.publish` passes through: nothing is patched.
:func:`capture_publishes` records and offers assertions by topic pattern
(AMQP topic syntax), body, headers and count; :func:`mock_sends` checks a
block against a list of expected messages with the arguments and verdicts of
fedora-messaging's helper of that name.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from fedmq.testing.routing import topic_matches

__all__ = ["PublishCapture", "capture_publishes", "mock_sends"]

_UNSET: Any = object()


class PublishCapture:
    """The messages published inside a :func:`capture_publishes` block, in order.

    Attributes:
        messages: every message passed to :func:`fedmq.publish`, in the order
            published, from any thread.

    """

    def __init__(self) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()

    def _record(self, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def topics(self) -> list[str]:
        """The topics of the messages published, in order."""
        return [message.topic for message in self.messages]

    def matching(
        self,
        topic: str | None = None,
        body: Any = _UNSET,
        headers: Mapping[str, Any] | None = None,
    ) -> list[Any]:
        """The messages published that match every criterion given.

        Args:
            topic: an AMQP topic pattern (``*`` one word, ``#`` zero or more).
            body: the body, compared with ``==``.
            headers: headers the message must have with these values (others
                may be there too).

        """
        found = []
        for message in self.messages:
            if topic is not None and not topic_matches(topic, message.topic):
                continue
            if body is not _UNSET and message.body != body:
                continue
            if headers is not None:
                sent = _headers_of(message)
                if any(name not in sent or sent[name] != value for name, value in headers.items()):
                    continue
            found.append(message)
        return found

    def assert_published(
        self,
        topic: str | None = None,
        body: Any = _UNSET,
        headers: Mapping[str, Any] | None = None,
        count: int | None = None,
    ) -> list[Any]:
        """Check that messages matching the criteria were published.

        Args:
            topic: as for :meth:`matching`.
            body: as for :meth:`matching`.
            headers: as for :meth:`matching`.
            count: how many must match exactly; at least one when None.

        Returns:
            The matching messages.

        Raises:
            AssertionError: naming the criteria and what was published.

        """
        found = self.matching(topic, body, headers)
        if (count is None and not found) or (count is not None and len(found) != count):
            wanted = "at least 1" if count is None else str(count)
            raise AssertionError(
                f"Expected {wanted} message(s) matching {self._criteria(topic, body, headers)}, "
                f"found {len(found)}; published: {self._describe()}"
            )
        return found

    def assert_nothing_published(self) -> None:
        """Check that nothing was published.

        Raises:
            AssertionError: listing what was.

        """
        if self.messages:
            raise AssertionError(f"Expected nothing published; published: {self._describe()}")

    def assert_topics(self, *patterns: str) -> None:
        """Check, in strict order, that exactly one message per pattern was published.

        Raises:
            AssertionError: the count or the order differs.

        """
        topics = self.topics
        if len(topics) != len(patterns) or not all(
            topic_matches(pattern, topic) for pattern, topic in zip(patterns, topics, strict=False)
        ):
            raise AssertionError(
                f"Expected topics matching {list(patterns)} in this order, published {topics}"
            )

    def _describe(self) -> str:
        if not self.messages:
            return "nothing"
        return ", ".join(f"{m.topic!r} {m.body!r}" for m in self.messages)

    @staticmethod
    def _criteria(topic: str | None, body: Any, headers: Mapping[str, Any] | None) -> str:
        parts = []
        if topic is not None:
            parts.append(f"topic {topic!r}")
        if body is not _UNSET:
            parts.append(f"body {body!r}")
        if headers is not None:
            parts.append(f"headers {dict(headers)!r}")
        return ", ".join(parts) or "anything"


@contextlib.contextmanager
def capture_publishes() -> Iterator[PublishCapture]:
    """Record every :func:`fedmq.publish` made inside the block, sending nothing.

    It holds in every thread (a sync callback's worker thread too) and for
    every form of :func:`fedmq.publish`: the blocking call returns None, the
    Twisted form a fired Deferred, the ``async`` form a done awaitable, as
    they would once the broker confirmed.

    Yields:
        A :class:`PublishCapture` to assert on, inside the block or after it.

    Example::

        with capture_publishes() as published:
            notify_owner(build)
        published.assert_published("org.example.build.#", count=1)

    """
    from fedmq.api import intercepting_publishes

    capture = PublishCapture()
    # Recording is the capture's own business; users only read it.
    with intercepting_publishes(capture._record):  # noqa: SLF001
        yield capture


@contextlib.contextmanager
def mock_sends(*expected: Any) -> Iterator[list[Any]]:
    """Check that the block publishes exactly the ``expected`` messages, sending none.

    Every :func:`fedmq.publish` made inside the block, from any thread, is
    recorded instead of sent (through
    :func:`fedmq.api.intercepting_publishes`). When the block ends without
    an exception, the recorded messages are checked against ``expected``,
    in order:

    - there must be as many as expected;
    - a class matches a message that is an instance of it;
    - an instance matches a message of the same class with the same topic,
      body and headers, ``sent-at`` aside (fedora-messaging's equality; a
      fedmq message is compared the same way);
    - every fedora-messaging message sent must then pass its schemas.

    Args:
        *expected: message classes or instances: fedmq's or fedora-messaging's.

    Yields:
        The list the sent messages are recorded in, in the order sent.

    Raises:
        AssertionError: the messages sent are not the ones expected.
        jsonschema.ValidationError: a fedora-messaging message sent fails its schemas.

    """
    from fedmq.api import intercepting_publishes

    sent: list[Any] = []
    with intercepting_publishes(sent.append):
        yield sent
    if len(expected) != len(sent):
        raise AssertionError(
            f"Expected {len(expected)} messages to be sent, but {len(sent)} were sent"
        )
    for message, wanted in zip(sent, expected, strict=True):
        if inspect.isclass(wanted):
            if not isinstance(message, wanted):
                raise AssertionError(
                    f"Expected message of type {wanted}, but {message.__class__} was sent"
                )
        else:
            _assert_same_message(message, wanted)
        validate = getattr(message, "validate", None)
        if validate is not None:
            validate()


def _assert_same_message(message: Any, wanted: Any) -> None:
    if message.topic != wanted.topic:
        raise AssertionError(f"Expected topic {wanted.topic!r}, but {message.topic!r} was sent")
    if message.body != wanted.body:
        raise AssertionError(f"Expected body {wanted.body!r}, but {message.body!r} was sent")
    if not isinstance(message, type(wanted)):
        # A failed assertion in the user's test, as fedora-messaging's own helper reports it.
        raise AssertionError(  # noqa: TRY004
            f"Expected message of type {type(wanted)}, but {message.__class__} was sent"
        )
    sent_headers, wanted_headers = _headers_of(message), _headers_of(wanted)
    if sent_headers != wanted_headers:
        raise AssertionError(f"Expected headers {wanted_headers!r}, but {sent_headers!r} were sent")


def _headers_of(message: Any) -> dict[str, Any]:
    # fedora-messaging keeps them in _headers, fedmq in headers; sent-at never compares.
    headers = getattr(message, "_headers", None)
    if headers is None:
        headers = message.headers
    return {name: value for name, value in dict(headers).items() if name != "sent-at"}
