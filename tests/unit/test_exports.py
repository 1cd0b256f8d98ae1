"""The public API of fedmq: what ``fedmq`` exports, and where it comes from.

Adding or removing a public name is a deliberate change: it means editing
EXPECTED_EXPORTS below, in the same commit as ``fedmq/__init__.py``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata
from pathlib import Path

import pytest

import fedmq

PACKAGE_DIR = Path(fedmq.__file__).parent
REPO_ROOT = PACKAGE_DIR.parent

#: Every public name, and the module that defines it.
EXPECTED_EXPORTS = {
    "Ack": "fedmq.acks",
    "AckStatus": "fedmq.acks",
    "PublishCanceled": "fedmq.exceptions",
    "PublishConnectionLost": "fedmq.exceptions",
    "Publisher": "fedmq.publisher",
    "AuthenticationFailed": "fedmq.exceptions",
    "BrokerError": "fedmq.exceptions",
    "CallbackError": "fedmq.exceptions",
    "Config": "fedmq.config",
    "ConfigurationError": "fedmq.exceptions",
    "ConnectionFailed": "fedmq.exceptions",
    "Consumer": "fedmq.consumer",
    "ConsumerCancelled": "fedmq.exceptions",
    "ConsumerHandle": "fedmq.consumer",
    "DeclarationError": "fedmq.exceptions",
    "DecodeError": "fedmq.exceptions",
    "Drop": "fedmq.exceptions",
    "Retry": "fedmq.exceptions",
    "ConsumerError": "fedmq.exceptions",
    "FedmqError": "fedmq.exceptions",
    "HaltConsumer": "fedmq.exceptions",
    "Message": "fedmq.message",
    "Nack": "fedmq.exceptions",
    "Properties": "fedmq.message",
    "PublishError": "fedmq.exceptions",
    "PublishFormatError": "fedmq.exceptions",
    "PublishNacked": "fedmq.exceptions",
    "PublishRefused": "fedmq.exceptions",
    "PublishReturned": "fedmq.exceptions",
    "PublishTimeout": "fedmq.exceptions",
    "Settlement": "fedmq.settlement",
    "SettlementError": "fedmq.exceptions",
    "StopForced": "fedmq.exceptions",
    "WouldDeadlock": "fedmq.exceptions",
    "QueueState": "fedmq._flow",
    "__version__": "fedmq",
    "consume": "fedmq.api",
    "load_config": "fedmq.config",
    "publish": "fedmq.api",
    "Blocked": "fedmq.events",
    "Connected": "fedmq.events",
    "Disconnected": "fedmq.events",
    "ErrorEvent": "fedmq.events",
    "Event": "fedmq.events",
    "HostHealthy": "fedmq.events",
    "HostUnhealthy": "fedmq.events",
    "QueuePaused": "fedmq.events",
    "QueueReopened": "fedmq.events",
    "QueueReopenFailed": "fedmq.events",
    "QueueResumed": "fedmq.events",
    "QueueSuspended": "fedmq.events",
    "Reconnected": "fedmq.events",
    "Reconnecting": "fedmq.events",
    "SlowConsumerHigh": "fedmq.events",
    "SlowConsumerNormal": "fedmq.events",
    "StateChanged": "fedmq.events",
    "TopologyRestored": "fedmq.events",
    "Unblocked": "fedmq.events",
    "ConsumerSuspended": "fedmq.health",
    "HealthMonitor": "fedmq.health",
}

#: The one module of fedmq allowed to import pika (see STYLE.md, "pika in one place").
PIKA_SEAM = "_amqp.py"


def test_all_lists_exactly_the_expected_public_names():
    """fedmq.__all__ is the agreed public API, no more and no less."""
    assert sorted(fedmq.__all__) == sorted(EXPECTED_EXPORTS)


def test_all_has_no_duplicates():
    """Each public name is listed once."""
    assert len(fedmq.__all__) == len(set(fedmq.__all__))


@pytest.mark.parametrize("name", sorted(EXPECTED_EXPORTS))
def test_each_public_name_is_the_object_of_its_home_module(name: str):
    """fedmq.<name> is the very object its home module defines, not a copy or wrapper."""
    home = importlib.import_module(EXPECTED_EXPORTS[name])
    assert getattr(fedmq, name) is getattr(home, name)


@pytest.mark.parametrize(
    "name", sorted(name for name in EXPECTED_EXPORTS if not name.startswith("__"))
)
def test_each_public_name_is_defined_in_a_public_module(name: str):
    """Public objects are defined in their home module, never in an _-prefixed one."""
    obj = getattr(fedmq, name)
    assert obj.__module__ == EXPECTED_EXPORTS[name]


def test_the_public_names_are_the_objects_users_are_told_about():
    """The documented pairs hold: ConsumerHandle is Consumer, consume comes from fedmq.api."""
    import fedmq.api
    import fedmq.consumer
    import fedmq.message

    assert fedmq.Message is fedmq.message.Message
    assert fedmq.consume is fedmq.api.consume
    assert fedmq.publish is fedmq.api.publish
    assert fedmq.ConsumerHandle is fedmq.consumer.Consumer
    assert fedmq.Consumer is fedmq.consumer.Consumer


def test_star_import_gives_exactly_the_public_names():
    """``from fedmq import *`` brings in __all__ and nothing else."""
    namespace: dict[str, object] = {}
    exec("from fedmq import *", namespace)  # noqa: S102 - a star import is a statement
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(EXPECTED_EXPORTS)


def test_the_version_is_the_packaged_version():
    """fedmq.__version__ is the version setup.cfg packages, and the installed one."""
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    assert setup["metadata"]["version"] == "attr: fedmq._version.__version__"
    assert fedmq.__version__ == importlib.metadata.version("fedmq")


def _imports_pika(source: str, filename: str) -> bool:
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[0] == "pika" for alias in node.names):
                return True
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "pika"
        ):
            return True
    return False


def test_the_pika_scan_recognises_every_form_of_import():
    """The scan below catches each way of importing pika, and not look-alikes."""
    for source in (
        "import pika",
        "import pika.exceptions",
        "import os, pika as p",
        "from pika import BasicProperties",
        "from pika.adapters.twisted_connection import TwistedChannel",
        "def f():\n    import pika\n",
        "try:\n    import pika\nexcept ImportError:\n    pika = None\n",
    ):
        assert _imports_pika(source, "<test>"), source
    for source in ("import pikachu", "from .pika import x", "x = 'import pika'"):
        assert not _imports_pika(source, "<test>"), source


def test_exactly_one_module_of_fedmq_imports_pika():
    """Only fedmq/_amqp.py imports pika: pika stays behind one seam."""
    importers = sorted(
        path.relative_to(PACKAGE_DIR).as_posix()
        for path in PACKAGE_DIR.rglob("*.py")
        if _imports_pika(path.read_text(encoding="utf-8"), str(path))
    )
    assert importers == [PIKA_SEAM]


#: Every public name of fedmq.testing, and the module that defines it.
EXPECTED_TESTING_EXPORTS = {
    "CallbackResult": "fedmq.testing.callbacks",
    "InMemoryBroker": "fedmq.testing.memory",
    "MemoryAlarm": "fedmq.testing.rabbitmq",
    "NOT_INSTALLED": "fedmq.testing.rabbitmq",
    "Outcome": "fedmq.testing.callbacks",
    "PublishCapture": "fedmq.testing.capture",
    "RabbitNode": "fedmq.testing.rabbitmq",
    "TEST_CLIENT_NAME": "fedmq.testing.certificates",
    "ThreadedClock": "fedmq.testing.clock",
    "arun_callback": "fedmq.testing.callbacks",
    "capture_publishes": "fedmq.testing.capture",
    "find_rabbitmq_server": "fedmq.testing.rabbitmq",
    "headers_match": "fedmq.testing.routing",
    "make_message": "fedmq.testing.callbacks",
    "make_test_certificates": "fedmq.testing.certificates",
    "mock_sends": "fedmq.testing.capture",
    "run_callback": "fedmq.testing.callbacks",
    "topic_matches": "fedmq.testing.routing",
}


def test_the_testing_toolkit_exports_exactly_the_expected_names():
    """fedmq.testing.__all__ is the agreed toolkit, no more and no less."""
    import fedmq.testing

    assert sorted(fedmq.testing.__all__) == sorted(EXPECTED_TESTING_EXPORTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_TESTING_EXPORTS))
def test_each_testing_name_is_the_object_of_its_home_module(name: str):
    """fedmq.testing.<name> is the object its (public) home module defines."""
    import fedmq.testing

    home = importlib.import_module(EXPECTED_TESTING_EXPORTS[name])
    assert getattr(fedmq.testing, name) is getattr(home, name)
    assert name in home.__all__


def test_the_in_memory_broker_imports_no_pika():
    """The in-memory broker and the rest of fedmq.testing never import pika."""
    testing = PACKAGE_DIR / "testing"
    importers = [
        path.name
        for path in testing.glob("*.py")
        if _imports_pika(path.read_text(encoding="utf-8"), str(path))
    ]
    assert importers == []
