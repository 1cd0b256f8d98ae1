"""The exit status of a fedmq process, and the reason behind each.

One table for every way fedmq runs (``fedmq consume``, ``twistd -n fedmq``,
a systemd unit): operators and supervisors can tell from the status alone
whether restarting can help.

=====  ==========================  ==========================================
code   name                        when
=====  ==========================  ==========================================
0      ``OK``                      a normal stop: a signal, or ``HaltConsumer()``
1      ``FORCED_STOP``             a second signal or the drain timeout cut the
                                   graceful stop short
2      ``USAGE``                   bad command line or configuration, bad callback path
3      ``DECLARATION_REFUSED``     the broker refused a declaration or binding
4      ``ACCESS_REFUSED``          the broker refused the credentials, the vhost,
                                   or an operation (403)
5      ``CALLBACK_FAILED``         ``max_errors`` consumer errors within
                                   ``error_window``, or ``setup()`` raised
6      ``CONSUMER_CANCELLED``      the broker cancelled the consumer for good
7      ``CONNECTION_FAILED``       fedmq gave up connecting to the broker
8      ``PUBLISH_FAILED``          ``fedmq publish`` or ``requeue-dead``: the broker
                                   nacked, could not route, or did not confirm a
                                   message
N      (``HaltConsumer(N)``)       the callback asked to stop with status N
=====  ==========================  ==========================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.python.failure import Failure

from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    CallbackError,
    ConfigurationError,
    ConnectionFailed,
    ConsumerCancelled,
    DeclarationError,
    HaltConsumer,
    StopForced,
)

OK = 0
FORCED_STOP = 1
USAGE = 2
DECLARATION_REFUSED = 3
ACCESS_REFUSED = 4
CALLBACK_FAILED = 5
CONSUMER_CANCELLED = 6
CONNECTION_FAILED = 7
PUBLISH_FAILED = 8


def exit_code_for(reason: BaseException | Failure | None) -> int:
    """The exit status for why a consumer stopped (None: it stopped normally)."""
    if isinstance(reason, Failure):
        reason = reason.value
    if reason is None:
        return OK
    for kind, decide in _DECIDERS:
        if isinstance(reason, kind):
            code = decide(reason)
            if code is not None:
                return code
    return CALLBACK_FAILED if isinstance(reason, Exception) else FORCED_STOP


def _halt_code(halt: HaltConsumer) -> int:
    return halt.exit_code


def _callback_code(error: CallbackError) -> int:
    # A callback that cannot be loaded is a usage error; one that raised is not.
    return CALLBACK_FAILED if error.raised_by_callback else USAGE


def _broker_code(error: BrokerError) -> int | None:
    return ACCESS_REFUSED if error.reply_code == 403 else None


def _always(code: int) -> Callable[[BaseException], int]:
    return lambda _reason: code


# In order: the first class ``reason`` is an instance of whose decider gives a code wins.
_DECIDERS: tuple[tuple[type[BaseException], Callable[[Any], int | None]], ...] = (
    (HaltConsumer, _halt_code),
    (ConfigurationError, _always(USAGE)),
    (CallbackError, _callback_code),
    (AuthenticationFailed, _always(ACCESS_REFUSED)),
    (BrokerError, _broker_code),
    (DeclarationError, _always(DECLARATION_REFUSED)),
    (ConsumerCancelled, _always(CONSUMER_CANCELLED)),
    (ConnectionFailed, _always(CONNECTION_FAILED)),
    (StopForced, _always(FORCED_STOP)),
)
