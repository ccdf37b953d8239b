"""`scimjit token list`: the table and the JSON (which once failed on the store's SQLAlchemy-typed keys)."""

from __future__ import annotations

import json

import pytest

from scimjit.cli import main
from scimjit.store.db import Database


@pytest.fixture
def env(db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.delenv("SCIMJIT_CONFIG", raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.url)
    return db


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_token_list_as_json_and_as_a_table(env: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "token", "create", "ops", "--scope", "admin", "--scope", "scim:read")[0] == 0
    assert run(capsys, "token", "create", "ci", "--scope", "scim:write")[0] == 0
    assert run(capsys, "token", "revoke", "ci") == (0, "revoked ci\n", "")

    code, out, err = run(capsys, "token", "list", "--json")
    assert (code, err) == (0, "")
    rows = json.loads(out)
    assert [sorted(r) for r in rows] == [
        ["application", "created_at", "id", "name", "revoked_at", "scopes"]
    ] * 2
    by_name = {r["name"]: r for r in rows}
    assert by_name["ops"]["scopes"] == ["admin", "scim:read"] and by_name["ops"]["revoked_at"] is None
    assert isinstance(by_name["ci"]["revoked_at"], int)
    assert "secret" not in out

    code, out, _ = run(capsys, "token", "list")
    header, rule, ci, ops = out.splitlines()
    assert header.split() == ["name", "scopes", "app", "created", "revoked"] and set(rule) == {"-", " "}
    assert ci.startswith("ci ") and ci.rstrip().endswith("Z") and len(ci.split()) == 4  # created, revoked
    assert ops.split()[:3] == ["ops", "admin", "scim:read"] and len(ops.split()) == 4  # no app, not revoked
