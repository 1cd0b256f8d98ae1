"""The HTTP control endpoint: pause, resume and status, for a bearer of the token.

Off unless ``[control] http_port`` is set, which needs ``token_file``; it
listens on ``http_address`` (127.0.0.1 by default), never on the monitoring
listener. Every request must carry ``Authorization: Bearer <token>``; one
without it, or with another token, is answered 401 and changes nothing,
whatever it asked. Then:

- ``GET /status``: the consumer's state and each queue's;
- ``POST /pause``, ``POST /resume``: every queue, or ``?queue=NAME``.

The answer is the :class:`~fedmq._control.Reply`'s JSON, with 200 when it
was carried out, 400 for a wrong request, 503 when there is no consumer to
act on and 500 when the consumer could not do it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import stat
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from fedmq._config_checks import read_token
from fedmq._control import Controller, Refusal, Reply, RequestError, refused, request
from fedmq._http import QuietSite, listen_tcp
from fedmq._listening import ListeningService
from fedmq.config import Config

log = logging.getLogger("fedmq.control")

_VIA = "the HTTP control endpoint"

#: The HTTP status of each kind of reply.
_HTTP_STATUS = {
    "usage": 400,
    "unavailable": 503,
    "failed": 500,
}

#: (method, path) -> command.
_ROUTES = {
    (b"GET", b"/status"): "status",
    (b"HEAD", b"/status"): "status",
    (b"POST", b"/pause"): "pause",
    (b"POST", b"/resume"): "resume",
}
_METHODS = {b"/status": b"GET, HEAD", b"/pause": b"POST", b"/resume": b"POST"}


class Token:
    """A bearer token, which shows itself as ``<token>`` and compares in constant time.

    Args:
        value: the token's bytes.

    """

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "<token>"

    def presented_by(self, authorization: bytes | None) -> bool:
        """Whether an ``Authorization`` header carries this token as a bearer token."""
        scheme, _, credentials = (authorization or b"").strip().partition(b" ")
        if scheme.lower() != b"bearer":
            # Compare anyway: how long a refusal takes says nothing.
            hmac.compare_digest(self._value, b"")
            return False
        return hmac.compare_digest(self._value, credentials.strip())


class _ControlEndpoints(Resource):
    isLeaf = True

    def __init__(self, controller: Controller, token: Token) -> None:
        super().__init__()
        self._controller = controller
        self._token = token

    def render(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        if not self._token.presented_by(request.getHeader(b"authorization")):
            peer = request.getClientAddress()
            log.warning(
                "Refused a control request (%s %s) from %s: no valid token",
                _printable(request.method[:16]),
                _printable(request.path[:100]),
                getattr(peer, "host", peer),
            )
            request.setHeader(b"www-authenticate", b'Bearer realm="fedmq control"')
            return _json(request, 401, {"ok": False, "error": "a valid bearer token is needed"})
        command = _ROUTES.get((request.method, request.path))
        if command is None:
            return self._no_route(request)
        queues = request.args.get(b"queue", [])
        try:
            if len(queues) > 1:
                raise RequestError("give one queue, or none for every queue")  # noqa: TRY301
            asked = request_for(command, queues[0] if queues else None)
        except RequestError as error:
            return _reply(request, refused(Refusal.USAGE, str(error)))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(reply: Reply) -> None:
            if not gone:
                body = _reply(request, reply)
                request.setHeader(b"content-length", str(len(body)).encode("ascii"))
                request.write(body)
                request.finish()

        self._controller(asked, _VIA).addCallback(answer)
        return NOT_DONE_YET

    def _no_route(self, request: Request) -> bytes:
        allowed = _METHODS.get(request.path)
        if allowed is None:
            return _json(
                request,
                404,
                {"ok": False, "error": "not found; try GET /status, POST /pause or POST /resume"},
            )
        request.setHeader(b"allow", allowed)
        return _json(request, 405, {"ok": False, "error": f"only {allowed.decode()} is allowed"})


def request_for(command: str, queue: bytes | None) -> Any:
    """The control request of an HTTP request's command and ``queue`` parameter."""
    try:
        name = None if queue is None else queue.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("queue must be UTF-8") from None
    return request(command, name)


def _reply(request: Request, reply: Reply) -> bytes:
    kind = reply.body.get("kind")
    return _json(request, 200 if reply.ok else _HTTP_STATUS.get(str(kind), 500), reply.body)


def _printable(raw: bytes) -> str:
    """Bytes a client sent, for a log line: control characters escaped, never raw."""
    return raw.decode("latin-1").encode("unicode_escape").decode("ascii")


def _json(request: Request, code: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


def _warn_if_others_may_read(path: str) -> None:
    mode = stat.S_IMODE(Path(path).stat().st_mode)
    if mode & 0o077:
        log.warning(
            "control.token_file %s may be read by other users (mode %04o): make it the "
            "service's alone (chmod 0600), or pass it with systemd's LoadCredential=",
            path,
            mode,
        )


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class ControlHTTPService(ListeningService):
    """Serves the HTTP control endpoint on ``[control] http_address:http_port``.

    Does nothing when ``control.http_port`` is None. The token is read from
    ``control.token_file`` when the service is built. Port 0 listens on a
    free port, which :attr:`port` then gives.

    Args:
        config: the configuration; ``control`` is read.
        controller: carries out the requests.
        reactor: the reactor to listen with; the global one by default.

    Raises:
        ConfigurationError: the token file is missing, unreadable or empty.

    Attributes:
        port: the TCP port listened on, once started; None otherwise.

    """

    name = "fedmq-control-http"

    def __init__(self, config: Config, controller: Controller, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._config = config.control
        self._reactor = reactor
        token = Token(b"")
        if config.control.http_port is not None:
            token = Token(read_token(config))
            _warn_if_others_may_read(config.control.token_file or "")
        self._site = QuietSite(_ControlEndpoints(controller, token), "fedmq control", reactor)
        self._listening: Any = None
        self.port: int | None = None

    def _listen(self) -> None:
        if self._listening is not None or self._config.http_port is None:
            return
        address, port = self._config.http_address, self._config.http_port
        self._listening, host = listen_tcp(
            self._reactor,
            self._site,
            address,
            port,
            "control",
            "control.http_address, control.http_port",
        )
        self.port = self._listening.getHost().port
        log.info("Taking pause, resume and status on http://%s:%d/ (token needed)", host, self.port)
        if not _is_loopback(address):
            log.warning(
                "The HTTP control endpoint listens beyond this host (%s): whoever reaches it "
                "with the token can pause this consumer, and plain HTTP shows the token to "
                "the network; put a TLS proxy in front of it",
                address,
            )

    def stopService(self) -> defer.Deferred[None] | None:
        """Stop listening."""
        super().stopService()
        listening, self._listening = self._listening, None
        self.port = None
        if listening is None:
            return None
        return defer.maybeDeferred(listening.stopListening).addCallback(lambda _: None)


__all__ = ["ControlHTTPService", "Token"]
