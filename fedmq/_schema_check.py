"""A quick check for the simplest JSON schemas, before the full validator.

Validating a small message with the ``jsonschema`` package costs tens of
microseconds a schema. Most message schemas are simple: an object, some
required keys, properties of a plain type, an enum, a range, a length.
:func:`quick_check` turns such a schema into a predicate that answers True
only for an instance the schema certainly accepts; the caller runs the full
validator whenever it answers False, so the verdict (and the error message)
is always the full validator's. A schema using anything else gets no
predicate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Predicate = Callable[[Any], bool]

_ABSENT = object()
#: JSON schema types and the exact Python types that are certainly of that type
#: (``bool`` is never a number; a float is never an integer, whatever the draft).
_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "object": (dict,),
    "null": (type(None),),
}
#: Drafts whose ``type``, ``required``, ``minimum`` and length keywords mean
#: what the predicates assume (draft 3's ``required`` does not).
_DRAFTS = frozenset(
    (
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    )
)
_ANNOTATIONS = frozenset(("$schema", "description", "title"))
_TOP_KEYWORDS = _ANNOTATIONS | {"type", "properties", "required"}
_PROPERTY_KEYWORDS = _ANNOTATIONS | {
    "type",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
}
_SCALARS = (str, int, float, bool, type(None))


def quick_check(schema: Any) -> Predicate | None:
    """A predicate true only for instances ``schema`` accepts; None if it is not simple.

    Args:
        schema: a JSON schema, as a dict.

    Returns:
        The predicate, or None when the schema uses a keyword, a type or a
        draft this module does not know.

    """
    if not _is_simple_object_schema(schema):
        return None
    checks = _property_checks(schema.get("properties", {}))
    if checks is None:
        return None
    return _accepting(schema.get("required", []), checks)


def _is_simple_object_schema(schema: Any) -> bool:
    """Whether ``schema`` is an object schema of a known draft, with only known keywords."""
    if not isinstance(schema, dict) or not set(schema) <= _TOP_KEYWORDS:
        return False
    required = schema.get("required", [])
    return (
        schema.get("$schema", next(iter(_DRAFTS))) in _DRAFTS
        and schema.get("type") == "object"
        and isinstance(required, list)
        and all(isinstance(key, str) for key in required)
        and isinstance(schema.get("properties", {}), dict)
    )


def _property_checks(properties: dict[str, Any]) -> list[tuple[str, Predicate]] | None:
    """A check per property, or None if one property's schema is not simple."""
    checks: list[tuple[str, Predicate]] = []
    for name, subschema in properties.items():
        check = _property_check(subschema)
        if check is None:
            return None
        checks.append((name, check))
    return checks


def _accepting(required: list[str], checks: list[tuple[str, Predicate]]) -> Predicate:
    """The predicate: a dict that has every ``required`` key and passes every check."""

    def accepts(instance: Any) -> bool:
        if type(instance) is not dict:
            return False
        for key in required:
            if key not in instance:
                return False
        for name, check in checks:
            value = instance.get(name, _ABSENT)
            if value is not _ABSENT and not check(value):
                return False
        return True

    return accepts


def _property_check(schema: Any) -> Predicate | None:
    if not isinstance(schema, dict) or not set(schema) <= _PROPERTY_KEYWORDS:
        return None
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in _TYPES):
        return None
    types = _TYPES[kind] if kind is not None else None
    enum = schema.get("enum")
    if enum is not None and (
        not isinstance(enum, list) or not all(type(item) in _SCALARS for item in enum)
    ):
        return None
    allowed = [(type(item), item) for item in enum] if enum is not None else None
    numeric = kind in ("number", "integer")
    bounds = [schema.get("minimum"), schema.get("maximum")]
    lengths = [schema.get("minLength"), schema.get("maxLength")]
    if any(bound is not None for bound in bounds) and not (
        numeric and all(bound is None or type(bound) in (int, float) for bound in bounds)
    ):
        return None
    if any(length is not None for length in lengths) and not (
        kind == "string" and all(length is None or type(length) is int for length in lengths)
    ):
        return None
    minimum, maximum = bounds
    min_length, max_length = lengths

    def accepts(value: Any) -> bool:
        if types is not None and type(value) not in types:
            return False
        if allowed is not None and not any(
            type(value) is kind_ and value == item for kind_, item in allowed
        ):
            return False
        if minimum is not None and value < minimum:
            return False
        if maximum is not None and value > maximum:
            return False
        if min_length is not None and len(value) < min_length:
            return False
        return max_length is None or len(value) <= max_length

    return accepts
