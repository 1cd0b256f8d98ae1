"""A publisher's per-message path: wire form, send span, the Outgoing record, into the bound.

Every way of publishing (``post``, ``publish`` in its three forms,
``post_data``) goes through :class:`Sender`: the message is put in its wire
form in the caller's thread, its ``send`` span started there (under the
caller's current span), and the :class:`~fedmq._confirms.Outgoing` record
handed to the :class:`~fedmq._intake.Intake`. A caller that gave no
``on_ack`` gets a Deferred (on the reactor thread) or a future (elsewhere).
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from twisted.internet import defer

from fedmq import _intercept, _tracing
from fedmq._caller import CallerForm
from fedmq._confirms import Outgoing
from fedmq._intake import Intake
from fedmq._publish_link import PublishLink
from fedmq._publisher import wire_form
from fedmq._reactor_types import ThreadHopClock
from fedmq.acks import Ack, AckStatus, OnAck
from fedmq.config import Config
from fedmq.message import Message, Properties


class Sender:
    """Turns each post into an :class:`~fedmq._confirms.Outgoing` and lets it into the bound.

    Args:
        config: the exchange, topic prefix and format messages are published with.
        reactor: the reactor (its time sets each message's deadline).
        intake: the bound the messages go through.
        link: the connection they go out on (its address names the broker in spans).
        caller: the caller's form, for answers known at once and the reactor's start.

    """

    __slots__ = ("_caller", "_config", "_intake", "_link", "_reactor")

    def __init__(
        self,
        config: Config,
        reactor: ThreadHopClock,
        intake: Intake,
        link: PublishLink,
        caller: CallerForm,
    ) -> None:
        self._config = config
        self._reactor = reactor
        self._intake = intake
        self._link = link
        self._caller = caller

    def message(
        self,
        message: Message | Any,
        exchange: str | None,
        routing_key: str | None,
        on_ack: OnAck | None,
        mandatory: bool,
        timeout: float,
        here: bool,
    ) -> Any:
        """Post ``message`` (see :meth:`fedmq.Publisher.post`); ``here``: on the reactor thread."""
        if exchange is None:
            exchange = self._config.publish_exchange
        if _intercept.handlers and _intercept.intercept(message):
            ack = Ack(getattr(message, "id", None), AckStatus.SUCCESS)
            return self._caller.done(ack, on_ack, here)
        prefixed, body, properties = wire_form(message, self._config)
        if routing_key is None:
            routing_key = prefixed
        return self.data(exchange, routing_key, body, properties, on_ack, mandatory, timeout, here)

    def data(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        on_ack: OnAck | None,
        mandatory: bool,
        timeout: float,
        here: bool,
    ) -> Any:
        """Post an encoded body with its properties (see :meth:`fedmq.Publisher.post_data`)."""
        result: Any = None
        if on_ack is None:
            if here:
                result = defer.Deferred()
                on_ack = result.callback
            else:
                result = concurrent.futures.Future()
                on_ack = result.set_result
        if _tracing.active or _tracing.refresh():
            # The send span starts in the caller's thread, under its current
            # span (a callback's process span), and ends with the message's status.
            sending, properties = _tracing.start_send(
                exchange, routing_key, properties, self._link.connection, self._config
            )
            on_ack = _tracing.ending_send(sending, on_ack)
        if not here:
            self._caller.start_reactor()
        deadline = self._reactor.seconds() + timeout
        item = Outgoing(exchange, routing_key, body, properties, mandatory, deadline, on_ack)
        sent = self._intake.enter(item, here, result is None, timeout)
        return result if sent is None else sent


__all__ = ["Sender"]
