"""Two message classes with real body schemas, for fedmq's compatibility tests.

``BuildFinishedV1`` describes a finished package build; ``BuildFinishedV0``
is its deprecated predecessor; ``ReviewCommentV1`` a comment left on a review,
and it also constrains one header.
"""

from __future__ import annotations

from typing import Any, ClassVar

from fedora_messaging import message

_DRAFT4 = "http://json-schema.org/draft-04/schema#"


class BuildFinishedV1(message.Message):
    """A build of one package finished, successfully or not."""

    topic = "fedmqtest.build.finished"
    body_schema: ClassVar[dict[str, Any]] = {
        "$schema": _DRAFT4,
        "type": "object",
        "properties": {
            "build_id": {"type": "integer", "minimum": 1},
            "package": {"type": "string"},
            "owner": {"type": "string"},
            "succeeded": {"type": "boolean"},
        },
        "required": ["build_id", "package", "owner", "succeeded"],
    }

    @property
    def summary(self) -> str:
        body = self.body
        outcome = "succeeded" if body["succeeded"] else "failed"
        return f"{body['owner']}'s build {body['build_id']} of {body['package']} {outcome}"

    @property
    def usernames(self) -> list[str]:
        return [self.body["owner"]]

    @property
    def packages(self) -> list[str]:
        return [self.body["package"]]

    @property
    def agent_name(self) -> str:
        return str(self.body["owner"])

    def __str__(self) -> str:
        return f"Build {self.body['build_id']} of {self.body['package']}: {self.summary}"


class BuildFinishedV0(message.Message):
    """The first version of a finished build: only its id. Superseded by v1."""

    topic = "fedmqtest.build.finished"
    deprecated = True
    body_schema: ClassVar[dict[str, Any]] = {
        "$schema": _DRAFT4,
        "type": "object",
        "properties": {"build_id": {"type": "integer"}},
        "required": ["build_id"],
    }


class ReviewCommentV1(message.Message):
    """Someone commented on a review; the comment names the reviewers it concerns."""

    topic = "fedmqtest.review.comment"
    headers_schema: ClassVar[dict[str, Any]] = {
        "$schema": _DRAFT4,
        "type": "object",
        "properties": {"fedora_messaging_severity": {"enum": [message.DEBUG, message.INFO]}},
    }
    body_schema: ClassVar[dict[str, Any]] = {
        "$schema": _DRAFT4,
        "type": "object",
        "properties": {
            "review": {"type": "integer"},
            "author": {"type": "string"},
            "text": {"type": "string", "maxLength": 500},
            "reviewers": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["review", "author", "text"],
    }

    @property
    def summary(self) -> str:
        return f"{self.body['author']} commented on review {self.body['review']}"

    @property
    def usernames(self) -> list[str]:
        return sorted({self.body["author"], *self.body.get("reviewers", [])})
