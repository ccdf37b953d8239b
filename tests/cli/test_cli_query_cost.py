"""The CLI's queries are bound by `statement_timeout` too: a costly filter ends with one error line that says
so (`tooMany`), never a traceback. And the term cap applies to its filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from scimjit.cli import main
from scimjit.scim.schema import load_registry
from scimjit.store import audit
from scimjit.store.db import Database
from scimjit.store.migrate import upgrade
from tests.seed import insert_user

COSTLY = " or ".join(f'title co "zq{i}"' for i in range(50))


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/scimjit.db"
    db = Database(url)
    upgrade(db)
    registry = load_registry()
    with db.write() as conn:
        for i in range(3000):
            insert_user(conn, registry, {"userName": f"user{i:05d}", "title": f"Title {i}"})
            audit.record(conn, actor="seed", action=f"user.created.{i}", outcome="success", at_micros=i)
    db.dispose()
    for name in ("SCIMJIT_CONFIG", "SCIMJIT_SCHEMAS_DIRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", url)
    monkeypatch.setenv("SCIMJIT_STATEMENT_TIMEOUT", "5ms")
    return url


@pytest.mark.parametrize(
    "argv",
    [
        ["users", "list", "--filter", COSTLY],
        ["audit", "--filter", COSTLY.replace("title", "action")],
    ],
    ids=["users list", "audit"],
)
def test_a_costly_filter_is_one_error_line(
    seeded: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code != 0 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "statement time limit (0.005s)" in lines[0]


def test_the_term_cap_applies_to_cli_filters(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["users", "list", "--filter", COSTLY + ' or userName eq "x"'])
    _, err = capsys.readouterr()
    assert code != 0 and "more than 50 comparisons" in err and "Traceback" not in err
