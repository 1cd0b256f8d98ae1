"""A throwaway RabbitMQ node for tests, and test certificates for TLS.

:class:`RabbitNode` runs Debian's ``rabbitmq-server`` as the current user with
every file it writes (database, logs, Erlang cookie, crash dumps) under one
directory, every socket on 127.0.0.1, and a private ``epmd`` port, so it never
meets a system broker or another test run on the same machine. It can be
stopped, restarted with its data, or killed outright, which is what fault
tests need; several of them sharing an ``epmd_port`` and a ``cookie`` can be
clustered.

The node is driven through ``rabbitmqctl`` only; this module imports no AMQP
client.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import quote

from fedmq.testing._rabbit_alarms import MemoryAlarm
from fedmq.testing._rabbit_ctl import queue_counts_from, run_rabbitmqctl
from fedmq.testing._rabbit_files import NodeFiles
from fedmq.testing._rabbit_process import NOT_INSTALLED, NodeProcess, node_pids

__all__ = ["NOT_INSTALLED", "MemoryAlarm", "RabbitNode", "find_rabbitmq_server"]

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the
# rabbitmq user when run as root; this is the script it ends up running.
_DEBIAN_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def find_rabbitmq_server() -> str | None:
    """Find a ``rabbitmq-server`` script that runs as the current user.

    Returns:
        Its path, or None when RabbitMQ is not installed. Debian's
        ``/usr/sbin`` wrapper, which switches user when run as root, is never
        returned.

    """
    if os.access(_DEBIAN_SERVER, os.X_OK):
        return _DEBIAN_SERVER
    found = shutil.which("rabbitmq-server")
    if found and not os.path.realpath(found).endswith("rabbitmq-script-wrapper"):
        return found
    return None


def _rabbitmqctl() -> str:
    server = find_rabbitmq_server()
    if server is None:
        raise RuntimeError(NOT_INSTALLED)
    return str(Path(server).with_name("rabbitmqctl"))


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 free right now, all different."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


class RabbitNode:
    """One RabbitMQ node, private to the caller, with its data in ``base_dir``.

    Use it as a context manager, which starts the node and cleans up after
    it, or call :meth:`start` and :meth:`cleanup` yourself::

        with RabbitNode(tmp_path) as node:
            connect_to(node.url)

    Args:
        base_dir: Directory for everything the node writes; created if
            missing. Nothing in it is ever deleted, so logs outlive the node.
        name: First half of the Erlang node name, ``<name>@localhost``.
            Nodes of one cluster need different names.
        amqp_port: AMQP listener port on 127.0.0.1; a free one by default.
        dist_port: Erlang distribution port on 127.0.0.1; a free one by
            default.
        epmd_port: Port of the Erlang port mapper this node registers with;
            a free one by default. Nodes of one cluster must share it.
        cookie: Erlang cookie; random by default. Nodes of one cluster must
            share it. Written to ``base_dir`` on the first start and kept.
        tls: Also listen for AMQPS, with test certificates (see :attr:`tls_port`).

    """

    def __init__(
        self,
        base_dir: Path,
        name: str = "fedmq-test",
        amqp_port: int | None = None,
        dist_port: int | None = None,
        epmd_port: int | None = None,
        cookie: str | None = None,
        tls: bool = False,
    ) -> None:
        self.base_dir = Path(base_dir).absolute()
        self.name = name
        self.nodename = f"{name}@localhost"
        free = iter(_free_ports(4))
        self.amqp_port = amqp_port or next(free)
        self.dist_port = dist_port or next(free)
        self.epmd_port = epmd_port or next(free)
        #: With ``tls=True``: an AMQPS listener on this port, with a test CA
        #: and a server certificate for ``localhost`` (see :attr:`tls_files`).
        self.tls_port: int | None = next(free) if tls else None
        ports = (self.amqp_port, self.dist_port, self.epmd_port, self.tls_port)
        cookie = cookie or secrets.token_hex(16).upper()
        self._files = NodeFiles(self.base_dir, self.nodename, *ports, cookie)
        self.log_path = self.base_dir / "node.log"
        #: Seconds the last successful :meth:`start` took.
        self.boot_seconds: float | None = None
        self._process = NodeProcess(self._files, self.log_path, self.ctl)
        self._memory_alarm = MemoryAlarm(self.ctl, self.nodename)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RabbitNode {self.nodename} amqp=127.0.0.1:{self.amqp_port} {state}>"

    # --- where things are ------------------------------------------------

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost, as the ``guest`` user."""
        return self.vhost_url("/")

    def vhost_url(self, vhost: str, user: str = "guest", password: str = "guest") -> str:
        """AMQP URL of ``vhost`` on this node.

        Args:
            vhost: The virtual host, unquoted (``"/"`` for the default one).
            user: User name to put in the URL.
            password: Password to put in the URL.

        Returns:
            An ``amqp://`` URL with every part percent-quoted.

        """
        userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"amqp://{userinfo}@127.0.0.1:{self.amqp_port}/{quote(vhost, safe='')}"

    @property
    def tls_files(self) -> dict[str, Path]:
        """Paths of the node's TLS files, by name.

        They are the test CA (``ca_cert``), the server's certificate and key, and a
        client certificate and key (``client_cert``, ``client_key``) whose common name,
        :data:`~fedmq.testing.TEST_CLIENT_NAME`, is the user it logs in as with EXTERNAL.
        """
        return self._files.tls_files

    @property
    def tls_url(self) -> str:
        """AMQPS URL of the default vhost on the TLS listener (``tls=True`` only)."""
        if self.tls_port is None:
            raise RuntimeError(f"{self.nodename} was started without tls=True")
        return f"amqps://guest:guest@localhost:{self.tls_port}/%2F"

    @property
    def running(self) -> bool:
        """Whether the node's OS process is alive (not whether it is booted)."""
        return self._process.running

    @property
    def epmd_pid(self) -> int | None:
        """PID of the ``epmd`` this object started, if it is still running."""
        return self._process.epmd.pid

    def pids(self) -> list[int]:
        """PIDs of the node's OS processes: ``beam.smp`` and its helpers.

        Found by the node's data directory in each process's environment, so
        this also finds a node this object lost track of.
        """
        return node_pids(self._files.mnesia_dir)

    # --- life cycle ------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        """Start the node and wait until RabbitMQ is up.

        Starting again after :meth:`stop` or :meth:`kill` reuses the data
        left in ``base_dir``.

        Args:
            timeout: Seconds to wait for the node to boot.

        Raises:
            RuntimeError: RabbitMQ is not installed, the node is already
                running, or it did not boot in time; the message then ends
                with the tail of the node's log.

        """
        server = find_rabbitmq_server()
        if server is None:
            raise RuntimeError(NOT_INSTALLED)
        if self.running:
            raise RuntimeError(f"{self!r} is already running")
        began = time.monotonic()
        self._process.start(server, timeout)
        self.boot_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30) -> None:
        """Stop the node cleanly, or kill it if it takes longer than ``timeout``.

        Does nothing if the node is not running.
        """
        self._process.stop(timeout)

    def restart(self, timeout: float = 60) -> None:
        """Stop the node and start it again on the same data and ports.

        Durable queues and their persistent messages survive.
        """
        self.stop()
        self.start(timeout)

    def kill(self) -> None:
        """Kill the node's OS processes with SIGKILL, as a crash would.

        ``epmd`` is left running, as it would be on a real machine.
        """
        self._process.kill()

    def cleanup(self) -> None:
        """Stop the node, kill anything of it left over, and stop our ``epmd``.

        Safe to call more than once and on a node that never started. No
        file is removed.
        """
        try:
            self.stop()
        finally:
            self.kill()
            self._process.epmd.stop()

    def __enter__(self) -> Self:
        if not self.running:
            try:
                self.start()
            except BaseException:
                self.cleanup()  # __exit__ will not run to stop our epmd
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    # --- rabbitmqctl -----------------------------------------------------

    def ctl(
        self,
        *args: str,
        timeout: float = 60,
        input: str | None = None,  # noqa: A002 - subprocess.run's name for it
    ) -> str:
        """Run ``rabbitmqctl`` against this node.

        Args:
            *args: The command and its arguments, e.g. ``"list_vhosts"``.
            timeout: Seconds before the command is abandoned.
            input: Text for the command's standard input.

        Returns:
            The command's standard output.

        Raises:
            RuntimeError: The command failed; the message holds its stderr.
            subprocess.TimeoutExpired: It ran longer than ``timeout``.

        """
        return run_rabbitmqctl(_rabbitmqctl(), self._files, args, timeout, input)

    def queue_counts(self, queue: str, vhost: str = "/") -> tuple[int, int]:
        """Messages in ``queue``: (ready for delivery, delivered but unacknowledged).

        Raises:
            LookupError: No such queue in ``vhost``.

        """
        output = self.ctl(
            "list_queues",
            "--quiet",
            "--no-table-headers",
            "--vhost",
            vhost,
            "name",
            "messages_ready",
            "messages_unacknowledged",
        )
        counts = queue_counts_from(output, queue)
        if counts is None:
            raise LookupError(f"no queue {queue!r} in vhost {vhost!r} on {self.nodename}")
        return counts

    def queue_depth(self, queue: str, vhost: str = "/") -> int:
        """Messages in ``queue``, ready and unacknowledged together.

        Raises:
            LookupError: No such queue in ``vhost``.

        """
        return sum(self.queue_counts(queue, vhost))

    def add_vhost(self, vhost: str) -> None:
        """Create ``vhost``; ``guest`` gets no rights on it until given them."""
        self.ctl("add_vhost", vhost)

    def delete_vhost(self, vhost: str) -> None:
        """Delete ``vhost`` with its queues, exchanges and messages."""
        self.ctl("delete_vhost", vhost)

    def set_permissions(
        self,
        user: str,
        vhost: str = "/",
        configure: str = ".*",
        write: str = ".*",
        read: str = ".*",
    ) -> None:
        """Give ``user`` the configure, write and read patterns on ``vhost``."""
        self.ctl("set_permissions", "--vhost", vhost, user, configure, write, read)

    def add_user(
        self,
        user: str,
        password: str,
        vhost: str = "/",
        configure: str = ".*",
        write: str = ".*",
        read: str = ".*",
    ) -> None:
        """Create ``user`` and give it permissions on ``vhost``."""
        # On stdin, so the password never shows in a process listing.
        self.ctl("add_user", user, input=password)
        self.set_permissions(user, vhost, configure, write, read)

    def close_all_connections(self, reason: str = "closed by fedmq.testing") -> None:
        """Close every client connection to this node, in every vhost.

        Clients see a connection-forced close carrying ``reason``.
        """
        self.ctl("close_all_connections", "--global", reason)

    # --- resource alarms -------------------------------------------------

    @property
    def memory_alarm(self) -> MemoryAlarm:
        """The node's memory alarm, to raise and clear: a publisher-blocking fault.

        ``with node.memory_alarm:`` holds the alarm for the block.
        """
        return self._memory_alarm
