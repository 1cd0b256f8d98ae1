"""Callbacks that tests/unit/test_callback.py loads by ``"module:object"`` path.

Not a test module: pytest does not collect it, the tests import it by path.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

NOT_CALLABLE = 42


def sync_callback(message: Any) -> None:
    """A plain function."""


async def async_callback(message: Any) -> None:
    """An ``async def`` function."""


#: A partial of an async function: still a coroutine function underneath.
async_partial = functools.partial(async_callback)


class Handlers:
    """Callbacks reached through dotted attributes."""

    @staticmethod
    def handle(message: Any) -> None:
        """A static method: ``callbacks_for_tests:Handlers.handle``."""

    class Inner:
        @staticmethod
        def handle(message: Any) -> None:
            """Two levels down: ``callbacks_for_tests:Handlers.Inner.handle``."""


class TakesConfig:
    """A class whose ``__init__`` takes the consumer_config table."""

    instances: ClassVar[list[TakesConfig]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        TakesConfig.instances.append(self)

    def __call__(self, message: Any) -> None:
        pass


class TakesNothing:
    """A class whose ``__init__`` takes no argument."""

    instances: ClassVar[list[TakesNothing]] = []

    def __init__(self) -> None:
        TakesNothing.instances.append(self)

    def __call__(self, message: Any) -> None:
        pass


class AsyncCallable:
    """A class whose instances have an ``async def __call__``."""

    async def __call__(self, message: Any) -> None:
        pass


class RaisesOnInit:
    """A class that cannot be instantiated."""

    def __init__(self, config: dict[str, Any]) -> None:
        raise ValueError("the 'url' key is missing from consumer_config")

    def __call__(self, message: Any) -> None:
        pass


class NotCallableInstances:
    """A class whose instances have no ``__call__``."""


#: An instance with an async __call__, for loading an object rather than a class.
async_callable_instance = AsyncCallable()
