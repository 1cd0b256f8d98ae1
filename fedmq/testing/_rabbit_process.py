"""The OS processes of a throwaway RabbitMQ node: the server, its private ``epmd``.

:class:`NodeProcess` starts ``rabbitmq-server`` and waits for it to boot,
stops it, and kills it with every helper process it forked; :class:`Epmd` is
the port mapper it registers with.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from fedmq.testing._rabbit_files import NodeFiles

NOT_INSTALLED = (
    "rabbitmq-server is not installed: run `make deps` (as root: apt-get install rabbitmq-server)"
)


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def node_pids(mnesia_dir: Path) -> list[int]:
    """PIDs of the processes whose environment names ``mnesia_dir`` as their database.

    That is every OS process of one node (``beam.smp`` and its helpers), even
    one whose parent was lost track of.
    """
    marker = f"RABBITMQ_MNESIA_BASE={mnesia_dir}".encode()
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


def kill_node(process: subprocess.Popen[bytes] | None, mnesia_dir: Path, nodename: str) -> None:
    """SIGKILL the node's process group, then any process of the node left.

    Raises:
        RuntimeError: some process of the node survived SIGKILL for 10 s.

    """
    # Only while the group leader is unreaped: after that its PID, and so
    # the group ID, may belong to someone else.
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # Helpers (erl_child_setup, inet_gethost, a port program's shell) have
    # process groups of their own, and a dying VM may still be forking one.
    deadline = time.monotonic() + 10
    while pids := node_pids(mnesia_dir):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} of {nodename} survive SIGKILL")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


class Epmd:
    """The Erlang port mapper a node registers with, on 127.0.0.1:``port``.

    Started only when none answers there yet (a cluster peer's may), and
    then owned, so that it can be stopped even while some node is still
    registered with it (``epmd -kill`` refuses).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the ``epmd`` this object started, if it is still running."""
        if self._process is not None and self._process.poll() is None:
            return self._process.pid
        return None

    def start(self) -> None:
        """Start it unless one answers already.

        Raises:
            RuntimeError: ``epmd`` is not installed, or did not answer within 10 s.

        """
        if self.pid is not None or port_open(self.port):
            return
        epmd = shutil.which("epmd")
        if epmd is None:
            raise RuntimeError(NOT_INSTALLED)
        self._process = subprocess.Popen(  # noqa: S603 - epmd, with arguments built here
            [epmd, "-port", str(self.port), "-address", "127.0.0.1"],
            # Not the node's environment: node_pids() must not mistake epmd for it.
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not port_open(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"epmd did not start on 127.0.0.1:{self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the ``epmd`` this object started, if any."""
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


class NodeProcess:
    """The ``rabbitmq-server`` process of one node, and its ``epmd``.

    Args:
        files: the node's files and environment.
        log_path: where the server's console output goes.
        ctl: runs ``rabbitmqctl`` against the node (``ctl(*args, timeout=...)``).

    """

    def __init__(self, files: NodeFiles, log_path: Path, ctl: Callable[..., str]) -> None:
        self._files = files
        self._log_path = log_path
        self._ctl = ctl
        self._process: subprocess.Popen[bytes] | None = None
        self.epmd = Epmd(files.epmd_port)

    @property
    def running(self) -> bool:
        """Whether the server's OS process is alive (not whether it is booted)."""
        return self._process is not None and self._process.poll() is None

    def start(self, server: str, timeout: float) -> None:
        """Start ``server`` (a ``rabbitmq-server`` script) and wait until RabbitMQ is up.

        Raises:
            RuntimeError: it did not boot in time; the message ends with the
                tail of the node's logs.

        """
        self._files.write()
        deadline = time.monotonic() + timeout
        self.epmd.start()
        with self._log_path.open("ab") as log:
            log.write(f"=== fedmq.testing: starting {self._files.nodename} ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(  # noqa: S603 - the server script, no arguments
                [server],
                env=self._files.env(),
                cwd=self._files.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: kill() takes the whole node down
                # with one signal, and a Ctrl-C meant for pytest does not
                # reach the node before cleanup() can stop it in order.
                start_new_session=True,
            )
        try:
            self._await_startup(deadline)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float) -> None:
        """Stop the node cleanly, or kill it if it takes longer than ``timeout``."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._ctl("stop", timeout=timeout)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL every process of the node; ``epmd`` is left running."""
        kill_node(self._process, self._files.mnesia_dir, self._files.nodename)

    def _await_startup(self, deadline: float) -> None:
        # await_startup fails at once while the Erlang node is not yet
        # registered with epmd, so it is retried until the deadline.
        last_error = ""
        while True:
            process = self._process
            if process is None:
                raise RuntimeError(f"RabbitMQ node {self._files.nodename} was not started")
            if process.poll() is not None:
                self._raise_boot_failure(f"exited with status {process.returncode}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._raise_boot_failure(f"did not boot in time ({last_error})")
            try:
                self._ctl(
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
        rabbit_log = self._files.rabbit_log
        raise RuntimeError(
            f"RabbitMQ node {self._files.nodename} {what}.\n"
            f"--- tail of {self._log_path} ---\n{_tail(self._log_path)}\n"
            f"--- tail of {rabbit_log} ---\n{_tail(rabbit_log)}"
        )
