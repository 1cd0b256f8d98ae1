"""``twistd fedmq``: the command-line options and the service tree.

``twistd -n fedmq --config FILE`` and ``fedmq consume`` run the same tree,
built by :func:`build_service`: the consumer, the systemd notifier and, when
the configuration gives ``monitoring.port``, the health and metrics endpoint;
with ``control.socket``, the control socket; with ``control.http_port``, the
HTTP control endpoint.
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, NoReturn

from twisted.application.service import MultiService
from twisted.python import usage

from fedmq._callback import load_callback
from fedmq._control_http import ControlHTTPService
from fedmq._control_socket import ControlSocketService
from fedmq._logging import setup_logging, twistd_log_observer
from fedmq._systemd import NotifyService
from fedmq.config import Config, check_runnable, load_config
from fedmq.exceptions import FedmqError
from fedmq.exit_codes import USAGE
from fedmq.monitoring import MonitoringService
from fedmq.service import ConsumerService


def fail(message: str) -> NoReturn:
    """Print one sentence about a usage or configuration error, and exit 2.

    Args:
        message: what is wrong, naming the file, key or argument.

    """
    sys.stderr.write(f"fedmq: {message}\n")
    sys.stderr.flush()
    raise SystemExit(USAGE)


class Options(usage.Options):
    """``twistd fedmq`` options. The configuration is loaded once they are parsed.

    Attributes:
        config: the loaded configuration, after :meth:`parseOptions`.

    """

    synopsis = "[--config FILE] [--callback PACKAGE.MODULE:OBJECT]"
    longdesc = (
        "Consume the queues the configuration file lists, handing each message to "
        "the callback, until SIGTERM or SIGINT (a graceful drain; a second signal "
        "stops at once) or until the callback halts. SIGUSR1 pauses every queue, "
        "SIGUSR2 resumes them. The exit status says why it "
        "stopped; see the Exit status chapter of fedmq's documentation."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        [
            "config",
            "c",
            None,
            "The configuration file. Default: $FEDMQ_CONFIG, else /etc/fedmq/config.toml.",
        ],
        [
            "callback",
            None,
            None,
            "The callback, as package.module:object; overrides the configuration's.",
        ],
    ]

    config: Config

    def postOptions(self) -> None:
        """Load the configuration the options name; a bad one fails with one clear line."""
        try:
            self.config = load_config(self["config"])
        except FedmqError as error:
            fail(str(error))
        twistd_options = getattr(self, "parent", None)
        if twistd_options is not None and twistd_options.get("logger") is None:
            # twistd begins Twisted's logging itself, once makeService has
            # run: point it at fedmq's logging (unless --logger says otherwise).
            twistd_options["logger"] = f"{twistd_log_observer.__module__}.twistd_log_observer"


def build_service(
    config: Config,
    callback: Any = None,
    *,
    reactor: Any = None,
    handle_signals: bool = False,
    exit_with_status: bool = False,
    begin_twisted_logging: bool = True,
) -> MultiService:
    """Build the service tree of a fedmq process.

    Logging is set up from the configuration first, and the callback is
    resolved (imported, and built if it is a class) before anything runs, so
    a bad callback is an error here rather than once the reactor runs.

    Args:
        config: the configuration.
        callback: a callback or ``"module:object"`` path overriding the config's.
        reactor: the reactor to run on; the global one by default.
        handle_signals: see :class:`~fedmq.service.ConsumerService`.
        exit_with_status: see :class:`~fedmq.service.ConsumerService`.
        begin_twisted_logging: send Twisted's log to :mod:`logging` now; False
            under twistd, which begins Twisted's logging itself.

    Returns:
        A MultiService holding the :class:`~fedmq.service.ConsumerService`
        (named ``"fedmq-consumer"``), the systemd notifier and, when
        ``monitoring.port`` is set, the monitoring service; when
        ``control.socket`` is set, the control socket, and when
        ``control.http_port`` is, the HTTP control endpoint. Starting it
        reports a service that cannot start for a reason the user can fix (a
        port is taken, the control socket is in use) in one line, and exits 2.

    Raises:
        ConfigurationError: ``log_config`` is not a valid logging configuration,
            or the configuration cannot run a consumer (see
            :func:`~fedmq.config.check_runnable`; a control token file that
            cannot be read is one).
        CallbackError: the callback cannot be loaded.

    """
    check_runnable(config)
    setup_logging(config, begin_twisted_logging=begin_twisted_logging)
    target, _is_async = load_callback(
        callback if callback is not None else config.callback,
        config.consumer_config,
        config=config,
    )
    top = _ServiceTree()
    consumer_service = ConsumerService(
        config,
        target,
        reactor,
        handle_signals=handle_signals,
        exit_with_status=exit_with_status,
    )
    # Started first, so the services below find consumer_service.consumer.
    consumer_service.setServiceParent(top)
    if config.monitoring.port is not None:
        MonitoringService(config, consumer_service, reactor).setServiceParent(top)
    if config.control.socket:
        ControlSocketService(config, consumer_service.controller, reactor).setServiceParent(top)
    if config.control.http_port is not None:
        ControlHTTPService(config, consumer_service.controller, reactor).setServiceParent(top)
    NotifyService(consumer_service, reactor).setServiceParent(top)
    return top


class _ServiceTree(MultiService):
    """A MultiService whose start turns a user's mistake into one line and exit 2."""

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except FedmqError as error:
            fail(str(error))

    def startService(self) -> None:
        try:
            super().startService()
        except FedmqError as error:
            fail(str(error))


def consumer_service_of(top: MultiService) -> ConsumerService:
    """The :class:`~fedmq.service.ConsumerService` in a tree from :func:`build_service`."""
    found: ConsumerService = top.getServiceNamed(ConsumerService.name)
    return found


def makeService(options: Options) -> MultiService:
    """Build the service tree for ``twistd fedmq`` (see :func:`build_service`).

    The process takes SIGTERM and SIGINT (drain, then stop at once) and exits
    with the consumer's exit status, although twistd itself would exit 0.
    """
    try:
        return build_service(
            options.config,
            options["callback"],
            handle_signals=True,
            exit_with_status=True,
            # Under twistd (the options have a parent), twistd begins it.
            begin_twisted_logging=getattr(options, "parent", None) is None,
        )
    except FedmqError as error:
        fail(str(error))


__all__ = [
    "Options",
    "build_service",
    "consumer_service_of",
    "fail",
    "makeService",
]
