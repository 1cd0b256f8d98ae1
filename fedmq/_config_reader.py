"""Where the raw configuration comes from: a TOML file, and the environment.

:func:`fedmq.config.load_config` picks the file, reads it here into a plain
dict, and builds the :class:`~fedmq.config.Config` from that. A file that is
missing, unreadable, not UTF-8 or not TOML ends in a ConfigurationError naming
it (with line and column for TOML mistakes).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedmq._config_checks import _url_problem
from fedmq.exceptions import ConfigurationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found]

_TOML_POSITION = re.compile(r"^(?P<what>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)$")


def _read_toml(path: str, origin: str) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"config file {path} {origin}does not exist") from None
    except OSError as error:
        raise ConfigurationError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{path}: not valid TOML: the file is not UTF-8") from None
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = _TOML_POSITION.match(message)
        if match:
            where, what = f"{match['line']}:{match['col']}", str(match["what"])
        else:  # "(at end of document)": point at the last character instead
            lines = text.split("\n")
            where = f"{len(lines)}:{len(lines[-1]) + 1}"
            what = message.replace(" (at end of document)", "")
        what = what[:1].lower() + what[1:]
        raise ConfigurationError(f"{path}:{where}: not valid TOML: {what}") from None
    return document


#: fedora-messaging's own file, read when fedmq has none of its own.
FEDORA_MESSAGING_CONFIG_PATH = "/etc/fedora-messaging/config.toml"


def _read_sources(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], default_path: str
) -> tuple[dict[str, Any], str]:
    """Return the top-level table to build a Config from, and its source.

    The file is ``path``, else ``$FEDMQ_CONFIG``, else ``default_path`` if it
    exists, else fedora-messaging's: ``$FEDORA_MESSAGING_CONF``, else
    :data:`FEDORA_MESSAGING_CONFIG_PATH` if it exists (a file found there
    publishes for fedora-messaging consumers: ``publish_format`` defaults to
    ``"fedora-messaging"``). ``$FEDMQ_AMQP_URL`` then replaces ``amqp_url``.
    See :func:`fedmq.config.load_config`, whose rules these are.
    """
    data: dict[str, Any] = {}
    source = "<defaults>"
    fedora_messaging_file = False
    if path is not None:
        source = os.fspath(path)
        data = _read_toml(source, "")
    elif env.get("FEDMQ_CONFIG"):
        source = env["FEDMQ_CONFIG"]
        data = _read_toml(source, "(named by $FEDMQ_CONFIG) ")
    elif Path(default_path).exists():
        source = default_path
        data = _read_toml(source, "")
    elif env.get("FEDORA_MESSAGING_CONF"):
        source = env["FEDORA_MESSAGING_CONF"]
        data = _read_toml(source, "(named by $FEDORA_MESSAGING_CONF) ")
        fedora_messaging_file = True
    elif Path(FEDORA_MESSAGING_CONFIG_PATH).exists():
        source = FEDORA_MESSAGING_CONFIG_PATH
        data = _read_toml(source, "")
        fedora_messaging_file = True
    if fedora_messaging_file and not any(key.lower() == "publish_format" for key in data):
        data["publish_format"] = "fedora-messaging"
    url = env.get("FEDMQ_AMQP_URL")
    if url:
        problem = _url_problem(url)
        if problem:
            raise ConfigurationError(f"$FEDMQ_AMQP_URL {problem}")
        data["amqp_url"] = url
    return data, source
