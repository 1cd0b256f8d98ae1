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
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import quote

from fedmq.testing.certificates import make_test_certificates

__all__ = ["NOT_INSTALLED", "RabbitNode", "find_rabbitmq_server"]

NOT_INSTALLED = (
    "rabbitmq-server is not installed: run `make deps` (as root: apt-get install rabbitmq-server)"
)

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self

# Debian's /usr/sbin/rabbitmq-server is a wrapper that switches to the
# rabbitmq user when run as root; this is the script it ends up running.
_DEBIAN_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"

# Every setting that could otherwise come from the environment, /etc/rabbitmq
# or ~/.erlang.cookie is given explicitly; these inherited variables are
# dropped so a developer's own RabbitMQ or Erlang settings cannot leak in.
_INHERITED_PREFIXES = ("RABBITMQ_", "ERL_")

# A 3.10 node logs a great deal at info level; warnings are what a failing
# test needs to see. The low disk limit keeps a nearly full CI disk from
# raising the disk alarm, which would silently block every publisher.
_CONFIG = """\
listeners.tcp.default = 127.0.0.1:{amqp_port}
loopback_users = none
log.file.level = warning
log.console = false
disk_free_limit.absolute = 10MB
"""


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


def _free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 free right now, all different."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


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
        self._cookie = cookie or secrets.token_hex(16).upper()
        self.log_path = self.base_dir / "node.log"
        #: Seconds the last successful :meth:`start` took.
        self.boot_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None

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
        tls = self.base_dir / "tls"
        return {
            "ca_cert": tls / "ca.pem",
            "server_cert": tls / "server.pem",
            "server_key": tls / "server.key",
            "client_cert": tls / "client.pem",
            "client_key": tls / "client.key",
        }

    @property
    def tls_url(self) -> str:
        """AMQPS URL of the default vhost on the TLS listener (``tls=True`` only)."""
        if self.tls_port is None:
            raise RuntimeError(f"{self.nodename} was started without tls=True")
        return f"amqps://guest:guest@localhost:{self.tls_port}/%2F"

    @property
    def running(self) -> bool:
        """Whether the node's OS process is alive (not whether it is booted)."""
        return self._process is not None and self._process.poll() is None

    @property
    def epmd_pid(self) -> int | None:
        """PID of the ``epmd`` this object started, if it is still running."""
        if self._epmd is not None and self._epmd.poll() is None:
            return self._epmd.pid
        return None

    def pids(self) -> list[int]:
        """PIDs of the node's OS processes: ``beam.smp`` and its helpers.

        Found by the node's data directory in each process's environment, so
        this also finds a node this object lost track of.
        """
        marker = f"RABBITMQ_MNESIA_BASE={self.base_dir / 'mnesia'}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:  # gone already, or not ours to read
                continue
            if marker in environ.split(b"\0"):
                found.append(int(entry.name))
        return found

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
        self._write_files()
        began = time.monotonic()
        self._start_epmd()
        with self.log_path.open("ab") as log:
            log.write(f"=== fedmq.testing: starting {self.nodename} ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [server],
                env=self._env(),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: kill() takes the whole node down
                # with one signal, and a Ctrl-C meant for pytest does not
                # reach the node before cleanup() can stop it in order.
                start_new_session=True,
            )
        try:
            self._await_startup(began + timeout)
        except BaseException:
            self.kill()
            raise
        self.boot_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30) -> None:
        """Stop the node cleanly, or kill it if it takes longer than ``timeout``.

        Does nothing if the node is not running.
        """
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.ctl("stop", timeout=timeout)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

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
        # Only while the group leader is unreaped: after that its PID, and so
        # the group ID, may belong to someone else.
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        # Helpers (erl_child_setup, inet_gethost, a port program's shell) have
        # process groups of their own, and a dying VM may still be forking one.
        deadline = time.monotonic() + 10
        while pids := self.pids():
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes {pids} of {self.nodename} survive SIGKILL")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Stop the node, kill anything of it left over, and stop our ``epmd``.

        Safe to call more than once and on a node that never started. No
        file is removed.
        """
        try:
            self.stop()
        finally:
            self.kill()
            self._stop_epmd()

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
        result = subprocess.run(
            [self._rabbitmqctl(), "-n", self.nodename, *args],
            env=self._env(),
            cwd=self.base_dir,
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,  # a failure is reported below, with its stderr
        )
        if result.returncode != 0:
            # Only the command's name: arguments may hold a password.
            message = (result.stderr.strip() or result.stdout.strip())[:2000]
            raise RuntimeError(
                f"rabbitmqctl {args[0] if args else ''} on {self.nodename} failed "
                f"(exit {result.returncode}): {message}"
            )
        return result.stdout

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
        for line in output.splitlines():
            # The counts are the last two columns; the name may hold tabs.
            name, _, counts = line.rpartition("\t")
            name, _, ready = name.rpartition("\t")
            if name == queue:
                return int(ready), int(counts)
        raise LookupError(f"no queue {queue!r} in vhost {vhost!r} on {self.nodename}")

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

    # --- internals -------------------------------------------------------

    def _rabbitmqctl(self) -> str:
        server = find_rabbitmq_server()
        if server is None:
            raise RuntimeError(NOT_INSTALLED)
        return str(Path(server).with_name("rabbitmqctl"))

    def _env(self) -> dict[str, str]:
        base = self.base_dir
        env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
        env.update(
            # The Erlang cookie is read from $HOME by the node and the CLI.
            HOME=str(base / "home"),
            # The CLI is written in Elixir, which warns without a UTF-8 locale.
            LC_ALL="C.UTF-8",
            LANG="C.UTF-8",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.amqp_port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(base / "mnesia"),
            RABBITMQ_LOG_BASE=str(base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(base / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(base / "rabbitmq.conf"),
            # Keep /etc/rabbitmq out of it entirely.
            RABBITMQ_CONFIG_FILES=str(base / "conf.d" / "*.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(base / "rabbitmq-env.conf"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_CRASH_DUMP=str(base / "erl_crash.dump"),
            # Without this the distribution port listens on every interface;
            # the CLI's own short-lived distribution listener likewise.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    def _write_files(self) -> None:
        base = self.base_dir
        for sub in ("home", "mnesia", "log", "conf.d"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = base / "home" / ".erlang.cookie"
        if not cookie.exists():
            # Erlang refuses a cookie file that others can read.
            cookie.touch(mode=0o600)
            cookie.write_text(self._cookie)
            cookie.chmod(0o400)
        config = _CONFIG.format(amqp_port=self.amqp_port)
        if self.tls_port is not None:
            files = self.tls_files
            if not files["ca_cert"].exists():
                make_test_certificates(base / "tls")
            config += _TLS_CONFIG.format(port=self.tls_port, **files)
        (base / "rabbitmq.conf").write_text(config)
        # EXTERNAL (client certificate) logins need the broker's plugin for them.
        plugins = "rabbitmq_auth_mechanism_ssl" if self.tls_port is not None else ""
        (base / "enabled_plugins").write_text(f"[{plugins}].\n")
        (base / "rabbitmq-env.conf").touch()

    def _start_epmd(self) -> None:
        """Start a private epmd unless one (a cluster peer's) already answers."""
        if self.epmd_pid is not None or _port_open(self.epmd_port):
            return
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RuntimeError(NOT_INSTALLED)
        # In the foreground, so this object owns its PID and can stop it even
        # while some node is still registered with it (`epmd -kill` refuses).
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            # Not the node's environment: pids() must not mistake epmd for it.
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not _port_open(self.epmd_port):
            if self._epmd.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not start on 127.0.0.1:{self.epmd_port}")
            time.sleep(0.05)

    def _stop_epmd(self) -> None:
        if self._epmd is None:
            return
        self._epmd.terminate()
        try:
            self._epmd.wait(10)
        except subprocess.TimeoutExpired:
            self._epmd.kill()
            self._epmd.wait()
        self._epmd = None

    def _await_startup(self, deadline: float) -> None:
        # await_startup fails at once while the Erlang node is not yet
        # registered with epmd, so it is retried until the deadline.
        last_error = ""
        while True:
            process = self._process
            if process is None:
                raise RuntimeError(f"RabbitMQ node {self.nodename} was not started")
            if process.poll() is not None:
                self._raise_boot_failure(f"exited with status {process.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_boot_failure(f"did not boot in time ({last_error})")
            try:
                self.ctl(
                    "await_startup",
                    "--timeout",
                    str(max(1, int(remaining))),
                    timeout=remaining + 10,
                )
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                last_error = str(e)
            else:
                return
            time.sleep(0.2)

    def _raise_boot_failure(self, what: str) -> NoReturn:
        raise RuntimeError(
            f"RabbitMQ node {self.nodename} {what}.\n"
            f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- tail of {self._rabbit_log()} ---\n{_tail(self._rabbit_log())}"
        )

    def _rabbit_log(self) -> Path:
        return self.base_dir / "log" / f"{self.nodename}.log"


_TLS_CONFIG = """\
listeners.ssl.default = 127.0.0.1:{port}
ssl_options.cacertfile = {ca_cert}
ssl_options.certfile = {server_cert}
ssl_options.keyfile = {server_key}
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
ssl_cert_login_from = common_name
auth_mechanisms.1 = PLAIN
auth_mechanisms.2 = AMQPLAIN
auth_mechanisms.3 = EXTERNAL
"""
