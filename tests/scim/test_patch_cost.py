"""The cost of a PATCH grows with its operations, not with their square (issue 11 §1b), and the number of
operations is capped (`patch_max_operations`, `400 tooMany`).

Work is counted, never timed: every deep copy, every value comparison (`is_equal_value`), every value key
(`value_key`) and every filter evaluation is one unit. A quadratic engine does ~100 times the work for 10 times
the operations; a linear one ~10 times."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from scimjit.scim import patch as patch_module
from scimjit.scim import resource as resource_module
from scimjit.scim.errors import ScimError
from scimjit.scim.patch import PATCH_OP_URN, apply_patch
from scimjit.scim.schema import USER_URN, Registry

USER_ID = "2819c223-7f76-453a-919d-413861904646"


def _user() -> dict[str, Any]:
    return {"schemas": [USER_URN], "id": USER_ID, "userName": "bjensen"}


def _add_emails(count: int, *, primary_every: int = 0) -> dict[str, Any]:
    ops = []
    for i in range(count):
        email: dict[str, Any] = {"value": f"e{i}@example.com", "type": "work"}
        if primary_every and i % primary_every == 0:
            email["primary"] = True
        ops.append({"op": "add", "path": "emails", "value": [email]})
    return {"schemas": [PATCH_OP_URN], "Operations": ops}


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count the units of work of the PATCH engine (see the module docstring)."""
    counter = {"units": 0}

    def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counter["units"] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(copy, "deepcopy", counted(copy.deepcopy))  # nested copies count too
    for module in (patch_module, resource_module):
        for name in ("is_equal_value", "value_key", "matches"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, counted(getattr(module, name)))

    def take() -> int:
        units, counter["units"] = counter["units"], 0
        return units

    return take


def test_work_grows_linearly_with_the_number_of_add_operations(registry: Registry, work) -> None:
    rt = registry.resource_type("User")
    work()
    small = apply_patch(registry, rt, _user(), _add_emails(300))
    small_work = work()
    large = apply_patch(registry, rt, _user(), _add_emails(3000))
    large_work = work()
    assert len(small.document["emails"]) == 300 and len(large.document["emails"]) == 3000
    assert large.document["emails"][2999] == {"value": "e2999@example.com", "type": "work"}
    assert large_work <= 12 * small_work, (small_work, large_work)  # quadratic: ~100 times


def test_linear_add_keeps_the_semantics_duplicates_and_primary(registry: Registry, work) -> None:
    """The index behind the linear add answers as the scan did: equal values (case-insensitively) are not
    added twice, and a value made primary takes it from the one that had it."""
    rt = registry.resource_type("User")
    body = _add_emails(200, primary_every=50)
    body["Operations"] += [
        {"op": "add", "path": "emails", "value": [{"value": "E1@EXAMPLE.COM", "type": "work"}]},
        {"op": "replace", "path": 'emails[value eq "e3@example.com"].type', "value": "home"},
        {"op": "add", "path": "emails", "value": [{"value": "e3@example.com", "type": "home"}]},
        {"op": "add", "path": "emails", "value": [{"value": "new@example.com", "type": "work"}]},
    ]
    emails = apply_patch(registry, rt, _user(), body).document["emails"]
    assert len(emails) == 201  # the upper-cased copy and the re-added e3 are the same values
    assert [e["value"] for e in emails if e.get("primary")] == ["e150@example.com"]
    assert emails[3] == {"value": "e3@example.com", "type": "home"}
    assert emails[-1]["value"] == "new@example.com"
    assert work() < 200 * 20  # and it stayed linear


def test_the_stored_document_is_not_changed(registry: Registry) -> None:
    rt = registry.resource_type("User")
    stored = {**_user(), "emails": [{"value": "a@example.com", "primary": True}]}
    kept = copy.deepcopy(stored)
    result = apply_patch(registry, rt, stored, _add_emails(3, primary_every=1))
    assert stored == kept
    assert [e.get("primary") for e in result.document["emails"]] == [False, False, False, True]


def test_more_operations_than_the_cap_are_too_many(registry: Registry) -> None:
    rt = registry.resource_type("User")
    assert (
        len(apply_patch(registry, rt, _user(), _add_emails(10), max_operations=10).document["emails"]) == 10
    )
    with pytest.raises(ScimError) as excinfo:
        apply_patch(registry, rt, _user(), _add_emails(11), max_operations=10)
    error = excinfo.value.to_dict()
    assert error["status"] == "400" and error["scimType"] == "tooMany"
    assert "11 operations" in error["detail"] and "at most 10" in error["detail"]
