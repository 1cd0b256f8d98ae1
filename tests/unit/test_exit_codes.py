"""Each way a consumer ends maps to its documented exit status."""

from __future__ import annotations

import pytest
from twisted.python.failure import Failure

from fedmq import exit_codes
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


def _loading_error_with_cause() -> CallbackError:
    error = CallbackError("The callback class 'x:Y' could not be instantiated")
    error.__cause__ = RuntimeError("no database")
    return error


def _raised_callback_error() -> CallbackError:
    error = CallbackError("The callback raised ValueError: boom", raised_by_callback=True)
    error.__cause__ = ValueError("boom")
    return error


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        (None, 0),
        (HaltConsumer(), 0),
        (HaltConsumer(exit_code=42), 42),
        (ConfigurationError("bad key"), 2),
        (CallbackError("The callback 'x:y' could not be loaded"), 2),
        (_loading_error_with_cause(), 2),
        (DeclarationError("refused", 406, "PRECONDITION_FAILED"), 3),
        (DeclarationError("refused", 403, "ACCESS_REFUSED"), 4),
        (AuthenticationFailed("wrong password"), 4),
        (BrokerError("refused", 403, "ACCESS_REFUSED"), 4),
        (_raised_callback_error(), 5),
        (ConsumerCancelled("cancelled"), 6),
        (ConnectionFailed("gave up"), 7),
        (StopForced("second signal"), 1),
    ],
)
def test_each_reason_has_its_documented_exit_code(reason, code):
    assert exit_codes.exit_code_for(reason) == code
    if reason is not None:
        assert exit_codes.exit_code_for(Failure(reason)) == code


def test_the_codes_are_distinct():
    names = [
        "OK",
        "FORCED_STOP",
        "USAGE",
        "DECLARATION_REFUSED",
        "ACCESS_REFUSED",
        "CALLBACK_FAILED",
        "CONSUMER_CANCELLED",
        "CONNECTION_FAILED",
        "PUBLISH_FAILED",
    ]
    values = [getattr(exit_codes, name) for name in names]
    assert values == list(range(9))
