"""Running ``twistd -n fedmq`` and ``fedmq`` as processes, the way operators do.

The processes run from this checkout: ``PYTHONPATH`` puts its root first, so
twistd finds ``twisted/plugins/fedmq_plugin.py`` here and the callbacks in
:mod:`tests.integration.service_callbacks` import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as TOML: plain keys first, then one table per dict value."""
    plain = [f"{key} = {toml_value(value)}" for key, value in data.items() if not _table(value)]
    tables = [
        f"[{key}]\n" + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in value.items())
        for key, value in data.items()
        if _table(value)
    ]
    path.write_text("\n".join(plain) + "\n\n" + "\n".join(tables))
    return path


def _table(value: Any) -> bool:
    return isinstance(value, dict)


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
    command: Sequence[str], cwd: Path, input: str | None = None, timeout: float = 60, **env: str
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
    *args: str, cwd: Path, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m fedmq ARGS`` to completion."""
    return run([sys.executable, "-m", "fedmq", *args], cwd, input=input, timeout=timeout)


def wait_until(
    condition: Callable[[], Any],
    what: str,
    process: subprocess.Popen[str] | None = None,
    timeout: float = 30,
) -> Any:
    """Poll ``condition`` until it is true; fail early if ``process`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"exited {process.returncode} before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


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
