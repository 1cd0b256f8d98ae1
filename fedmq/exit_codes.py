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
    if isinstance(reason, HaltConsumer):
        return reason.exit_code
    if isinstance(reason, ConfigurationError):
        return USAGE
    if isinstance(reason, CallbackError):
        # A callback that cannot be loaded is a usage error; one that raised is not.
        return CALLBACK_FAILED if reason.raised_by_callback else USAGE
    if isinstance(reason, AuthenticationFailed):
        return ACCESS_REFUSED
    if isinstance(reason, BrokerError) and reason.reply_code == 403:
        return ACCESS_REFUSED
    if isinstance(reason, DeclarationError):
        return DECLARATION_REFUSED
    if isinstance(reason, ConsumerCancelled):
        return CONSUMER_CANCELLED
    if isinstance(reason, ConnectionFailed):
        return CONNECTION_FAILED
    if isinstance(reason, StopForced):
        return FORCED_STOP
    return CALLBACK_FAILED if isinstance(reason, Exception) else FORCED_STOP
