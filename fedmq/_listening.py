"""A service that listens as Twisted's own servers do: before the reactor runs."""

from __future__ import annotations

from twisted.application.service import Service


class ListeningService(Service):
    """Listens in :meth:`privilegedStartService`, or in :meth:`startService` if that did not run.

    Before the reactor runs (and before twistd sheds privileges), so that a
    port or socket in use fails the start at once. :meth:`_listen` must do
    nothing when already listening.
    """

    def privilegedStartService(self) -> None:
        """Listen before the reactor runs: what is in use fails the start at once."""
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """Listen, unless :meth:`privilegedStartService` did already."""
        super().startService()
        self._listen()

    def _listen(self) -> None:
        raise NotImplementedError
