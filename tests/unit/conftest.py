"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def fm_global_conf() -> Iterator[Any]:
    """fedora-messaging's global config, put back as it was after the test."""
    from fedora_messaging import config as fm_config

    conf = fm_config.conf
    saved, loaded = dict(conf), conf.loaded
    yield conf
    dict.clear(conf)
    dict.update(conf, saved)
    conf.loaded = loaded
