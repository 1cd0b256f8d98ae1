"""Tests for fedmq._callback: turning what the user names into a callable."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fedmq._callback import import_object, is_async_callable, load_callback
from fedmq.exceptions import CallbackError
from tests.unit import callbacks_for_tests as callbacks

MODULE = "tests.unit.callbacks_for_tests"


@pytest.fixture(autouse=True)
def _forget_instances() -> Iterator[None]:
    """Each test counts the instances it makes, and only those."""
    callbacks.TakesConfig.instances.clear()
    callbacks.TakesNothing.instances.clear()
    yield
    callbacks.TakesConfig.instances.clear()
    callbacks.TakesNothing.instances.clear()


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path for modules a test writes; they are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


# --- import_object -----------------------------------------------------------


def test_import_object_returns_the_named_module_attribute():
    """'module:object' gives that very object of that module."""
    assert import_object(f"{MODULE}:sync_callback") is callbacks.sync_callback


def test_import_object_follows_dotted_attributes():
    """The part after the colon may be dotted, reaching into classes."""
    assert import_object(f"{MODULE}:Handlers.handle") is callbacks.Handlers.handle
    assert import_object(f"{MODULE}:Handlers.Inner.handle") is callbacks.Handlers.Inner.handle


@pytest.mark.parametrize(
    "path",
    [
        "tests.unit.callbacks_for_tests.sync_callback",
        "tests.unit.callbacks_for_tests:",
        ":sync_callback",
        "",
    ],
)
def test_a_path_without_module_colon_object_is_refused_naming_the_form(path: str):
    """A path missing its colon, module or object says so and shows the expected form."""
    with pytest.raises(CallbackError) as info:
        import_object(path)
    assert str(info.value) == (f"The callback {path!r} is not of the form 'package.module:object'")


def test_a_missing_module_is_named_in_the_error():
    """A module that does not exist is named, with the path it came from."""
    path = "tests.unit.no_such_module:callback"
    with pytest.raises(CallbackError) as info:
        import_object(path)
    text = str(info.value)
    assert repr(path) in text
    assert "module 'tests.unit.no_such_module' cannot be imported" in text


def test_a_missing_attribute_is_named_in_the_error():
    """An object the module lacks is named, with the module and the path."""
    path = f"{MODULE}:no_such_callback"
    with pytest.raises(CallbackError) as info:
        import_object(path)
    assert str(info.value) == (
        f"The callback {path!r} could not be loaded: {MODULE!r} has no attribute 'no_such_callback'"
    )


def test_a_missing_dotted_attribute_is_named_in_the_error():
    """A dotted attribute that breaks part way is reported with the whole attribute path."""
    path = f"{MODULE}:Handlers.missing"
    with pytest.raises(CallbackError, match=r"has no attribute 'Handlers\.missing'") as info:
        import_object(path)
    assert repr(path) in str(info.value)


def test_a_module_that_raises_on_import_is_reported_with_its_exception(module_dir: Path):
    """A module whose import raises gives a CallbackError naming it and what it raised."""
    (module_dir / "fedmq_test_raising_module.py").write_text(
        "raise RuntimeError('the database is down')\n"
    )
    path = "fedmq_test_raising_module:callback"
    with pytest.raises(CallbackError) as info:
        import_object(path)
    assert str(info.value) == (
        f"The callback {path!r} could not be loaded: importing 'fedmq_test_raising_module' "
        "raised RuntimeError: the database is down"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_a_module_whose_dependency_is_missing_names_the_dependency(module_dir: Path):
    """A module that imports something not installed says which import failed."""
    (module_dir / "fedmq_test_needs_dependency.py").write_text("import fedmq_test_not_installed\n")
    with pytest.raises(CallbackError) as info:
        import_object("fedmq_test_needs_dependency:callback")
    text = str(info.value)
    assert "module 'fedmq_test_needs_dependency' cannot be imported" in text
    assert "fedmq_test_not_installed" in text


def test_a_module_with_a_syntax_error_is_reported_not_raised(module_dir: Path):
    """A syntax error in the callback's module is a CallbackError, not a traceback."""
    (module_dir / "fedmq_test_bad_syntax.py").write_text("def callback(:\n")
    with pytest.raises(CallbackError, match="importing 'fedmq_test_bad_syntax' raised SyntaxError"):
        import_object("fedmq_test_bad_syntax:callback")


# --- load_callback: what comes back ----------------------------------------


def test_a_function_path_loads_the_function_as_sync():
    """A path to a plain function gives that function, to run in a worker thread."""
    assert load_callback(f"{MODULE}:sync_callback") == (callbacks.sync_callback, False)


def test_a_function_object_is_returned_as_it_is():
    """A callable passed directly is used as it is."""
    assert load_callback(callbacks.sync_callback) == (callbacks.sync_callback, False)


def test_an_async_function_is_async():
    """An async def function is run as an asyncio task."""
    assert load_callback(f"{MODULE}:async_callback") == (callbacks.async_callback, True)
    assert load_callback(callbacks.async_callback) == (callbacks.async_callback, True)


def test_an_object_with_an_async_call_is_async():
    """An instance whose __call__ is async def is run as an asyncio task."""
    callback, is_async = load_callback(f"{MODULE}:async_callable_instance")
    assert callback is callbacks.async_callable_instance
    assert is_async is True


