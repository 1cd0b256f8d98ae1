"""What a callback written for fedora-messaging reads of a message without a schema class.

:class:`FedoraAttributes` is mixed into :class:`fedmq.Message`: a message
whose headers name no schema class (or one not installed) answers these
attributes as fedora-messaging's base class does, so that such a callback
never meets an AttributeError (see "Messages without a schema class" in the
docs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedmq._headers import FEDORA_SEVERITY

if TYPE_CHECKING:
    from fedmq.message import Properties

#: The severity of a message that states none (fedora-messaging's INFO).
INFO = 20


class FedoraAttributes:
    """fedora-messaging's base-class attributes, answered from the message's topic and headers."""

    __slots__ = ()

    # Provided by the class this is mixed into.
    if TYPE_CHECKING:

        @property
        def topic(self) -> str: ...

        @property
        def properties(self) -> Properties: ...

    @property
    def severity(self) -> int:
        """The ``fedora_messaging_severity`` header, else 20 (INFO)."""
        headers = self.properties.headers
        severity = headers.get(FEDORA_SEVERITY) if headers else None
        return severity if isinstance(severity, int) and severity else INFO

    @property
    def summary(self) -> str:
        """A one-line summary: the topic."""
        return self.topic

    @property
    def url(self) -> str | None:
        """A URL about the message's subject: None."""
        return None

    @property
    def app_name(self) -> str | None:
        """The name of the application that sent it: None."""
        return None

    @property
    def app_icon(self) -> str | None:
        """A URL to that application's icon: None."""
        return None

    @property
    def agent_name(self) -> str | None:
        """The user who caused the message: None."""
        return None

    @property
    def agent_avatar(self) -> str | None:
        """A URL to that user's avatar: None."""
        return None

    @property
    def usernames(self) -> list[str]:
        """The users the message concerns: none."""
        return []

    @property
    def groups(self) -> list[str]:
        """The groups the message concerns: none."""
        return []

    @property
    def packages(self) -> list[str]:
        """The RPM packages the message concerns: none."""
        return []

    @property
    def containers(self) -> list[str]:
        """The containers the message concerns: none."""
        return []

    @property
    def modules(self) -> list[str]:
        """The modules the message concerns: none."""
        return []

    @property
    def flatpaks(self) -> list[str]:
        """The flatpaks the message concerns: none."""
        return []
