"""Exceptions a callback raises to choose an outcome, and errors fedmq raises.

Callbacks pick what happens to a message by returning (ack) or by raising one
of :class:`Nack`, :class:`Drop`, :class:`Retry`, :class:`ConsumerError` or
:class:`HaltConsumer` (see the "Errors, retries and dead-lettering" page).
Everything else in this module is an error fedmq reports to its caller.
"""

from __future__ import annotations


class FedmqError(Exception):
    """Base class of every error fedmq raises."""


# --- outcomes a callback chooses -------------------------------------------


class Nack(Exception):
    """Raised by a callback: return the message to its queue now.

    The broker redelivers it, possibly to this same consumer.
    """


class Drop(Exception):
    """Raised by a callback: reject the message without requeueing it.

    With ``drop_exchange`` configured, the message is first republished
    there (confirmed) with ``X-Dropped-*`` headers. The queue's dead-letter
    exchange receives it when one is configured; otherwise the broker
    discards it.
    """


class Retry(Exception):
    """Raised by a callback: try this message again later.

    The message waits in the queue's next retry queue (the ``[retry]``
    table's ``delays``) and comes back to its queue; its headers carry the
    exception's text and the number of failed runs, which the callback sees
    as :attr:`fedmq.Message.attempt`. After ``retry.max_attempts`` runs it
    is parked in ``<queue>.dead`` instead.
    """


class ConsumerError(Exception):
    """Raised by a callback: the consumer itself is in trouble, not the message.

    Its database is down, say. The message goes back to its queue; once
    ``max_errors`` such errors (unexpected exceptions included) happen
    within ``error_window`` seconds, the consumer stops with exit code 5 so
    that its supervisor restarts it.
    """


class HaltConsumer(Exception):
    """Raised by a callback: settle this message, then stop consuming.

    Args:
        exit_code: the exit status the consumer ends with; 0 is a normal stop.
        reason: a sentence saying why, logged when the consumer stops.
        requeue: return this message to the queue instead of acknowledging it.

    """

    def __init__(
        self, exit_code: int = 0, reason: str | None = None, requeue: bool = False
    ) -> None:
        super().__init__(exit_code, reason, requeue)
        self.exit_code = exit_code
        self.reason = reason
        self.requeue = requeue

    def __str__(self) -> str:
        text = f"consumer halted with exit code {self.exit_code}"
        return f"{text}: {self.reason}" if self.reason else text


# --- errors fedmq reports ---------------------------------------------------


class ConfigurationError(FedmqError):
    """The configuration (a file, a key or an argument) is invalid.

    The message names the key, the file and what was expected.
    """


class CallbackError(FedmqError):
    """The callback could not be loaded, or raised an unexpected exception.

    When it wraps a callback's exception, :attr:`raised_by_callback` is
    True, ``__cause__`` is that exception and :attr:`message_id`,
    :attr:`topic` and :attr:`queue` say which message.
    """

    def __init__(
        self,
        text: str,
        *,
        message_id: str | None = None,
        topic: str | None = None,
        queue: str | None = None,
        raised_by_callback: bool = False,
    ) -> None:
        super().__init__(text)
        self.raised_by_callback = raised_by_callback
        self.message_id = message_id
        self.topic = topic
        self.queue = queue


class DecodeError(FedmqError):
    """A message body is not valid for its content type or content encoding.

    Attributes:
        content_type: the content type the message carried, or None.
        content_encoding: the content encoding, when that is what failed; else None.

    """

    def __init__(
        self, text: str, content_type: str | None = None, content_encoding: str | None = None
    ) -> None:
        super().__init__(text)
        self.content_type = content_type
        self.content_encoding = content_encoding


class ConnectionFailed(FedmqError):
    """fedmq could not connect to, or lost its connection to, the broker."""


class AuthenticationFailed(ConnectionFailed):
    """The broker refused the credentials, or access to the virtual host."""


class BrokerError(FedmqError):
    """The broker closed a channel or refused an operation.

    Attributes:
        reply_code: the AMQP reply code (403, 404, 406, ...), or None.
        reply_text: the broker's own words.

    """

    def __init__(self, text: str, reply_code: int | None = None, reply_text: str = "") -> None:
        super().__init__(text)
        self.reply_code = reply_code
        self.reply_text = reply_text


class DeclarationError(BrokerError):
    """The broker refused to declare or bind an exchange or queue."""


class StopForced(FedmqError):
    """A stop did not wait for callbacks in flight (a second signal, or the drain timeout).

    Their messages were left for the broker to requeue.
    """


class ConsumerCancelled(FedmqError):
    """The broker cancelled the consumer, and its queue cannot be consumed again.

    The broker cancels a consumer whose queue was deleted. fedmq reconnects
    and declares the queue again; with ``passive_declares`` it may not, and
    when the queue is gone the consumer ends with this error (exit status
    6). ``__cause__`` is the broker's refusal of the check.
    """


class WouldDeadlock(FedmqError, RuntimeError):
    """A callback waited for something that waits for that callback.

    :meth:`fedmq.Consumer.cancel` called from one of the consumer's own
    callbacks asks for the stop and returns a Deferred failing with this
    error: the drain waits for the callback to return, so the callback
    cannot wait for the drain.
    """


class PublishError(FedmqError):
    """Base class of the ways a publish can fail."""


class PublishNacked(PublishError):
    """The broker refused the message (basic.nack in confirm mode)."""


class PublishReturned(PublishError):
    """The broker could not route a mandatory message to any queue."""


class PublishTimeout(PublishError):
    """The broker did not confirm the message within the timeout."""


class PublishFormatError(PublishError, ValueError):
    """A message was refused before publishing: its consumers would drop it.

    With ``publish_format = "fedora-messaging"``, a message whose body is not
    a JSON object; and, whatever the format, a fedora-messaging message that
    fails its class's schemas. Nothing was sent.
    """


class PublishConnectionLost(PublishError, ConnectionFailed):
    """The connection to publish on was lost, or closed: the message may not have arrived.

    Raised when a callback publishes after its consumer's connection has
    closed (the consumer stopped, or is reconnecting), and when a connection
    is lost (or never opened) before the broker confirmed a message: one
    that was sent may still have reached the broker. It is a
    :class:`ConnectionFailed` too, so code that catches that still works.
    """


class PublishRefused(PublishError, BrokerError):
    """The broker refused a publish by closing the channel: nothing was published.

    The exchange does not exist (reply code 404) or the user may not write
    to it (403); :attr:`reply_code` and :attr:`reply_text` say which. It is a
    :class:`BrokerError` too. The next publish opens a new channel.
    """


class PublishCanceled(PublishError):
    """The publisher closed before the broker confirmed the message.

    :meth:`fedmq.Publisher.close` waits for outstanding confirms up to its
    timeout; the messages still unconfirmed then end with this error.
    """
