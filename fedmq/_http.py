"""What fedmq's HTTP listeners (monitoring, control) share: a quiet Site, and listening."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Site

from fedmq.exceptions import ConfigurationError


class QuietSite(Site):
    """A Site that writes no access log: its requests are logged where they matter."""

    noisy = False

    def __init__(self, resource: Resource, name: str, reactor: Any) -> None:
        super().__init__(resource, reactor=reactor)
        self._name = name

    def logPrefix(self) -> str:
        return self._name

    def startFactory(self) -> None:
        pass  # HTTPFactory's access-log file and its once-a-second clock tick

    def stopFactory(self) -> None:
        pass

    def log(self, request: http.Request) -> None:
        pass


def listen_tcp(
    reactor: Any, site: Site, address: str, port: int, what: str, keys: str
) -> tuple[Any, str]:
    """Listen for ``what`` on ``address:port``: the listening port, and the host for a URL.

    Raises:
        ConfigurationError: the port cannot be listened on, naming ``keys``.

    """
    try:
        listening = reactor.listenTCP(port, site, interface=address)
    except CannotListenError as error:
        reason = error.socketError
        why = getattr(reason, "strerror", None) or str(reason)
        raise ConfigurationError(
            f"cannot serve {what} on {address}:{port} ({keys}): {why}"
        ) from None
    return listening, f"[{address}]" if ":" in address else address
