"""The `attr[.sub] op "string"` short cut of the filter parser (issue 13: a quarter of Entra's pre-create
lookup) gives exactly what the general lexer and parser give: the same predicate, or the same refusal."""

from __future__ import annotations

import random
from typing import Any

import pytest

from scimjit.scim import filter as scim_filter
from scimjit.scim.errors import ScimError


def _outcome(registry: Any, kind: str, text: str) -> Any:
    try:
        return scim_filter.parse_filter(registry, registry.resource_type(kind), text)
    except ScimError as exc:
        return ("refused", exc.status, exc.scim_type, exc.detail)


def _both(registry: Any, kind: str, text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    fast = _outcome(registry, kind, text)
    with monkeypatch.context() as m:
        m.setattr(scim_filter, "_SIMPLE", scim_filter.re.compile(r"(?!)"))  # never matches: the parser
        slow = _outcome(registry, kind, text)
    return fast, slow


CASES = [
    'userName eq "bjensen"',
    'userName EQ "Bjensen@Example.com"',
    'userName eQ "a"',
    '  userName   eq   "spaced"  ',
    'userName\teq\t"tabs"',
    'userName eq ""',
    'userName eq "quote \\" inside"',
    'userName eq "unicode \\u00e9 é \\ud83d\\ude00"',
    'userName eq "bad escape \\x"',
    'userName eq "lone \\ud800"',
    'userName eq "nul \\u0000"',
    'externalId eq "00u1abc"',
    'displayName eq "Sales Team"',
    'emails eq "a@example.com"',
    'active eq "true"',
    'nosuch eq "x"',
    'eq eq "x"',
    'null eq "x"',
    'nullable eq "x"',
    'userName eq "a" ',
    'userName eq "a" and active eq true',
    'userName eq "unterminated',
    "userName eq 'single'",
    "userName eq 12",
    'userName ne "x"',
    'name.familyName eq "x"',
    'name.familyName sw "Sm"',
    'name.familyName SW "Sm"',
    'emails.value co "@example.com"',
    'emails.type eq "work"',
    'name.nosuch eq "x"',
    'name.eq eq "x"',
    'eq.name eq "x"',
    'name.familyName.x eq "x"',
    'name. familyName eq "x"',
    'userName gt "m"',
    'userName Le "m"',
    'userName ew "@example.com"',
    'meta.lastModified gt "2024-01-01T00:00:00Z"',
    'meta.lastModified gt "yesterday"',
    'active ne "x"',
    'userName pr "x"',
    'userName sw "b" or userName sw "c"',
    'groups.value eq "g-1"',
]


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("kind", ["User", "Group"])
def test_the_short_cut_agrees_with_the_parser(registry, monkeypatch, kind, text):
    fast, slow = _both(registry, kind, text, monkeypatch)
    assert fast == slow


def test_the_short_cut_agrees_on_random_names_and_values(registry, monkeypatch):
    rng = random.Random(13)
    alphabet = [
        "a",
        "Z",
        "0",
        " ",
        '"',
        "\\",
        '\\"',
        "\\\\",
        "\\n",
        "\\u00e9",
        "é",
        "\\t",
        "/",
        "\\/",
        "\t",
        "'",
    ]
    names = ["userName", "externalId", "displayName", "title", "nickName", "x-y", "a_b", "locale", "id"]
    names += ["name.familyName", "emails.value", "emails.Type", "meta.created", "name.x-y", "ims.value"]
    ops = ["eq", "Eq", "EQ", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le", "pr", "sW"]
    for _ in range(600):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))
        text = f'{rng.choice(names)} {rng.choice(ops)} "{value}"'
        fast, slow = _both(registry, "User", text, monkeypatch)
        assert fast == slow, text


def test_the_idp_lookup_does_not_reach_the_parser(registry, monkeypatch):
    ran: list[str] = []

    def no_parser(*_: Any) -> Any:
        ran.append("parser")
        raise AssertionError("the general parser ran")

    monkeypatch.setattr(scim_filter._Parser, "parse", no_parser)
    predicate = scim_filter.parse_filter(registry, registry.resource_type("User"), 'userName eq "bjensen"')
    assert predicate.op == "eq" and predicate.value == "bjensen" and predicate.ref.attr.name == "userName"
    assert ran == []
    with pytest.raises(ScimError):  # anything else still goes to the parser (here refusing to run)
        scim_filter.parse_filter(
            registry, registry.resource_type("User"), 'userName sw "b" or active eq true'
        )
    assert ran == ["parser"]
