"""A TCP proxy on 127.0.0.1 that can cut the connections it carries, as a network would.

One thread runs a selector over every socket; :meth:`TCPProxy.blackhole` and
:meth:`TCPProxy.reset` run on that thread too, so no socket is closed under a
thread still reading it.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self


@dataclass(eq=False)
class _Link:
    client: socket.socket
    upstream: socket.socket
    blackholed: bool = False
    sockets: tuple[socket.socket, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.sockets = (self.client, self.upstream)


class TCPProxy:
    """Forward connections to ``127.0.0.1:port`` to ``127.0.0.1:target_port``.

    New connections are always forwarded; the cuts apply to those open at the time.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        self._links: list[_Link] = []
        self._blackholed: list[_Link] = []
        self._hanging = False
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    # --- what tests call ------------------------------------------------------

    def blackhole(self) -> int:
        """Stop forwarding on every open connection, silently: no FIN, no RST, no data.

        Both ends keep their sockets; whatever they send is read and dropped.

        Returns:
            How many connections were cut.

        """

        def cut() -> int:
            for link in self._links:
                link.blackholed = True
            self._blackholed.extend(self._links)
            cut_now, self._links = len(self._links), []
            return cut_now

        return self._on_loop(cut)

    def hang_new_connections(self) -> None:
        """Accept new connections and never forward them: the broker seems to hang.

        The client's TCP connect succeeds; the AMQP handshake gets no answer.
        """
        self._hanging = True

    def forward_new_connections(self) -> None:
        """Undo :meth:`hang_new_connections` for connections made from now on."""
        self._hanging = False

    def reset(self) -> int:
        """Abort every open connection with a TCP RST to both ends.

        Returns:
            How many connections were reset.

        """

        def reset_all() -> int:
            links, self._links = self._links, []
            for link in links:
                for sock in link.sockets:
                    # A zero linger time turns close() into an RST.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self._forget(sock)
            return len(links)

        return self._on_loop(reset_all)

    def close(self) -> None:
        """Stop the proxy and close every socket, blackholed ones included."""
        if self._running:
            self._running = False
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the loop -------------------------------------------------------------

    def _on_loop(self, function: Callable[[], int]) -> int:
        done = threading.Event()
        result: list[int] = []
        self._commands.put(lambda: (result.append(function()), done.set()))
        if not done.wait(10):
            raise RuntimeError("the proxy's thread did not answer within 10 s")
        return result[0]

    def _run(self) -> None:
        try:
            while self._running:
                for key, _events in self._selector.select(0.05):
                    key.data(key.fileobj)
                while not self._commands.empty():
                    self._commands.get()()
        finally:
            for link in self._links + self._blackholed:
                for sock in link.sockets:
                    sock.close()
            self._listener.close()
            self._selector.close()

    def _accept(self, listener: Any) -> None:
        try:
            client, _address = listener.accept()
        except BlockingIOError:
            return
        if self._hanging:
            # Accepted (the kernel did that already), read and never answered.
            link = _Link(client, client, blackholed=True)
            self._blackholed.append(link)
            self._selector.register(client, selectors.EVENT_READ, self._pump(link, client, client))
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            client.close()  # as if the broker refused: the client sees the connection end
            return
        link = _Link(client, upstream)
        for sock in link.sockets:
            # Blocking sends, bounded: select says when a read will not block.
            sock.settimeout(10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._links.append(link)
        self._selector.register(client, selectors.EVENT_READ, self._pump(link, client, upstream))
        self._selector.register(upstream, selectors.EVENT_READ, self._pump(link, upstream, client))

    def _pump(self, link: _Link, source: socket.socket, target: socket.socket) -> Any:
        def on_readable(_sock: Any) -> None:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if link.blackholed:
                if not data:
                    # The far end gave up on the silence; this end must not
                    # hear of it, so the socket stays open, unread.
                    self._selector.unregister(source)
                return
            if data:
                try:
                    target.sendall(data)
                except OSError:
                    pass
                else:
                    return
            self._close_link(link)

        return on_readable

    def _close_link(self, link: _Link) -> None:
        if link in self._links:
            self._links.remove(link)
        for sock in link.sockets:
            self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        sock.close()
