"""Running ``twistd -n fedmq`` and ``fedmq`` as processes, the way operators do.

The processes run from this checkout: ``PYTHONPATH`` puts its root first, so
twistd finds ``twisted/plugins/fedmq_plugin.py`` here and the callbacks in
:mod:`tests.integration.service_callbacks` import.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.helpers import toml_value, wait_until, write_config

REPO = Path(__file__).resolve().parents[2]
CALLBACKS = "tests.integration.service_callbacks"
BIN = Path(sys.executable).parent

#: The two ways to run the consumer service: the twistd plugin and the command.
RUNNERS = {
    "twistd": [str(BIN / "twistd"), "--nodaemon", "--pidfile=", "fedmq"],
    "fedmq consume": [sys.executable, "-m", "fedmq", "consume"],
}


def environment(**extra: str) -> dict[str, str]:
    """The environment of a fedmq process: this checkout first, no stray config."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FEDMQ_CONFIG", "FEDMQ_AMQP_URL", "NOTIFY_SOCKET")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def start(command: Sequence[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        list(command),
        cwd=cwd,
        env=environment(**env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(
    command: Sequence[str],
    cwd: Path,
    input: str | None = None,  # noqa: A002 - subprocess.run's name for it
    timeout: float = 60,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        cwd=cwd,
        env=environment(**env),
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def fedmq(
    *args: str,
    cwd: Path,
    input: str | None = None,  # noqa: A002 - subprocess.run's name for it
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedmq ARGS`` to completion."""
    return run([sys.executable, "-m", "fedmq", *args], cwd, input=input, timeout=timeout)


def finish(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """Wait for ``process`` to exit; kill it if it does not. Returns (status, out, err)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{out}\n{err}") from None
    return process.returncode, out, err


def terminate(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.communicate()


def events(log: Path, kind: str) -> list[str]:
    """Message ids the callback logged with ``kind`` ("started", "done")."""
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.split()[0] == kind]


__all__ = [
    "CALLBACKS",
    "REPO",
    "RUNNERS",
    "environment",
    "events",
    "fedmq",
    "finish",
    "run",
    "start",
    "terminate",
    "toml_value",
    "wait_until",
    "write_config",
]
