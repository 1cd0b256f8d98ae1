"""What ``fedmq consume`` and ``fedmq record`` consume.

That is the configuration's topology, edited by ``--queue-name``,
``--routing-key`` and ``--exchange``.

Those three flags mean what they mean in fedora-messaging's command: they
edit the configuration's queues and bindings (:func:`with_fedora_overrides`).
``--replace-topology`` gives them fedmq's other meaning instead: one queue
and one binding in place of the configuration's (:func:`with_overrides`).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from fedmq._records import UsageError
from fedmq.config import BindingConfig, Config, QueueConfig

#: The queue fedora-messaging consumes when its configuration lists none:
#: named by the broker, exclusive to the connection, deleted when it closes.
SERVER_NAMED_QUEUE = QueueConfig(name="", durable=False, auto_delete=True, exclusive=True)
#: The binding fedora-messaging makes when its configuration lists none.
DEFAULT_BINDING = BindingConfig(queue="", exchange="amq.topic", routing_keys=("#",))


def with_app_name(config: Config, app_name: str | None) -> Config:
    """``--app-name``: the ``app`` client property, which the broker shows for the connection."""
    if app_name is None:
        return config
    return config.replace(client_properties={**config.client_properties, "app": app_name})


def with_fedora_overrides(
    config: Config,
    *,
    queue_name: str | None = None,
    routing_keys: Sequence[str] = (),
    exchange: str | None = None,
) -> Config:
    """Apply ``--queue-name``, ``--routing-key`` and ``--exchange`` as fedora-messaging does.

    The configuration's queues and bindings stay, edited:

    - ``queue_name`` renames the configuration's queue, which keeps its
      settings, and every binding binds it instead of the queue it names. A
      configuration without queues has, for this, the queue fedora-messaging
      has by default (:data:`SERVER_NAMED_QUEUE`) and, if it has no bindings
      either, fedora-messaging's default binding (:data:`DEFAULT_BINDING`);
    - ``exchange`` becomes the exchange of every binding;
    - ``routing_keys`` become the routing keys of every binding.

    An empty ``queue_name`` or ``exchange`` counts as not given.

    Args:
        config: the loaded configuration.
        queue_name: ``--queue-name``.
        routing_keys: every ``--routing-key``.
        exchange: ``--exchange``.

    Returns:
        The configuration to consume with; ``config`` itself without any of them.

    Raises:
        UsageError: ``queue_name`` with a configuration of several queues (which
            one to rename?), or ``routing_keys`` or ``exchange`` with one that
            has queues but no bindings (nothing to change).

    """
    routing_keys = tuple(routing_keys)
    if not (queue_name or routing_keys or exchange):
        return config
    queues, bindings = config.queues, config.bindings
    if not queues:
        queues = (SERVER_NAMED_QUEUE,)
        bindings = bindings or (DEFAULT_BINDING,)
    if queue_name:
        if len(queues) > 1:
            names = ", ".join(repr(queue.name) for queue in queues)
            raise UsageError(
                f"--queue-name renames the configuration's queue, but {config.source} "
                f"declares {len(queues)} ({names}); give a configuration with one"
            )
        queues = (dataclasses.replace(queues[0], name=queue_name),)
        bindings = tuple(dataclasses.replace(b, queue=queue_name) for b in bindings)
    if routing_keys or exchange:
        flag = "--routing-key" if routing_keys else "--exchange"
        if not bindings:
            raise UsageError(
                f"{flag} changes the configuration's bindings, but {config.source} has none; "
                "add a [[bindings]] table, or use --replace-topology"
            )
        changes: dict[str, Any] = {}
        if routing_keys:
            changes["routing_keys"] = routing_keys
        if exchange:
            changes["exchange"] = exchange
        bindings = tuple(dataclasses.replace(b, **changes) for b in bindings)
    return config.replace(queues=queues, bindings=bindings)


def with_overrides(
    config: Config,
    *,
    queue_name: str | None = None,
    routing_keys: Sequence[str] = (),
    exchange: str | None = None,
    app_name: str | None = None,
) -> Config:
    """Replace the configuration's topology: ``--replace-topology``'s meaning of the flags.

    With none of ``queue_name``, ``routing_keys`` and ``exchange``, the
    config's queues and bindings stay. Otherwise they are replaced by one
    queue and, when ``routing_keys`` or ``exchange`` is given, one binding:

    - the queue is ``queue_name``, durable (its settings are kept when the
      config already declares it), or without a name a server-named queue
      that is exclusive and deleted when the consumer stops;
    - the binding binds it to ``exchange`` (default ``amq.topic``) once for
      each routing key (default ``#``, everything).

    Args:
        config: the loaded configuration.
        queue_name: ``--queue-name``.
        routing_keys: every ``--routing-key``.
        exchange: ``--exchange``.
        app_name: ``--app-name``: the ``app`` client property the broker shows.

    Returns:
        The configuration to consume with.

    """
    config = with_app_name(config, app_name)
    if queue_name is None and not routing_keys and exchange is None:
        return config
    if queue_name:
        existing = [queue for queue in config.queues if queue.name == queue_name]
        queue = existing[0] if existing else QueueConfig(name=queue_name)
    else:
        queue = SERVER_NAMED_QUEUE
    bindings: tuple[BindingConfig, ...] = ()
    if routing_keys or exchange is not None:
        bindings = (
            BindingConfig(
                queue=queue.name,
                exchange=exchange or "amq.topic",
                routing_keys=tuple(routing_keys) or ("#",),
            ),
        )
    return config.replace(queues=(queue,), bindings=bindings)


def add_topology_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``consume`` and ``record`` that choose what is consumed."""
    group = parser.add_argument_group(
        "topology",
        "these edit the configuration's queues and bindings, as fedora-messaging's do",
    )
    group.add_argument(
        "--queue-name",
        metavar="Q",
        help="rename the configuration's queue (or the server-named queue used when it has "
        "none) to Q, and bind Q instead",
    )
    group.add_argument(
        "--routing-key",
        metavar="K",
        action="append",
        default=[],
        help="use routing key K in every binding instead of the configured keys; repeat for more",
    )
    group.add_argument(
        "--exchange",
        metavar="E",
        help="use exchange E in every binding instead of the configured ones",
    )
    group.add_argument(
        "--replace-topology",
        action="store_true",
        help="instead, replace the configuration's queues and bindings by queue Q (durable) or "
        "a server-named queue, bound to E (default amq.topic) with each K (default '#')",
    )


def topology_from_options(config: Config, args: argparse.Namespace) -> Config:
    """The configuration ``consume`` or ``record`` consumes with, from its options."""
    config = with_app_name(config, args.app_name)
    if args.replace_topology:
        if args.queue_name is None and not args.routing_key and args.exchange is None:
            raise UsageError(
                "--replace-topology needs --queue-name, --routing-key or --exchange to say "
                "what to consume"
            )
        return with_overrides(
            config,
            queue_name=args.queue_name,
            routing_keys=args.routing_key,
            exchange=args.exchange,
        )
    return with_fedora_overrides(
        config,
        queue_name=args.queue_name,
        routing_keys=args.routing_key,
        exchange=args.exchange,
    )
