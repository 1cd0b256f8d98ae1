"""fedmq.testing's memory alarm against rabbitmqctl as RabbitMQ 3.10 and 4.0 answer it.

The alarm is raised and cleared on a real node in the fault suite (row l); here a
stand-in rabbitmqctl answers ``status`` as each release formats it, so both
releases' branches run on any machine.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fedmq.testing import MemoryAlarm


class FakeCtl:
    """rabbitmqctl of one node: ``status`` and ``set_vm_memory_high_watermark``.

    Args:
        setting: the node's watermark setting, as its status reports it.
        refuses_zero: answer ``set_vm_memory_high_watermark 0`` with an error.

    """

    def __init__(self, setting: Any, refuses_zero: bool = False) -> None:
        self.setting = setting
        self.refuses_zero = refuses_zero
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, *args: str, **_options: Any) -> str:
        self.calls.append(args)
        if args[0] == "status":
            alarmed = self.setting in ({"relative": 0.0}, {"absolute": 1_000_000})
            alarms = [{"node": "n@localhost", "resource": "memory", "type": "resource_limit"}]
            return json.dumps(
                {
                    "alarms": alarms if alarmed else [],
                    "vm_memory_high_watermark_setting": self.setting,
                }
            )
        assert args[0] == "set_vm_memory_high_watermark"
        if args[1:] == ("0",):
            if self.refuses_zero:
                raise RuntimeError("rabbitmqctl set_vm_memory_high_watermark failed (exit 64)")
            self.setting = {"relative": 0.0}
        elif args[1] == "absolute":
            amount = args[2]
            self.setting = {"absolute": 1_000_000 if amount == "1MB" else amount}
        else:
            self.setting = {"relative": float(args[1])}
        return ""

    def sets(self) -> list[tuple[str, ...]]:
        return [call[1:] for call in self.calls if call[0] == "set_vm_memory_high_watermark"]


@pytest.mark.parametrize(
    ("release", "setting"),
    [("3.10", {"relative": 0.4}), ("4.0", {"relative": 0.6})],
)
def test_the_alarm_puts_back_the_releases_own_default_watermark(release, setting):
    """0.4 of the memory on 3.10, 0.6 on 4.0: clearing restores what was there."""
    ctl = FakeCtl(setting)
    with MemoryAlarm(ctl, f"rabbit-{release}@localhost", timeout=5) as alarm:
        assert alarm.in_effect()
    assert ctl.setting == setting
    assert ctl.sets() == [("0",), (repr(setting["relative"]),)]
    assert not alarm.in_effect()
    assert not alarm.raised


def test_an_absolute_watermark_is_put_back_absolute():
    """A node configured with an absolute watermark (bytes, or with its unit) gets it back."""
    for amount, argument in [(2_000_000_000, "2000000000"), ("2GB", "2GB")]:
        ctl = FakeCtl({"absolute": amount})
        alarm = MemoryAlarm(ctl, "n@localhost")
        alarm.raise_alarm(timeout=5)
        alarm.clear(timeout=5)
        assert ctl.sets()[-1] == ("absolute", argument)


def test_a_release_that_refuses_a_zero_watermark_gets_an_absolute_one():
    """Should `set_vm_memory_high_watermark 0` be refused, 1 MB absolute raises the alarm."""
    ctl = FakeCtl({"relative": 0.6}, refuses_zero=True)
    alarm = MemoryAlarm(ctl, "n@localhost")
    alarm.raise_alarm(timeout=5)
    assert alarm.in_effect()
    assert ctl.sets() == [("0",), ("absolute", "1MB")]
    alarm.clear(timeout=5)
    assert ctl.setting == {"relative": 0.6}


def test_raising_twice_keeps_the_first_watermark_to_put_back():
    """A second raise while raised does not mistake the alarm's watermark for the node's."""
    ctl = FakeCtl({"relative": 0.4})
    alarm = MemoryAlarm(ctl, "n@localhost")
    alarm.raise_alarm(timeout=5)
    alarm.raise_alarm(timeout=5)
    alarm.clear(timeout=5)
    assert ctl.setting == {"relative": 0.4}


def test_an_unknown_watermark_setting_is_an_error_not_a_guess():
    """A setting it could not put back stops it before it changes anything."""
    ctl = FakeCtl({"fraction": 0.4})
    with pytest.raises(ValueError, match="unknown memory high watermark"):
        MemoryAlarm(ctl, "n@localhost").raise_alarm(timeout=5)
    assert ctl.sets() == []
