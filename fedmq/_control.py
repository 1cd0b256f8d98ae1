"""Control commands for a running consumer: pause, resume and status.

The control socket (:mod:`fedmq._control_socket`), the HTTP control endpoint
(:mod:`fedmq._control_http`) and the signals (:mod:`fedmq.service`) all hand
their requests to a :class:`Controller`, so every way in means the same
thing and answers the same way. Everything here runs on the reactor thread.

A request is a :class:`Request`; the answer is a :class:`Reply` whose
``body`` is what goes back as JSON:

- ``{"ok": true, "state": "consuming", "queues": {"orders": {"consuming":
  false, "reasons": ["paused"]}}}`` after any command;
- ``{"ok": false, "error": "...", "kind": "usage"}`` when the request is
  wrong (an unknown command or queue), ``"kind": "unavailable"`` when there
  is no consumer to act on (it has not started, or has stopped), and
  ``"kind": "failed"`` when the consumer could not carry it out.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple, Protocol

from twisted.internet import defer

from fedmq._deferreds import within
from fedmq.exit_codes import CONNECTION_FAILED, FORCED_STOP, OK, USAGE

log = logging.getLogger("fedmq.control")

#: The commands, in the order ``--help`` lists them.
COMMANDS = ("pause", "resume", "status")

#: The longest request line the control socket reads, in bytes.
MAX_REQUEST = 4096


class Refusal(enum.Enum):
    """Why a command was not carried out, and the exit status it means for ``fedmq``."""

    USAGE = USAGE
    """The request is wrong: an unknown command or queue."""
    UNAVAILABLE = CONNECTION_FAILED
    """No consumer to act on: it has not started, or has stopped."""
    FAILED = FORCED_STOP
    """The consumer could not carry the command out."""


#: The exit status of ``fedmq pause``, ``resume`` or ``status`` for each ``kind`` of reply.
EXIT_STATUS = {"ok": OK, **{refusal.name.lower(): refusal.value for refusal in Refusal}}


class Request(NamedTuple):
    """One control command: ``command`` (one of :data:`COMMANDS`) on ``queue`` (None: all)."""

    command: str
    queue: str | None = None


class Reply(NamedTuple):
    """What a control command answers: ``body`` goes back as JSON."""

    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        """Whether the command was carried out."""
        return bool(self.body.get("ok"))

    def line(self) -> bytes:
        """The reply as one line of JSON, with its newline."""
        return json.dumps(self.body, sort_keys=True).encode("utf-8") + b"\n"


class RequestError(ValueError):
    """A request that is not one: its message says what is wrong with it."""


def refused(kind: Refusal, error: str) -> Reply:
    """A reply saying the command was not carried out, and why."""
    return Reply({"ok": False, "kind": kind.name.lower(), "error": error})


def parse_line(line: bytes) -> Request:
    """Read one request line of the control socket: ``{"command": C, "queue": Q}``.

    Args:
        line: a JSON object, without its newline; ``queue`` may be left out
            or null (every queue).

    Returns:
        The request.

    Raises:
        RequestError: the line is not such an object.

    """
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RequestError("a request is one JSON object on a line") from None
    if not isinstance(data, dict):
        raise RequestError("a request is one JSON object on a line")
    unknown = sorted(set(data) - {"command", "queue"})
    if unknown:
        raise RequestError(f"unknown request keys: {', '.join(map(repr, unknown))}")
    return request(data.get("command"), data.get("queue"))


def request(command: object, queue: object = None) -> Request:
    """Check a command and its queue, from whichever way they came in.

    Raises:
        RequestError: the command is not one of :data:`COMMANDS`, or the
            queue is not a non-empty string.

    """
    if command not in COMMANDS:
        raise RequestError(f"unknown command {command!r}; the commands are {', '.join(COMMANDS)}")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise RequestError("queue must be a queue's name")
    if command == "status" and queue is not None:
        raise RequestError("status takes no queue")
    return Request(str(command), queue)


class QueueControl(Protocol):
    """What the controller needs of a consumer: :class:`fedmq.Consumer` has it."""

    @property
    def state(self) -> str:
        """The consumer's state."""

    def pause(self, queue: str | None = None) -> Any:
        """Stop consuming ``queue`` (None: every queue)."""

    def resume(self, queue: str | None = None) -> Any:
        """Consume ``queue`` (None: every queue) again."""

    def queue_states(self) -> Mapping[str, Any]:
        """Each queue's state: whether it consumes, and what holds it if not."""


