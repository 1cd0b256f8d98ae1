"""The control socket: a UNIX socket, its owner's alone, speaking JSON lines.

``[control] socket`` names it. The socket is created under a umask that
makes it mode 0600 from its first moment (:func:`listen_private`): at no
moment can another user connect to it. A socket file left by a process that
died is replaced; one that a live process listens on is not (the start fails
with a clear error, exit status 2); nor is a file that is not a socket. The
socket is removed when the service stops.

Each line a client sends is one request (:func:`fedmq._control.parse_line`);
each gets one line back, the :class:`~fedmq._control.Reply`, in order.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineOnlyReceiver

from fedmq._control import (
    MAX_REQUEST,
    Controller,
    Refusal,
    Reply,
    RequestError,
    parse_line,
    refused,
)
from fedmq._listening import ListeningService
from fedmq.config import Config
from fedmq.exceptions import ConfigurationError

log = logging.getLogger("fedmq.control")

_VIA = "the control socket"


class _ControlProtocol(LineOnlyReceiver):
    """One client: a request a line, a reply a line, in the order asked."""

    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, controller: Controller) -> None:
        self._controller = controller
        self._replies: defer.Deferred[None] = defer.succeed(None)

    def lineReceived(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        try:
            request = parse_line(line)
        except RequestError as error:
            answer: defer.Deferred[Reply] = defer.succeed(refused(Refusal.USAGE, str(error)))
        else:
            answer = self._controller(request, _VIA)
        # Replies go out in the order of the requests, whichever finishes first.
        self._replies.addCallback(lambda _: answer).addCallback(self._send)

    def _send(self, reply: Reply) -> None:
        # Any: zope interfaces confuse mypy about the transport's methods.
        transport: Any = self.transport
        if transport is not None and self.connected:
            transport.write(reply.line())

    def lineLengthExceeded(self, line: bytes) -> None:  # noqa: ARG002 - Twisted's signature
        self._send(refused(Refusal.USAGE, f"a request line is at most {MAX_REQUEST} bytes"))
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()


class _ControlFactory(Factory):
    noisy = False

    def __init__(self, controller: Controller) -> None:
        self._controller = controller

    def buildProtocol(self, addr: Any) -> _ControlProtocol:  # noqa: ARG002 - Twisted's
        return _ControlProtocol(self._controller)


def _fail(config: Config, problem: str) -> ConfigurationError:
    return ConfigurationError(f"{config.source}: control.socket: {config.control.socket} {problem}")


def _check_existing(config: Config, path: str) -> None:
    """Refuse a path that holds anything but a socket nobody listens on."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise _fail(config, "exists and is not a socket; fedmq does not replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("Replacing the control socket %s, left by a process that has stopped", path)
        return
    except OSError as error:
        raise _fail(config, f"cannot be checked: {error.strerror or error}") from None
    finally:
        probe.close()
    raise _fail(
        config,
        "is in use: another process listens on it (is this consumer running already?); "
        "stop it, or give this one another control.socket",
    )


#: The umask the socket is created under: no permission for the group or others.
_OWNER_ONLY = 0o177


def listen_private(reactor: Any, path: str, factory: Any) -> Any:
    """Listen on a UNIX socket at ``path`` that is mode 0600 from the moment it exists.

    The socket is created under a umask that leaves the group and others no
    permission, rather than made and then narrowed with chmod: at no moment
    can another user connect. This runs before the reactor does (the service
    listens in ``privilegedStartService``), when fedmq has started no thread
    that could create a file meanwhile; one that did would only get a
    narrower mode.

    Returns:
        The listening port.

    """
    previous = os.umask(_OWNER_ONLY)
    try:
        return reactor.listenUNIX(path, factory, mode=0o600)
    finally:
        os.umask(previous)


class ControlSocketService(ListeningService):
    """Listens on ``[control] socket`` while the service runs; off when it is unset or "".

    Args:
        config: the configuration; ``control.socket`` is read.
        controller: carries out the requests.
        reactor: the reactor to listen with; the global one by default.

    Attributes:
        path: the socket's path while listening; None otherwise.

    """

    name = "fedmq-control-socket"

    def __init__(self, config: Config, controller: Controller, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._config = config
        self._factory = _ControlFactory(controller)
        self._reactor = reactor
        self._port: Any = None
        self.path: str | None = None

    def _listen(self) -> None:
        path = self._config.control.socket
        if self._port is not None or not path:
            return
        _check_existing(self._config, path)
        if not Path(path).parent.is_dir():
            raise _fail(self._config, "cannot be made: its directory does not exist")
        try:
            Path(path).unlink()  # a stale socket (_check_existing refuses anything else)
        except FileNotFoundError:
            pass
        except OSError as error:  # another user's, in a sticky directory, say
            raise _fail(
                self._config,
                f"is left by a stopped process and cannot be removed: {error.strerror}",
            ) from None
        try:
            self._port = listen_private(self._reactor, path, self._factory)
        except CannotListenError as error:
            reason = error.socketError
            why = getattr(reason, "strerror", None) or str(reason)
            raise _fail(self._config, f"cannot be made: {why}") from None
        self.path = path
        log.info("Taking pause, resume and status on the control socket %s", path)

    def stopService(self) -> defer.Deferred[None] | None:
        """Stop listening; the socket file goes with it."""
        super().stopService()
        port, self._port = self._port, None
        self.path = None
        if port is None:
            return None
        return defer.maybeDeferred(port.stopListening).addCallback(lambda _: None)


__all__ = ["ControlSocketService", "listen_private"]
