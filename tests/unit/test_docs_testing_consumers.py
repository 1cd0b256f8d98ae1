"""The examples of docs/testing-consumers.md run, and pass, as a user's test suite.

Each Python block of the page becomes a test module of its own; the real-broker
example is left to tests/integration/test_testing_plugin_broker.py, which is it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PAGE = Path(__file__).parents[2] / "docs" / "testing-consumers.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.DOTALL)


def test_every_example_on_the_testing_page_passes(pytester: pytest.Pytester):
    """The function, class, async, capture and in-memory examples: 7 tests, all passing."""
    blocks = [block for block in _python_blocks() if "fedmq_amqp_url" not in block]
    assert len(blocks) == 5
    for index, block in enumerate(blocks):
        pytester.makepyfile(**{f"test_example_{index}": block})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.parseoutcomes() == {"passed": 7}
