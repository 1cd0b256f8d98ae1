"""A memory alarm on a throwaway RabbitMQ node, raised and cleared with ``rabbitmqctl``.

While the alarm is in effect the broker blocks every connection that
publishes (``connection.blocked``) and stops reading from it; connections
that only consume and acknowledge go on. The alarm is raised by setting the
memory high watermark below what the node uses, and cleared by putting the
previous watermark back, read from ``rabbitmqctl status`` first: its default
differs between RabbitMQ releases (0.4 of the memory up to 3.x, 0.6 from
4.0), and it may be an absolute amount.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Python 3.11 has typing.Self; the annotations are never evaluated.
    from typing_extensions import Self

#: Runs ``rabbitmqctl`` with these arguments against the node; its stdout.
Ctl = Callable[..., str]

# A watermark no running node stays under. "0" is the documented way to
# block all publishing; should a release refuse it, an absolute 1 MB does the
# same (the CLI refuses an absolute 0, and "MB" is a unit every release knows).
_RAISE = ("0",)
_RAISE_FALLBACK = ("absolute", "1MB")


def node_status(ctl: Ctl) -> dict[str, Any]:
    """``rabbitmqctl status`` as JSON."""
    return dict(json.loads(ctl("status", "--formatter", "json")))


def alarms_in(status: Mapping[str, Any]) -> list[str]:
    """The resources ("memory", "disk") whose alarms a status lists as in effect."""
    names = []
    for alarm in status.get("alarms") or []:
        if isinstance(alarm, Mapping):
            names.append(str(alarm.get("resource")))
        else:  # a bare name, as some formatters give it
            names.append(str(alarm))
    return names


def restoring_arguments(setting: Any) -> tuple[str, ...]:
    """The ``set_vm_memory_high_watermark`` arguments that put ``setting`` back.

    Args:
        setting: ``vm_memory_high_watermark_setting`` from a status:
            ``{"relative": 0.4}``, ``{"absolute": 2000000000}``,
            ``{"absolute": "2GB"}``, or a bare fraction.

    Raises:
        ValueError: a setting of another shape.

    """
    if isinstance(setting, Mapping) and "absolute" in setting:
        amount = setting["absolute"]
        # A number is bytes; a string ("2GB") carries its unit.
        return ("absolute", str(int(amount)) if isinstance(amount, int | float) else str(amount))
    if isinstance(setting, Mapping) and "relative" in setting:
        return (repr(float(setting["relative"])),)
    if isinstance(setting, int | float) and not isinstance(setting, bool):
        return (repr(float(setting)),)
    raise ValueError(f"an unknown memory high watermark setting: {setting!r}")


class MemoryAlarm:
    """A node's memory alarm: :attr:`RabbitNode.memory_alarm <fedmq.testing.RabbitNode>`.

    While the alarm is in effect the broker blocks every connection that
    publishes (``connection.blocked``) and stops reading from it; connections
    that only consume and acknowledge go on. As a context manager it holds
    the alarm for the ``with`` block and clears it on leaving, however the
    block is left::

        with node.memory_alarm:
            ...  # publishers wait, consumers go on

    Args:
        ctl: runs ``rabbitmqctl`` against the node.
        nodename: the node's name, for errors.
        timeout: seconds the context manager waits for the alarm to take
            effect, and again for it to clear.

    """

    def __init__(self, ctl: Ctl, nodename: str, timeout: float = 30) -> None:
        self._ctl = ctl
        self._nodename = nodename
        self._timeout = timeout
        self._previous: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"<MemoryAlarm of {self._nodename}{' raised' if self.raised else ''}>"

    def __enter__(self) -> Self:
        self.raise_alarm(self._timeout)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.clear(self._timeout)

    @property
    def raised(self) -> bool:
        """Whether this object raised the alarm and has not cleared it yet."""
        return self._previous is not None

    def in_effect(self) -> bool:
        """Whether the node reports a memory alarm now."""
        return "memory" in alarms_in(node_status(self._ctl))

    def raise_alarm(self, timeout: float = 30) -> None:
        """Lower the watermark below what the node uses; return once the alarm is on.

        The watermark it replaces (``rabbitmqctl status``) is remembered for
        :meth:`clear`. Raising it again while it is raised keeps the first one.

        Raises:
            RuntimeError: the node still reports no alarm after ``timeout`` seconds.
            ValueError: the node reports a watermark setting of an unknown shape,
                which could not be put back.

        """
        if self._previous is None:
            setting = node_status(self._ctl).get("vm_memory_high_watermark_setting")
            self._previous = restoring_arguments(setting)
        try:
            self._ctl("set_vm_memory_high_watermark", *_RAISE)
        except RuntimeError:
            self._ctl("set_vm_memory_high_watermark", *_RAISE_FALLBACK)
        if not self._wait(in_effect=True, timeout=timeout / 2):
            self._ctl("set_vm_memory_high_watermark", *_RAISE_FALLBACK)
            if not self._wait(in_effect=True, timeout=timeout / 2):
                raise RuntimeError(f"no memory alarm on {self._nodename} after {timeout:g} s")

    def clear(self, timeout: float = 30) -> None:
        """Put the watermark back as it was; return once the alarm is off.

        Does nothing unless this object raised the alarm.

        Raises:
            RuntimeError: the node still reports the alarm after ``timeout`` seconds.

        """
        if self._previous is None:
            return
        self._ctl("set_vm_memory_high_watermark", *self._previous)
        self._previous = None
        if not self._wait(in_effect=False, timeout=timeout):
            raise RuntimeError(
                f"the memory alarm on {self._nodename} is still on after {timeout:g} s"
            )

    def _wait(self, in_effect: bool, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.in_effect() != in_effect:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
