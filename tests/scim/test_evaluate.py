"""`scim.evaluate.matches`: a value-filter predicate against one element, every operator, caseExact, and/or/not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scimjit.scim.errors import ScimError
from scimjit.scim.evaluate import matches
from scimjit.scim.predicate import And, Compare, Not, Or, ValuePath
from scimjit.scim.schema import Attribute, AttrRef, Registry

WHEN = Attribute("when", "dateTime")
COUNT = Attribute("count", "integer")
SCORE = Attribute("score", "decimal")
BLOB = Attribute("blob", "binary", case_exact=True)
THINGS = Attribute(
    "things",
    "complex",
    multi_valued=True,
    sub_attributes={"when": WHEN, "count": COUNT, "score": SCORE, "blob": BLOB},
)


def thing(sub: Attribute) -> AttrRef:
    return AttrRef("urn:test", THINGS, sub, extension=True)


@pytest.fixture
def email(registry: Registry) -> Any:
    rt = registry.resource_type("User")
    return lambda sub: registry.resolve(rt, f"emails.{sub}")


@pytest.fixture
def member_value(registry: Registry) -> AttrRef:
    return registry.resolve(registry.resource_type("Group"), "members.value")


WORK = {"value": "Babs@Example.com", "type": "work", "primary": True}


@pytest.mark.parametrize(
    ("sub", "op", "value", "expected"),
    [
        ("type", "eq", "WORK", True),  # caseExact=false
        ("type", "eq", "home", False),
        ("type", "ne", "home", True),
        ("type", "ne", "Work", False),
        ("value", "co", "example", True),
        ("value", "co", "nowhere", False),
        ("value", "sw", "babs@", True),
        ("value", "sw", "example", False),
        ("value", "ew", ".COM", True),
        ("value", "ew", ".org", False),
        ("value", "gt", "babs", True),
        ("value", "ge", "babs@example.com", True),
        ("value", "lt", "babs", False),
        ("value", "le", "babs@example.com", True),
        ("value", "pr", None, True),
        ("display", "pr", None, False),
        ("primary", "eq", True, True),
        ("primary", "eq", False, False),
    ],
)
def test_string_and_boolean_operators(email: Any, sub: str, op: str, value: Any, expected: bool) -> None:
    assert matches(Compare(email(sub), op, value), WORK) is expected


def test_case_exact_sub_attributes_compare_exactly(member_value: AttrRef) -> None:
    element = {"value": "AbC"}
    assert matches(Compare(member_value, "eq", "AbC"), element)
    assert not matches(Compare(member_value, "eq", "abc"), element)
    assert not matches(Compare(member_value, "sw", "ab"), element)


def test_absent_sub_attribute_equals_only_null(email: Any) -> None:
    element = {"value": "x@example.com"}
    assert matches(Compare(email("type"), "eq", None), element)
    assert not matches(Compare(email("type"), "ne", None), element)
    assert not matches(Compare(email("type"), "eq", "work"), element)
    assert matches(Compare(email("type"), "ne", "work"), element)  # ne is not-eq
    assert not matches(Compare(email("type"), "gt", "a"), element)
    assert not matches(Compare(email("type"), "co", "w"), element)
    assert matches(Compare(email("value"), "ne", None), element)


def test_boolean_is_not_equal_to_its_string_or_number(email: Any) -> None:
    assert not matches(Compare(email("primary"), "eq", "true"), WORK)
    assert not matches(Compare(email("primary"), "eq", 1), WORK)


@pytest.mark.parametrize("op", ["gt", "ge", "lt", "le"])
def test_ordering_booleans_and_binary_is_invalid_filter(email: Any, op: str) -> None:
    with pytest.raises(ScimError) as err:
        matches(Compare(email("primary"), op, True), WORK)
    assert err.value.scim_type == "invalidFilter"
    with pytest.raises(ScimError):
        matches(Compare(thing(BLOB), op, "AAAA"), {"blob": "AAAA"})


def test_datetimes_compare_chronologically_across_offsets() -> None:
    element = {"when": "2024-01-31T12:00:00Z"}
    same_instant = datetime.fromisoformat("2024-01-31T13:00:00+01:00")
    assert matches(Compare(thing(WHEN), "eq", same_instant), element)
    assert matches(Compare(thing(WHEN), "gt", datetime(2024, 1, 31, 11, tzinfo=UTC)), element)
    assert matches(Compare(thing(WHEN), "le", datetime(2024, 1, 31, 12)), element)  # naive is UTC
    assert not matches(Compare(thing(WHEN), "lt", datetime(2024, 1, 31, 12, tzinfo=UTC)), element)
    assert not matches(Compare(thing(WHEN), "gt", same_instant), {"when": "not a date"})


def test_numbers_compare_numerically() -> None:
    element = {"count": 10, "score": 2.5}
    assert matches(Compare(thing(COUNT), "gt", 9), element)
    assert not matches(Compare(thing(COUNT), "gt", 10), element)
    assert matches(Compare(thing(COUNT), "eq", 10.0), element)
    assert matches(Compare(thing(SCORE), "lt", 3), element)
    assert not matches(Compare(thing(SCORE), "co", "2"), element)
    assert not matches(Compare(thing(COUNT), "gt", "9"), element)  # another type is outside the order


def test_and_or_not(email: Any) -> None:
    work = Compare(email("type"), "eq", "work")
    home = Compare(email("type"), "eq", "home")
    primary = Compare(email("primary"), "eq", True)
    assert matches(And(work, primary), WORK)
    assert not matches(And(home, primary), WORK)
    assert matches(Or(home, primary), WORK)
    assert not matches(Or(home, Not(work)), WORK)
    assert matches(Not(home), WORK)


def test_nested_value_path_is_invalid_filter(email: Any) -> None:
    nested = ValuePath(email("type"), Compare(email("type"), "eq", "work"))
    with pytest.raises(ScimError) as err:
        matches(nested, WORK)
    assert err.value.scim_type == "invalidFilter"


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", None, True),  # "" is unassigned (RFC 7643 §2.5), as in the SQL compiler
        ("ne", None, False),
        ("pr", None, False),
        ("eq", "", False),
        ("ne", "", True),
        ("sw", "", False),
        ("le", "z", False),
    ],
)
def test_an_empty_string_is_unassigned(email: Any, op: str, value: Any, expected: bool) -> None:
    element = {"value": "", "type": "work"}
    assert matches(Compare(email("value"), op, value), element) is expected
