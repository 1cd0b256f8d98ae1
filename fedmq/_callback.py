"""Turning what the user gave as a callback into something fedmq can call."""

from __future__ import annotations

import functools
import importlib
import inspect
import sys
import types
from collections.abc import Callable, Mapping
from pathlib import Path
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


def load_callback_file(spec: str) -> Any:
    """Run a Python file and return one of its objects: ``--callback-file PATH:OBJECT``.

    The whole file runs, once, as a module of its own named after the file
    (``handlers.py`` is ``handlers``), so code under ``if __name__ ==
    "__main__":`` does not run. The file need not be on the import path.

    Args:
        spec: the path of the file, a colon and the object's name.

    Raises:
        CallbackError: the spec is malformed, the file cannot be read or
            raises while it runs, or it defines no such object.

    """
    path, sep, name = spec.strip().rpartition(":")
    if not sep or not path or not name:
        raise CallbackError(f"--callback-file {spec!r} is not of the form 'path/to/file.py:object'")
    try:
        source = Path(path).read_bytes()
    except OSError as error:
        raise CallbackError(f"--callback-file: cannot read {path}: {error.strerror}") from None
    module_name = Path(path).stem
    if module_name in sys.modules:  # keep a module already imported under that name
        module_name = f"{module_name}.__callback_file__"
    module = types.ModuleType(module_name)
    module.__file__ = str(Path(path).resolve())
    # Registered while it runs: dataclasses and pickle look classes' modules up there.
    sys.modules[module_name] = module
    try:
        # Running the user's own file is what --callback-file asks for.
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102
    except SyntaxError as error:
        del sys.modules[module_name]
        raise CallbackError(
            f"--callback-file: {path} is not valid Python (line {error.lineno}: {error.msg})"
        ) from None
    except Exception as error:
        del sys.modules[module_name]
        raise CallbackError(
            f"--callback-file: running {path} raised {type(error).__name__}: {error}"
        ) from error
    obj: Any = module
    for part in name.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CallbackError(
                f"--callback-file: {path} defines no object named {name!r}"
            ) from None
    if not callable(obj):
        raise CallbackError(
            f"--callback-file: {name!r} in {path} is not callable (it is {type(obj).__name__})"
        )
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
