"""fedmq: run message consumers on RabbitMQ from Python, on Twisted.

The public API is what this module exports; everything in ``_``-prefixed
modules is internal.
"""

from fedmq._flow import QueueState
from fedmq._version import __version__
from fedmq.acks import Ack, AckStatus
from fedmq.api import consume, publish
from fedmq.config import Config, load_config
from fedmq.consumer import Consumer, ConsumerHandle
from fedmq.exceptions import (
    AuthenticationFailed,
    BrokerError,
    CallbackError,
    ConfigurationError,
    ConnectionFailed,
    ConsumerCancelled,
    ConsumerError,
    DeclarationError,
    Drop,
    FedmqError,
    HaltConsumer,
    Nack,
    PublishCanceled,
    PublishConnectionLost,
    PublishError,
    PublishFormatError,
    PublishNacked,
    PublishRefused,
    PublishReturned,
    PublishTimeout,
    Retry,
    SettlementError,
    StopForced,
    WouldDeadlock,
)
from fedmq.message import DecodeError, Message, Properties
from fedmq.publisher import Publisher
from fedmq.settlement import Settlement

__all__ = [
    "Ack",
    "AckStatus",
    "AuthenticationFailed",
    "BrokerError",
    "CallbackError",
    "Config",
    "ConfigurationError",
    "ConnectionFailed",
    "Consumer",
    "ConsumerCancelled",
    "ConsumerError",
    "ConsumerHandle",
    "DeclarationError",
    "DecodeError",
    "Drop",
    "FedmqError",
    "HaltConsumer",
    "Message",
    "Nack",
    "Properties",
    "PublishCanceled",
    "PublishConnectionLost",
    "PublishError",
    "PublishFormatError",
    "PublishNacked",
    "PublishRefused",
    "PublishReturned",
    "PublishTimeout",
    "Publisher",
    "QueueState",
    "Retry",
    "Settlement",
    "SettlementError",
    "StopForced",
    "WouldDeadlock",
    "__version__",
    "consume",
    "load_config",
    "publish",
]
