"""`store.users.encoded` splices a stored document's JSON text into a page of users: byte for byte what
rendering the decoded document and projecting it by default gives, or None (and the page renders it)."""

from __future__ import annotations

import random
from collections import namedtuple
from pathlib import Path
from typing import Any

import orjson
import pytest

from scimjit.scim.projection import Projection, apply, guarded_needles
from scimjit.scim.schema import USER_URN, Registry, load_registry
from scimjit.store import users
from tests.seed import EXTENDS_KEY, TEST_SCHEMA, TEST_URN

E = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
SECRET_URN = "urn:scimjit:test:params:scim:schemas:extension:secret:2.0:User"
SECRET_SCHEMA = {
    "id": SECRET_URN,
    "name": "Secret",
    EXTENDS_KEY: ["User"],
    "attributes": [
        {"name": "pin", "type": "string", "returned": "never"},
        {"name": "hint", "type": "string", "returned": "request"},
    ],
}
BASE = "https://scim.example.com/scim/v2"
Row = namedtuple("Row", users.RENDERED)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    directory: Path = tmp_path_factory.mktemp("schemas")
    (directory / "test-types.json").write_bytes(orjson.dumps(TEST_SCHEMA))
    (directory / "secret.json").write_bytes(orjson.dumps(SECRET_SCHEMA))
    return load_registry([directory])


def _row(data: dict[str, Any], **overrides: Any) -> Row:
    values = {"pk": 7, "id": "2819c223-7f76-453a-919d", "data": data, "version": 3}
    values |= {"created": 1_700_000_000_123_456, "last_modified": 1_700_000_100_000_000, **overrides}
    return Row(**values)


def _rendered(reg: Registry, row: Row, groups: list[tuple[str, str]] | None) -> bytes:
    doc = users.render(row, BASE, groups)
    return orjson.dumps(apply(reg, reg.resource_type("User"), doc, Projection(frozenset(), frozenset())))


def _spliced(reg: Registry, row: Row, groups: list[tuple[str, str]] | None, text: str | None = None) -> Any:
    stored = row._replace(data=orjson.dumps(row.data).decode() if text is None else text)
    return users.encoded(stored, BASE, groups, guarded_needles(reg, reg.resource_type("User")))


SPLICED = {
    "core only": {"schemas": [USER_URN], "userName": "bjensen"},
    "nothing but schemas": {"schemas": [USER_URN]},
    "an extension": {
        "schemas": [USER_URN, E],
        "userName": "b",
        E: {"employeeNumber": "7", "department": "X"},
    },
    "a listed extension that holds nothing": {"schemas": [USER_URN, E], "userName": "b"},
    "two extensions, stored the other way round": {
        "schemas": [USER_URN, E, TEST_URN],
        "userName": "b",
        TEST_URN: {"level": 3, "score": 2.5, "vip": True},
        E: {"department": "X"},
    },
    "two extensions, in the listed order": {
        "schemas": [USER_URN, E, TEST_URN],
        "userName": "b",
        E: {"department": "X"},
        TEST_URN: {"level": 3},
    },
    "the first of two listed extensions holds nothing": {
        "schemas": [USER_URN, E, TEST_URN],
        "userName": "b",
        TEST_URN: {"level": 3},
    },
    "text that needs escaping": {
        "schemas": [USER_URN],
        "userName": 'quote " backslash \\ tab \t nul-free \u2028 Ž 😀',
        "displayName": "</script>",
        "name": {"familyName": "O'Brien", "givenName": "Åsa"},
        "emails": [{"value": "a@example.com", "type": "work", "primary": True}],
    },
    "a sub-attribute named like a guarded one": {
        "schemas": [USER_URN, TEST_URN],
        "userName": "b",
        TEST_URN: {"pet": {"name": "hint"}},  # a value, not a key
    },
}
FALLBACK = {  # correct either way; these are rendered the slow way
    "a guarded attribute": {"schemas": [USER_URN, SECRET_URN], "userName": "b", SECRET_URN: {"hint": "h"}},
    "a value that starts with urn:": {"schemas": [USER_URN], "userName": "b", "title": "urn:x:y"},
    "an extension schemas does not list": {"schemas": [USER_URN], "userName": "b", E: {"department": "X"}},
    "a value that starts with urn: before an extension": {
        "schemas": [USER_URN, E],
        "title": "urn:x:y",
        E: {"department": "X"},
    },
    "a value that starts with urn: in an extension": {"schemas": [USER_URN, E], E: {"department": "urn:x"}},
    "an extension's key inside another extension": {
        "schemas": [USER_URN, E, TEST_URN],
        E: {"department": "X"},
        TEST_URN: {"nick": {E: 1}},
    },
}


@pytest.mark.parametrize("case", [*SPLICED, *FALLBACK])
@pytest.mark.parametrize("groups", [None, [], [("g-1", "Admins"), ("g-2", 'Tour "Guides"')]])
def test_a_spliced_user_is_the_rendered_user(reg: Registry, case: str, groups: Any) -> None:
    row = _row((SPLICED | FALLBACK)[case])
    spliced = _spliced(reg, row, groups)
    if case in FALLBACK:
        assert spliced is None
        return
    assert spliced is not None
    assert orjson.dumps(spliced) == _rendered(reg, row, groups)


@pytest.mark.parametrize(
    "text",
    [
        '{"userName":"b","schemas":["' + USER_URN + '"]}',  # schemas last: another writer's order
        '{"schemas": ["' + USER_URN + '"], "userName": "b"}',  # spaced out
        '{"schemas":["' + USER_URN + '"],"userName":"b"} ',  # trailing space
        '{"schemas":["urn:other"],"userName":"b"}',
        '{"schemas":["' + USER_URN + '", "' + E + '"],"userName":"b","' + E + '":{}}',  # spaced list
        '{"schemas":["' + USER_URN + '","' + E + '",1],"userName":"b","' + E + '":{}}',
        '{"schemas":["' + USER_URN + '",{"a":"]"}],"userName":"b"}',
    ],
)
def test_text_not_written_as_the_store_writes_it_is_rendered_the_slow_way(reg: Registry, text: str) -> None:
    assert _spliced(reg, _row({}), None, text) is None


def test_random_documents(reg: Registry) -> None:
    """Documents drawn at random from the attributes a user has: each spliced one equals the rendered one."""
    rnd = random.Random(13)
    words = ["a", "Ž", "urn:x", '"q"', "\\", "", "hint", "pin", "\n", "0"]
    spliced = 0
    for _ in range(400):
        data: dict[str, Any] = {"userName": rnd.choice(words) + "u"}
        for key in ("displayName", "title", "nickName"):
            if rnd.random() < 0.5:
                data[key] = rnd.choice(words)
        extensions = [urn for urn in (E, TEST_URN, SECRET_URN) if rnd.random() < 0.4]
        rnd.shuffle(extensions)
        for urn in extensions:
            data[urn] = (
                {"department": rnd.choice(words)}
                if urn == E
                else {"level": rnd.randint(-5, 5), "nick": rnd.choice(words)}
                if urn == TEST_URN
                else {rnd.choice(["hint", "pin"]): rnd.choice(words)}
            )
        listed = [urn for urn in (E, TEST_URN, SECRET_URN) if urn in data or rnd.random() < 0.2]
        row = _row({"schemas": [USER_URN, *listed], **data})
        groups = [("g", rnd.choice(words))] if rnd.random() < 0.5 else None
        out = _spliced(reg, row, groups)
        if out is not None:
            spliced += 1
            assert orjson.dumps(out) == _rendered(reg, row, groups), row.data
    assert spliced > 100  # most documents take the short way
