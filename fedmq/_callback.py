"""Turning what the user gave as a callback into something fedmq can call."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fedmq import _fedora
from fedmq.exceptions import CallbackError

if TYPE_CHECKING:
    from fedmq.config import Config


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (the attribute may be dotted).

    Raises:
        CallbackError: naming the path and what is wrong with it.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise CallbackError(f"The callback {path!r} is not of the form 'package.module:object'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallbackError(
            f"The callback {path!r} could not be loaded: module {module_name!r} "
            f"cannot be imported ({exc})"
        ) from None
    except Exception as exc:
        raise CallbackError(
            f"The callback {path!r} could not be loaded: importing {module_name!r} "
            f"raised {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CallbackError(
                f"The callback {path!r} could not be loaded: {module_name!r} has no "
                f"attribute {attribute!r}"
            ) from None
    return obj


def _how_it_takes_the_config(cls: type) -> str | None:
    """How __init__ takes consumer_config: "positional", "keyword" (keyword-only) or None."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return None
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
            return "positional"
        if parameter.kind is parameter.VAR_POSITIONAL:
            return "positional"
        if parameter.kind is parameter.KEYWORD_ONLY and parameter.name == "consumer_config":
            return "keyword"
    return None


def is_async_callable(obj: Any) -> bool:
    """True for ``async def`` functions and objects whose ``__call__`` is one."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - the class's own __call__
    return not inspect.isfunction(obj) and inspect.iscoroutinefunction(call)


def load_callback(
    callback: Any,
    consumer_config: Mapping[str, Any] | None = None,
    *,
    config: Config | None = None,
) -> tuple[Callable[..., Any], bool]:
    """Resolve a callback into ``(callable, is_async)``.

    Args:
        callback: a ``"module:object"`` string, a function, a callable
            object, an ``async def`` function, or a class. A class is
            instantiated once, with ``consumer_config`` when its ``__init__``
            takes an argument (or a keyword-only ``consumer_config``).
        consumer_config: the config's free-form ``consumer_config`` table.
        config: the whole configuration: when given, and fedora-messaging is
            installed, its global ``conf`` is filled from it before the
            callback is imported or built (a class written for
            fedora-messaging reads ``conf["consumer_config"]`` there).

    Raises:
        CallbackError: the callback is missing, cannot be imported or
            instantiated, or is not callable.
    """
    if callback is None:
        raise CallbackError(
            "No callback is configured: pass one to consume(), or set 'callback' in the config file"
        )
    label = callback if isinstance(callback, str) else getattr(callback, "__qualname__", callback)
    if config is not None and (isinstance(callback, str) or inspect.isclass(callback)):
        _fedora.fill_global_config(config)
    if isinstance(callback, str):
        callback = import_object(callback)
    if inspect.isclass(callback):
        cls: Any = callback
        try:
            takes = _how_it_takes_the_config(cls)
            if takes == "positional":
                callback = cls(dict(consumer_config or {}))
            elif takes == "keyword":
                callback = cls(consumer_config=dict(consumer_config or {}))
            else:
                callback = cls()
        except Exception as exc:
            raise CallbackError(
                f"The callback class {label!r} could not be instantiated: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if not callable(callback):
        raise CallbackError(f"The callback {label!r} is not callable")
    return callback, is_async_callable(callback)