class HasConsumer(Protocol):
    """A :class:`~fedmq.service.ConsumerService`, as the controller sees it."""

    @property
    def consumer(self) -> QueueControl | None:
        """The consumer, once the service has started."""


class Controller:
    """Carries out control requests on a service's consumer, on the reactor thread.

    Args:
        consumer_service: holds the consumer (``consumer_service.consumer``),
            read at every request.
        clock: what the timeout of a pause or resume runs on.
        timeout: seconds to wait for a pause or resume to take effect on the
            broker before answering that it was not done in time; the
            change itself is never called off.

    """

    def __init__(self, consumer_service: HasConsumer, clock: Any, timeout: float) -> None:
        self._consumer_service = consumer_service
        self._clock = clock
        self._timeout = timeout

    def __call__(self, request: Request, via: str) -> defer.Deferred[Reply]:
        """Carry out ``request``; the Deferred fires with the :class:`Reply` (never fails).

        Args:
            request: what to do.
            via: how it came, for the log (``"the control socket"``).

        """
        answered = defer.ensureDeferred(self._run(request, via))
        return answered.addErrback(self._crashed, request)

    @staticmethod
    def _crashed(failure: Any, request: Request) -> Reply:
        # Whatever went wrong, the client gets an answer and its connection stays usable.
        log.error(
            "The control request %r failed: %s",
            request.command,
            failure.getErrorMessage(),
            exc_info=(failure.type, failure.value, failure.getTracebackObject()),
        )
        return refused(Refusal.FAILED, f"{request.command} failed: {failure.getErrorMessage()}")

    async def _run(self, request: Request, via: str) -> Reply:
        consumer = self._consumer_service.consumer
        if consumer is None or consumer.state == "stopped":
            return refused(Refusal.UNAVAILABLE, "the consumer is not running")
        if request.command == "status":
            return status(consumer)
        if request.queue is not None and request.queue not in consumer.queue_states():
            known = ", ".join(map(repr, consumer.queue_states())) or "none"
            return refused(
                Refusal.USAGE,
                f"the consumer does not consume a queue {request.queue!r} (its queues: {known})",
            )
        act = consumer.pause if request.command == "pause" else consumer.resume
        what = "every queue" if request.queue is None else f"queue {request.queue!r}"
        log.info("%s %s, as asked through %s", _PAST[request.command], what, via)
        try:
            outcome = act(request.queue)
            # Never cancelled: a change half made (a hold taken) is finished all the same.
            if isinstance(outcome, defer.Deferred) and not await within(
                outcome, self._timeout, self._clock
            ):
                log.warning(
                    "%s of %s not done within %g s; it goes on",
                    request.command.capitalize(),
                    what,
                    self._timeout,
                )
                return refused(
                    Refusal.FAILED,
                    f"{request.command} of {what} was not done within {self._timeout:g} s "
                    "(it goes on)",
                )
        except Exception as error:  # any refusal is the reply, not a crash
            log.warning("Could not %s %s: %s", request.command, what, error)
            return refused(Refusal.FAILED, f"could not {request.command} {what}: {error}")
        return status(consumer)


_PAST = {"pause": "Pausing", "resume": "Resuming"}


def status(consumer: QueueControl) -> Reply:
    """The consumer's state and each queue's, as a successful reply."""
    queues = {name: describe(state) for name, state in consumer.queue_states().items()}
    return Reply({"ok": True, "state": consumer.state, "queues": queues})


def describe(state: Any) -> dict[str, Any]:
    """One queue's state as JSON: ``{"consuming": bool, "reasons": [why not, ...]}``."""
    if isinstance(state, Mapping):
        consuming, reasons = state.get("consuming"), state.get("reasons", ())
    else:
        consuming, reasons = getattr(state, "consuming", None), getattr(state, "reasons", ())
    return {"consuming": bool(consuming), "reasons": sorted(str(reason) for reason in reasons)}


__all__ = [
    "COMMANDS",
    "EXIT_STATUS",
    "MAX_REQUEST",
    "Controller",
    "Refusal",
    "Reply",
    "Request",
    "RequestError",
    "parse_line",
    "refused",
    "request",
]
