"""Where a throwaway RabbitMQ node keeps everything, and the environment it runs in.

Every setting that could otherwise come from the environment, ``/etc/rabbitmq``
or ``~/.erlang.cookie`` is given explicitly, under one base directory, so the
node never meets a system broker or another test run on the same machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fedmq.testing.certificates import make_test_certificates

# These inherited variables are dropped so a developer's own RabbitMQ or
# Erlang settings cannot leak in.
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


@dataclass(frozen=True)
class NodeFiles:
    """The files and the environment of one node, all under ``base_dir``.

    Args:
        base_dir: the node's directory (absolute).
        nodename: ``<name>@localhost``.
        amqp_port: the AMQP listener's port on 127.0.0.1.
        dist_port: the Erlang distribution port on 127.0.0.1.
        epmd_port: the port of the ``epmd`` the node registers with.
        tls_port: the AMQPS listener's port, or None for none.
        cookie: the Erlang cookie written on the first start.

    """

    base_dir: Path
    nodename: str
    amqp_port: int
    dist_port: int
    epmd_port: int
    tls_port: int | None
    # A secret of sorts: whoever holds it can run code on the node.
    cookie: str = field(repr=False)

    @property
    def mnesia_dir(self) -> Path:
        """The node's database directory; it also marks the node's OS processes."""
        return self.base_dir / "mnesia"

    @property
    def rabbit_log(self) -> Path:
        """RabbitMQ's own log file (the console output goes to ``node.log``)."""
        return self.base_dir / "log" / f"{self.nodename}.log"

    @property
    def tls_files(self) -> dict[str, Path]:
        """Paths of the node's TLS files, by name (see ``RabbitNode.tls_files``)."""
        tls = self.base_dir / "tls"
        return {
            "ca_cert": tls / "ca.pem",
            "server_cert": tls / "server.pem",
            "server_key": tls / "server.key",
            "client_cert": tls / "client.pem",
            "client_key": tls / "client.key",
        }

    def env(self) -> dict[str, str]:
        """The environment ``rabbitmq-server`` and ``rabbitmqctl`` run in."""
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
            RABBITMQ_MNESIA_BASE=str(self.mnesia_dir),
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

    def write(self) -> None:
        """Write the cookie (once), the config, the plugins list and the TLS files."""
        base = self.base_dir
        for sub in ("home", "mnesia", "log", "conf.d"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        cookie = base / "home" / ".erlang.cookie"
        if not cookie.exists():
            # Erlang refuses a cookie file that others can read.
            cookie.touch(mode=0o600)
            cookie.write_text(self.cookie)
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
