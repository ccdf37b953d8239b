"""`scimjit schedules import FILE` against the test database (SQLite and PostgreSQL): CSV and JSON plans,
the same summary as the PUT, idempotent re-imports, and user mistakes as `error: ...` with exit code 2."""

from __future__ import annotations

import json
import tomllib

import pytest
import sqlalchemy as sa

from scimjit.cli import main
from scimjit.store.tables import grants
from tests.access_helpers import CONFIG, Directory, make_access

CSV = """id,user,group,startsAt,endsAt,location
s1,alice,night-shift,2099-01-01T22:00:00Z,2099-01-02T06:00:00Z,dock 4
s2,bob,night-shift,2099-01-02T22:00:00Z,2099-01-03T06:00:00Z,dock 4
"""


@pytest.fixture
def cli(db, clock, tmp_path, monkeypatch, capsys):
    text = CONFIG.format(
        issuer="http://127.0.0.1:9", webhook="http://127.0.0.1:9/events", on_unentitled="disable", grace="0s",
        jit="",
    )  # fmt: skip
    path = tmp_path / "scimjit.toml"
    path.write_text(text)
    monkeypatch.setenv("SCIMJIT_CONFIG", str(path))
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.test_url if hasattr(db, "test_url") else db.url)
    d = Directory(db, clock, make_access(db, clock, tomllib.loads(text)))
    d.user("alice"), d.user("bob")
    d.group("night-shift")

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _grants(db):
    with db.read() as conn:
        return conn.execute(sa.select(grants).order_by(grants.c.source_ref)).all()


def test_import_a_csv_plan_then_the_same_again_then_a_json_plan(cli, db, tmp_path):
    plan = tmp_path / "rota.csv"
    plan.write_text(CSV)
    code, out, err = cli("schedules", "import", str(plan), "--source", "rota")
    assert code == 0, err
    assert out.strip() == "created 2, updated 0, revoked 0, unchanged 0, skipped 0"
    assert "2 shift(s) read" in err
    assert [(g.source, g.source_ref, g.status) for g in _grants(db)] == [
        ("rota", "s1", "scheduled"),
        ("rota", "s2", "scheduled"),
    ]
    assert cli("schedules", "import", str(plan), "--source", "rota")[1].strip() == (
        "created 0, updated 0, revoked 0, unchanged 2, skipped 0"
    )

    shifts = [
        {"id": "s1", "user": "alice", "group": "night-shift", "startsAt": "2099-01-01T23:00:00Z",
         "endsAt": "2099-01-02T06:00:00Z"},
    ]  # fmt: skip
    doc = tmp_path / "rota.json"
    doc.write_text(json.dumps({"source": "rota", "shifts": shifts}))
    code, out, _ = cli("schedules", "import", str(doc), "--json")
    assert code == 0
    assert json.loads(out) == {
        "source": "rota", "created": 0, "updated": 1, "revoked": 1, "unchanged": 0, "skipped": 0,
    }  # fmt: skip
    assert [(g.source_ref, g.status) for g in _grants(db) if g.source_ref] == [("s1", "scheduled")]


def test_import_mistakes_are_one_error_line_and_exit_2_with_nothing_written(cli, db, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,user,group,startsAt,endsAt\nx1,nobody,night-shift,2099-01-01T22:00:00Z,2099-01-02T06:00:00Z\n"
    )
    code, _, err = cli("schedules", "import", str(bad), "--source", "rota")
    assert code == 2
    assert "shift x1: no user has the id or userName 'nobody'" in err
    assert "error: 1 shift(s) refused; nothing was written" in err and "Traceback" not in err
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("x1,alice,night-shift\n")
    code, _, err = cli("schedules", "import", str(headerless), "--source", "rota")
    assert code == 2 and "the CSV header lacks" in err
    code, _, err = cli("schedules", "import", str(tmp_path / "missing.csv"), "--source", "rota")
    assert code == 2 and err.startswith("error: cannot read")
    plan = tmp_path / "rota.csv"
    plan.write_text(CSV)
    code, _, err = cli("schedules", "import", str(plan))
    assert code == 2 and "--source" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"shifts": [')
    assert cli("schedules", "import", str(broken), "--source", "rota")[0] == 2
    assert _grants(db) == []
