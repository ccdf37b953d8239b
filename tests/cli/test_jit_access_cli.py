"""`scimjit sweep | grants | requests` on the command line, against the test database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import tomllib

import pytest

from scimjit.cli import main
from tests.access_helpers import CONFIG, POLICY, Directory, make_access


@pytest.fixture
def cli(db, clock, tmp_path, monkeypatch, capsys):
    text = CONFIG.format(
        issuer="http://127.0.0.1:9",
        webhook="http://127.0.0.1:9/events",
        on_unentitled="disable",
        grace="0s",
        jit=POLICY.format(approvals=1),
    )
    path = tmp_path / "scimjit.toml"
    path.write_text(text)
    monkeypatch.setenv("SCIMJIT_CONFIG", str(path))
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.test_url if hasattr(db, "test_url") else db.url)
    d = Directory(db, clock, make_access(db, clock, tomllib.loads(text)))
    alice, bob = d.user("alice"), d.user("bob")
    d.group("engineers", [alice])
    d.group("sre-leads", [bob])
    d.group("prod-admins")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_grants_and_requests_from_the_command_line(cli):
    code, out, _ = cli(
        "grants", "create", "--user", "alice", "--group", "prod-admins", "--duration", "2h", "--json"
    )
    assert code == 0
    grant = json.loads(out)
    assert grant["status"] == "active" and grant["createdBy"].startswith("cli")
    assert cli("grants", "extend", grant["id"], "--duration", "1h", "--json")[0] == 0
    code, out, _ = cli("grants", "revoke", grant["id"], "--reason", "done")
    assert code == 0 and "status: revoked" in out
    code, _, err = cli("grants", "revoke", grant["id"])
    assert code == 2 and "is revoked" in err

    code, out, _ = cli(
        "requests", "create", "--user", "alice", "--group", "prod-admins", "--duration", "4h",
        "--justification", "release", "--json",
    )  # fmt: skip
    request = json.loads(out)
    assert request["status"] == "pending"
    code, _, err = cli("requests", "approve", request["id"], "--approver", "alice")
    assert code == 2 and "their own request" in err
    code, out, _ = cli("requests", "approve", request["id"], "--approver", "bob", "--json")
    assert code == 0 and json.loads(out)["status"] == "approved"
    (decision,) = json.loads(out)["approvals"]
    assert (decision["approver"], decision["via"]) == ("bob", "operator")  # the CLI acts on the database

    code, out, _ = cli("sweep", "--once")
    assert code == 0 and json.loads(out)["memberships_expired"] == 0
