"""The typed predicate tree a SCIM filter becomes once parsed and checked against the schema.

`scim.filter` builds it; `store.compile` compiles it to SQL (for `store.filters` and `store.admin`);
`scim.evaluate` tests it against one in-memory element (PATCH value paths). Attribute references are resolved
`AttrRef`s, values are already coerced to the attribute's type (str, bool, int, float, datetime, or None for
`null`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scimjit.scim.schema import AttrRef


@dataclass(frozen=True, slots=True)
class Compare:
    """`attrPath op value`; `pr` has no value. Inside a `ValuePath`, `ref` names a sub-attribute of its parent."""

    ref: AttrRef
    op: str
    value: Any = None


@dataclass(frozen=True, slots=True)
class And:
    left: Predicate
    right: Predicate


@dataclass(frozen=True, slots=True)
class Or:
    left: Predicate
    right: Predicate


@dataclass(frozen=True, slots=True)
class Not:
    operand: Predicate


@dataclass(frozen=True, slots=True)
class ValuePath:
    """Some element of the multi-valued attribute `ref` satisfies `inner` (same-element semantics).

    `emails[type eq "work" and value co "@x"]`, and also `emails.value eq "x"` / `emails co "x"`, which are
    normalised to `emails[value eq "x"]` / `emails[value co "x"]` so the compiler has one path for both.
    """

    ref: AttrRef
    inner: Predicate


Predicate = Compare | And | Or | Not | ValuePath
