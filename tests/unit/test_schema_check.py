"""The quick schema check never accepts what the jsonschema package rejects.

fedmq skips the full validator only when the quick check accepts a message;
so a quick check that accepted an invalid message would hand the callback
something fedora-messaging would have dropped. These tests hold it to the
jsonschema package's verdicts over many instances, edge cases included.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import jsonschema
import pytest
from fedmq_test_schemas import BuildFinishedV0, BuildFinishedV1, ReviewCommentV1
from fedora_messaging.message import Message as FmMessage

from fedmq._schema_check import quick_check

DRAFT4 = "http://json-schema.org/draft-04/schema#"
EVERY_KEYWORD = {
    "$schema": DRAFT4,
    "type": "object",
    "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 5},
        "s": {"type": "string", "minLength": 2, "maxLength": 3},
        "e": {"enum": [1, "a", None, True, 2.5]},
        "e01": {"enum": [0, 1]},
        "f": {"type": "number", "minimum": -1.5},
        "b": {"type": "boolean"},
        "o": {"type": "object"},
        "z": {"type": "null"},
        "d": {"description": "anything"},
    },
    "required": ["n"],
}
SCHEMAS = {
    "base-headers": FmMessage.headers_schema,
    "base-body": FmMessage.body_schema,
    "build-v1": BuildFinishedV1.body_schema,
    "build-v0": BuildFinishedV0.body_schema,
    "review-headers": ReviewCommentV1.headers_schema,
    "every-keyword": EVERY_KEYWORD,
}
VALUES: list[Any] = [
    None, True, False, 0, 1, 2, 5, 6, -1, 1.0, 2.5, -1.5, -2.0, float("inf"),
    10, 20, 30, 40, 20.0, 25, "", "a", "ab", "abcd", "é", [], [1], {}, {"k": 1},
    Decimal(20), Decimal(1), b"ab",
]  # fmt: skip


#: A valid instance of each schema, varied at random below.
EXAMPLES: dict[str, dict[str, Any]] = {
    "base-headers": {"fedora_messaging_severity": 20, "sent-at": "2026-12-01T00:00:00+00:00"},
    "base-body": {},
    "build-v1": {"build_id": 1, "package": "bash", "owner": "carol", "succeeded": True},
    "build-v0": {"build_id": 1},
    "review-headers": {"fedora_messaging_severity": 10},
    "every-keyword": {"n": 3},
}


def instances(name: str, schema: dict[str, Any], count: int = 3000) -> list[Any]:
    """Random variations of a valid instance: keys set to odd values, removed, added."""
    keys = [*schema.get("properties", {}), "extra"]
    chance = random.Random(2026)
    made: list[Any] = [*VALUES, EXAMPLES[name]]
    for _ in range(count):
        instance = dict(EXAMPLES[name])
        for key in chance.sample(keys, chance.randint(0, min(2, len(keys)))):
            if key in instance and chance.random() < 0.3:
                del instance[key]
            else:
                instance[key] = chance.choice(VALUES)
        made.append(instance)
    return made


@pytest.mark.parametrize("name", SCHEMAS)
def test_the_quick_check_accepts_only_what_jsonschema_accepts(name: str):
    schema = SCHEMAS[name]
    quick = quick_check(schema)
    assert quick is not None, "each of these schemas is simple enough for a quick check"
    validator = jsonschema.validators.validator_for(schema)(schema)
    accepted = 0
    for instance in instances(name, schema):
        if quick(instance):
            accepted += 1
            assert validator.is_valid(instance), instance
    assert accepted > 0  # the check does accept valid messages, so it saves work


@pytest.mark.parametrize(
    "schema",
    [
        ReviewCommentV1.body_schema,  # an array with items
        {"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}},
        {"type": "object", "additionalProperties": False},
        {"type": "array"},
        {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"},
        {"type": "object", "properties": {"n": {"type": ["integer", "null"]}}},
        {"type": "object", "properties": {"n": {"minimum": 1}}},
        {"type": "object", "properties": {"n": {"$ref": "#/definitions/n"}}},
    ],
    ids=["items", "pattern", "additional", "array", "draft-3", "type-list", "untyped-min", "ref"],
)
def test_a_schema_with_anything_else_gets_no_quick_check(schema: dict[str, Any]):
    assert quick_check(schema) is None
