"""``rabbitmqctl`` for a throwaway RabbitMQ node: running it, and reading what it lists."""

from __future__ import annotations

import subprocess

from fedmq.testing._rabbit_files import NodeFiles


def run_rabbitmqctl(
    rabbitmqctl: str,
    files: NodeFiles,
    args: tuple[str, ...],
    timeout: float,
    input: str | None,  # noqa: A002 - subprocess.run's name for it
) -> str:
    """Run ``rabbitmqctl -n <node> *args`` in the node's environment; its standard output.

    Raises:
        RuntimeError: the command failed; the message holds its stderr, and of
            the command line only the command's name (arguments may hold a password).
        subprocess.TimeoutExpired: it ran longer than ``timeout``.

    """
    result = subprocess.run(  # noqa: S603 - rabbitmqctl, with arguments built by fedmq
        [rabbitmqctl, "-n", files.nodename, *args],
        env=files.env(),
        cwd=files.base_dir,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,  # a failure is reported below, with its stderr
    )
    if result.returncode != 0:
        message = (result.stderr.strip() or result.stdout.strip())[:2000]
        raise RuntimeError(
            f"rabbitmqctl {args[0] if args else ''} on {files.nodename} failed "
            f"(exit {result.returncode}): {message}"
        )
    return result.stdout


def queue_counts_from(listing: str, queue: str) -> tuple[int, int] | None:
    """(ready, unacknowledged) of ``queue`` in a listing, or None when it is not listed.

    The listing is ``list_queues name messages_ready messages_unacknowledged``'s.
    """
    for line in listing.splitlines():
        # The counts are the last two columns; the name may hold tabs.
        name, _, counts = line.rpartition("\t")
        name, _, ready = name.rpartition("\t")
        if name == queue:
            return int(ready), int(counts)
    return None
