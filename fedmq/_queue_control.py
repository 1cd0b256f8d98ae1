"""A running consumer's queues, changed from any thread: pause, resume, reconfigure, add, remove.

:class:`QueueControl` owns the consumer's topology of now (the config each
new session opens, with the queues added and reconfigured since) and its
:class:`~fedmq._flow.Holds`. Each change is checked in the caller's thread
(a bad queue name or option raises there), then made on the reactor thread:
called there, it returns a Deferred; called from any other thread (a sync
callback's worker, an asyncio loop thread, a thread of the application's),
it is handed to the reactor with ``callFromThread`` and returns None, so
that no caller ever waits for something that waits for it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from fedmq._flow import PAUSED, Holds, QueueListener, QueueState, ReconsumeFailedListener
from fedmq._session import Session
from fedmq.config import BindingConfig, Config, QueueConfig, parse_bindings
from fedmq.exceptions import BrokerError

log = logging.getLogger("fedmq")

#: A queue option left as it is by :meth:`QueueControl.reconfigure`.
UNCHANGED: Any = object()


class QueueControl:
    """The queues of one consumer, their holds, and the changes made while it runs.

    Args:
        config: the consumer's config, as it started.
        reactor: where changes are made (its ``callFromThread``).
        session: returns the session in charge, if any.
        on_reactor_thread: whether the caller runs on the reactor thread.

    """

    def __init__(
        self,
        config: Config,
        reactor: Any,
        session: Callable[[], Session | None],
        on_reactor_thread: Callable[[], bool],
    ) -> None:
        #: The topology a new session opens: the config, with the changes made since.
        self.config = config
        #: Each queue's hold reasons, kept across sessions.
        self.holds = Holds((queue.name, queue.paused) for queue in config.queues)
        self._reactor = reactor
        self._session = session
        self._on_reactor_thread = on_reactor_thread
        # Queues added at runtime that no session has declared yet.
        self._undeclared: set[str] = set()

    # --- holds, from any thread -------------------------------------------------------

    def hold(self, queue: str | None, reason: str) -> defer.Deferred[None] | None:
        """Hold ``queue`` (every queue, for None) for ``reason``; see :class:`Holds`.

        The Deferred fails with the first queue's error when the broker did
        not cancel (or consume) as asked.
        """
        return self._call(_first_error(self.holds.hold), self._known(queue), reason)

    def release(self, queue: str | None, reason: str) -> defer.Deferred[None] | None:
        """Release ``queue``'s (every queue's, for None) hold for ``reason``."""
        return self._call(_first_error(self.holds.release), self._known(queue), reason)

    def pause(self, queue: str | None = None) -> defer.Deferred[None] | None:
        """Hold ``queue`` (every queue, for None) as "paused"."""
        return self.hold(queue, PAUSED)

    def resume(self, queue: str | None = None) -> defer.Deferred[None] | None:
        """Release the "paused" hold of ``queue`` (every queue, for None)."""
        return self.release(queue, PAUSED)

    def states(self) -> dict[str, QueueState]:
        """Each queue's :class:`QueueState`: consuming or not, and why."""
        return self.holds.states()

    def add_listener(self, listener: QueueListener) -> None:
        """Call ``listener(queue, consuming, reasons)`` on the reactor thread at every change."""
        self.holds.add_listener(listener)

    def add_reconsume_failed_listener(self, listener: ReconsumeFailedListener) -> None:
        """Call ``listener(queue, error)`` on the reactor thread when re-consuming failed."""
        self.holds.add_failure_listener(listener)

    # --- topology, from any thread ----------------------------------------------------

    def reconfigure(
        self, queue: str, *, prefetch_count: Any = UNCHANGED, consumer_priority: Any = UNCHANGED
    ) -> defer.Deferred[None] | None:
        """Change ``queue``'s prefetch count or consumer priority, and consume again with them."""
        name = self._known(queue)
        assert name is not None  # noqa: S101 - _known returns None only for None
        changes = {
            key: value
            for key, value in (
                ("prefetch_count", prefetch_count),
                ("consumer_priority", consumer_priority),
            )
            if value is not UNCHANGED
        }
        self._reconfigured(self.config, name, changes)  # checks the values here
        return self._call(self._reconfigure, name, changes)

    def _reconfigure(self, name: str, changes: Mapping[str, Any]) -> defer.Deferred[None]:
        self.config = self._reconfigured(self.config, name, changes)
        session = self._session()
        if session is None:
            return defer.succeed(None)
        session.update(self.config)
        return session.reconsume(name)

    @staticmethod
    def _reconfigured(config: Config, name: str, changes: Mapping[str, Any]) -> Config:
        queues = tuple(
            dataclasses.replace(queue, **changes) if queue.name == name else queue
            for queue in config.queues
        )
        return config.replace(queues=queues)

    def add_queue(
        self,
        queue: str | QueueConfig,
        bindings: Iterable[BindingConfig | Mapping[str, Any]] = (),
    ) -> defer.Deferred[None] | None:
        """Declare, bind and consume a queue more; kept across reconnects."""
        options = queue if isinstance(queue, QueueConfig) else QueueConfig(name=queue)
        if not options.name:
            raise ValueError("add_queue needs a queue name: a server-named queue cannot be added")
        if options.name in self.holds:
            raise ValueError(f"the consumer already consumes from queue {options.name!r}")
        bound = tuple(
            binding
            if isinstance(binding, BindingConfig)
            else parse_bindings({**binding, "queue": options.name})[0]
            for binding in bindings
        )
        self._added(self.config, options, bound)  # checks the options here
        return self._call(self._add_queue, options, bound)

    def _add_queue(
        self, queue: QueueConfig, bindings: tuple[BindingConfig, ...]
    ) -> defer.Deferred[None]:
        self.config = self._added(self.config, queue, bindings)
        self._undeclared.add(queue.name)
        self.holds.add(queue.name, paused=queue.paused)
        self.holds.changed(queue.name)
        session = self._session()
        if session is None:
            return defer.succeed(None)
        session.update(self.config)
        opening = not session.is_consuming

        def refused(failure: Failure) -> Failure:
            error = failure.value
            if not isinstance(error, BrokerError) or error.reply_code is None:
                return failure  # not the broker's refusal: the next session declares it
            if opening:
                # The caller may have long stopped listening (or be on another thread).
                self.refused(queue.name, error)
            else:
                self._drop(queue.name)
            return failure

        return defer.ensureDeferred(session.add_queue(queue, bindings)).addErrback(refused)

    @staticmethod
    def _added(config: Config, queue: QueueConfig, bindings: tuple[BindingConfig, ...]) -> Config:
        return config.replace(
            queues=(*config.queues, queue), bindings=(*config.bindings, *bindings)
        )

    def remove_queue(self, queue: str) -> defer.Deferred[None] | None:
        """Stop consuming ``queue``; its unstarted deliveries go back, those in flight settle."""
        name = self._known(queue)
        return self._call(self._remove_queue, name)

    def _remove_queue(self, name: str) -> defer.Deferred[None]:
        self._drop(name)
        session = self._session()
        if session is None:
            return defer.succeed(None)
        return session.remove_queue(name)

    def _drop(self, name: str) -> None:
        """Take queue ``name`` and its bindings out of the topology and the holds."""
        self.config = self.config.replace(
            queues=tuple(queue for queue in self.config.queues if queue.name != name),
            bindings=tuple(binding for binding in self.config.bindings if binding.queue != name),
        )
        self._undeclared.discard(name)
        self.holds.remove(name)
        session = self._session()
        if session is not None:
            session.update(self.config)

    # --- the queues added at runtime, for the sessions (on the reactor thread) --------

    def undeclared(self) -> frozenset[str]:
        """The queues added at runtime that no session has declared yet."""
        return frozenset(self._undeclared)

    def declared(self, queue: str) -> None:
        """A session declared ``queue``: from now on it is like a configured queue."""
        self._undeclared.discard(queue)

    def refused(self, queue: str, error: BrokerError) -> None:
        """The broker refused ``queue``, added at runtime: it leaves the topology, and is told."""
        self._drop(queue)
        self.holds.reconsume_failed(queue, error)

    # --- threads ---------------------------------------------------------------------

    def _known(self, queue: str | None) -> str | None:
        """The configured name of ``queue`` (its own, or a server-named queue's broker name)."""
        if queue is None or queue in self.holds:
            return queue
        session = self._session()
        if session is not None:
            for name, broker_name in session.names().items():
                if broker_name == queue:
                    return name
        raise ValueError(f"the consumer has no queue named {queue!r}")

    def _call(
        self, change: Callable[..., defer.Deferred[None]], *args: Any
    ) -> defer.Deferred[None] | None:
        """Make ``change`` now on the reactor thread; from any other, hand it to the reactor."""
        if self._on_reactor_thread():
            return change(*args)
        self._reactor.callFromThread(_logged, change, *args)
        return None


def _first_error(
    change: Callable[[str | None, str], defer.Deferred[None]],
) -> Callable[[str | None, str], defer.Deferred[None]]:
    """``change``, failing with the first queue's own error rather than a ``FirstError``."""

    def unwrap(failure: Failure) -> Failure:
        if isinstance(failure.value, defer.FirstError):
            return failure.value.subFailure
        return failure

    return lambda queue, reason: change(queue, reason).addErrback(unwrap)


def _logged(change: Callable[..., defer.Deferred[None]], *args: Any) -> None:
    """Make a change handed over from another thread; nobody waits for it, so log a failure."""
    change(*args).addErrback(
        lambda failure: log.error("Changing the consumer's queues failed: %s", failure.value)
    )
