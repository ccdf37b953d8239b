"""Evaluate a filter predicate against one in-memory element of a multi-valued attribute.

PATCH value paths (`emails[type eq "work"]`, RFC 7644 §3.5.2) select elements of the resource being patched,
which is already in memory, so they are tested here rather than compiled to SQL. The predicate is the inner
predicate of a `ValuePath`: its `Compare` refs name sub-attributes, and an element is the dict of one value.
Operator semantics follow RFC 7644 §3.4.2.2, with `caseExact` taken from the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scimjit.scim.errors import invalid_filter
from scimjit.scim.predicate import And, Compare, Not, Or, Predicate, ValuePath
from scimjit.scim.resource import is_empty, parse_datetime
from scimjit.scim.schema import Attribute

_ORDERING = frozenset({"gt", "ge", "lt", "le"})
_SUBSTRING = frozenset({"co", "sw", "ew"})


def matches(predicate: Predicate, element: Mapping[str, Any]) -> bool:
    """Whether one element (a dict of sub-attribute values) satisfies `predicate`."""
    if isinstance(predicate, And):
        return matches(predicate.left, element) and matches(predicate.right, element)
    if isinstance(predicate, Or):
        return matches(predicate.left, element) or matches(predicate.right, element)
    if isinstance(predicate, Not):
        return not matches(predicate.operand, element)
    if isinstance(predicate, ValuePath):
        raise invalid_filter("a value filter cannot contain another value filter")
    return _compare(predicate, element.get(predicate.ref.leaf.name))


def _compare(compare: Compare, actual: Any) -> bool:
    """One comparison. An absent sub-attribute equals only `null`, so `ne` is always `not eq`; an empty string
    is unassigned (RFC 7643 §2.5), as the SQL compiler (store/compile.py) treats it."""
    attr, op = compare.ref.leaf, compare.op
    if actual == "":
        actual = None
    if op == "pr":
        return not is_empty(actual)
    if op in _ORDERING and attr.type in ("boolean", "binary"):
        raise invalid_filter(
            f"{attr.name} is {attr.type}: it cannot be compared with {op} (RFC 7644 §3.4.2.2)"
        )
    if op in ("eq", "ne"):
        return _equal(attr, actual, compare.value) == (op == "eq")
    left, right = _comparable(attr, actual), _comparable(attr, compare.value)
    if left is None or right is None:
        return False
    if op in _SUBSTRING:
        return isinstance(left, str) and isinstance(right, str) and _substring(op, left, right)
    try:
        return _ordered(op, left, right)
    except TypeError:  # a value of another type than the attribute's: it is not in the order
        return False


def _equal(attr: Attribute, actual: Any, expected: Any) -> bool:
    if actual is None or expected is None:
        return actual is None and expected is None
    left, right = _comparable(attr, actual), _comparable(attr, expected)
    return left is not None and isinstance(left, bool) == isinstance(right, bool) and bool(left == right)


def _comparable(attr: Attribute, value: Any) -> Any:
    """The value as it compares: datetimes parsed, case folded unless `caseExact`; None when unusable."""
    if attr.type == "dateTime":
        return parse_datetime(value)
    if isinstance(value, str) and not attr.case_exact:
        return value.lower()
    return value


def _substring(op: str, left: str, right: str) -> bool:
    if op == "co":
        return right in left
    return left.startswith(right) if op == "sw" else left.endswith(right)


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)