def test_a_partial_of_an_async_function_is_async():
    """functools.partial does not hide that the function underneath is async."""
    assert load_callback(f"{MODULE}:async_partial") == (callbacks.async_partial, True)
    nested = functools.partial(functools.partial(callbacks.async_callback))
    assert load_callback(nested) == (nested, True)


def test_a_partial_of_an_async_callable_object_is_async():
    """A partial of an instance with an async __call__ is async too."""
    partial = functools.partial(callbacks.AsyncCallable())
    assert is_async_callable(partial) is True


def test_a_partial_of_a_sync_function_is_sync():
    """A partial of a plain function runs in a worker thread."""
    assert is_async_callable(functools.partial(callbacks.sync_callback)) is False


def test_a_bound_async_method_is_async():
    """A bound async method is async."""

    class Service:
        async def handle(self, message: Any) -> None:
            pass

    assert is_async_callable(Service().handle) is True


def test_a_sync_callable_object_is_sync():
    """An instance with a plain __call__ runs in a worker thread."""
    _, is_async = load_callback(callbacks.TakesNothing())
    assert is_async is False


# --- load_callback: classes ------------------------------------------------


def test_a_class_taking_an_argument_is_instantiated_once_with_consumer_config():
    """A class whose __init__ takes an argument is built once, given consumer_config."""
    config = {"url": "https://example.com", "retries": 3}
    callback, is_async = load_callback(f"{MODULE}:TakesConfig", config)
    assert callbacks.TakesConfig.instances == [callback]
    assert callback.config == config
    assert is_async is False


def test_a_class_is_given_a_copy_of_consumer_config():
    """The instance's config is its own: changing it leaves the caller's table alone."""
    config = {"retries": 3}
    callback, _ = load_callback(callbacks.TakesConfig, config)
    callback.config["retries"] = 4
    assert config == {"retries": 3}


def test_a_class_taking_an_argument_gets_an_empty_config_when_there_is_none():
    """With no consumer_config, the class receives an empty dict, not None."""
    callback, _ = load_callback(callbacks.TakesConfig)
    assert callback.config == {}


def test_a_class_with_a_keyword_only_consumer_config_is_given_it_by_name():
    """__init__(self, *, consumer_config) gets the table as that keyword."""

    class KeywordOnly:
        def __init__(self, *, consumer_config: dict) -> None:
            self.config = consumer_config

        def __call__(self, message: object) -> None:
            pass

    callback, _ = load_callback(KeywordOnly, {"retries": 3})
    assert callback.config == {"retries": 3}


def test_a_class_taking_no_argument_is_instantiated_once_without_one():
    """A class whose __init__ takes nothing is built once, with no argument."""
    callback, _ = load_callback(f"{MODULE}:TakesNothing", {"ignored": True})
    assert callbacks.TakesNothing.instances == [callback]
    assert isinstance(callback, callbacks.TakesNothing)


def test_a_class_with_an_async_call_gives_an_async_instance():
    """A class whose instances have an async __call__ is instantiated and run as tasks."""
    callback, is_async = load_callback(f"{MODULE}:AsyncCallable")
    assert isinstance(callback, callbacks.AsyncCallable)
    assert is_async is True


def test_a_class_whose_init_raises_is_a_callback_error_naming_the_class():
    """A class that cannot be built gives a CallbackError naming it and the reason."""
    path = f"{MODULE}:RaisesOnInit"
    with pytest.raises(CallbackError) as info:
        load_callback(path, {})
    assert str(info.value) == (
        f"The callback class {path!r} could not be instantiated: "
        "ValueError: the 'url' key is missing from consumer_config"
    )
    assert isinstance(info.value.__cause__, ValueError)


def test_a_class_object_whose_init_raises_is_named_by_its_qualified_name():
    """A class passed directly is named by its qualified name."""
    with pytest.raises(CallbackError, match="The callback class 'RaisesOnInit' could not"):
        load_callback(callbacks.RaisesOnInit)


# --- load_callback: refusals -----------------------------------------------


def test_a_non_callable_object_is_refused_naming_the_path():
    """A path to something that cannot be called says so, naming the path."""
    path = f"{MODULE}:NOT_CALLABLE"
    with pytest.raises(CallbackError) as info:
        load_callback(path)
    assert str(info.value) == f"The callback {path!r} is not callable"


def test_a_class_whose_instances_cannot_be_called_is_refused():
    """A class is instantiated, and refused when the instance is not callable."""
    path = f"{MODULE}:NotCallableInstances"
    with pytest.raises(CallbackError, match="is not callable"):
        load_callback(path)


def test_a_non_callable_value_is_refused():
    """A value passed directly that cannot be called is refused."""
    with pytest.raises(CallbackError, match="is not callable"):
        load_callback(42)


def test_no_callback_says_where_to_give_one():
    """Without a callback the error says to pass one or to configure one."""
    with pytest.raises(CallbackError) as info:
        load_callback(None)
    assert "pass one to consume()" in str(info.value)
    assert "'callback' in the config file" in str(info.value)


def test_a_bad_path_passed_to_load_callback_is_a_callback_error():
    """load_callback reports a bad path the way import_object does."""
    with pytest.raises(CallbackError, match=r"not of the form 'package\.module:object'"):
        load_callback("no_colon_here")
