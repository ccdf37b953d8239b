"""The CLI answers a user's mistake with one `error:` line and exit code 2, never a traceback; `serve` after the
first `admin` token was revoked starts (and mints nothing)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from scimjit.cli import main
from scimjit.store.db import Database, normalise_url
from scimjit.store.migrate import upgrade
from tests.cli_server import cli_env, serve
from tests.conftest import PG_URL, _pg_schema_url

SCIMJIT = [str(Path(sys.executable).with_name("scimjit"))]

# Every command that reads the database, with arguments that are otherwise valid.
DB_COMMANDS = [
    ["users", "list"],
    ["groups", "list", "--filter", 'displayName sw "a"'],
    ["token", "list"],
    ["token", "create", "ci", "--scope", "scim:read"],
    ["token", "revoke", "ci"],
    ["audit", "--since", "1h"],
    ["audit", "--json"],
    ["audit", "purge", "--older-than", "90d"],
    ["accounts", "list"],
    ["grants", "list"],
    ["requests", "list"],
    ["outbox", "list"],
    ["outbox", "retry", "--all-dead"],
    ["grants", "create", "--user", "alice", "--group", "admins", "--duration", "1h"],
    ["worker", "--once"],
    ["sweep", "--once"],
    ["serve", "--port", "0"],
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """A user's mistake is one line: `error: ...`, or `config error: ...` for the configuration."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(("error: ", "config error: ")), err
    return lines[0]


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A reachable database with no scimjit schema (SQLite: no file yet; PostgreSQL: an empty schema)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/never-migrated.db"
        return
    if not PG_URL:
        pytest.skip("SCIMJIT_TEST_DATABASE_URL not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(PG_URL))
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(PG_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture
def migrated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path}/scimjit.db"
    db = Database(url)
    upgrade(db)
    db.dispose()
    for name in ("SCIMJIT_CONFIG", "SCIMJIT_SCHEMAS_DIRS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", url)
    return url


@pytest.mark.parametrize("argv", DB_COMMANDS, ids=" ".join)
def test_every_command_on_an_unmigrated_database_says_run_db_upgrade(
    argv: list[str], unmigrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCIMJIT_CONFIG", raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", unmigrated_url)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "run `scimjit db upgrade`" in one_error_line(err)
    # nothing was created behind the user's back: still no schema
    db = Database(unmigrated_url)
    with db.engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []
    db.dispose()


def test_the_installed_command_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    env = cli_env(f"sqlite:///{tmp_path}/never-migrated.db")
    done = subprocess.run(
        [*SCIMJIT, "users", "list"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    assert "run `scimjit db upgrade`" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "invalid database URL"),
        ("foo://u:hunter2@h/db", "invalid database URL foo://u:***@h/db"),
        ("mysql://u:hunter2@h/db", "no driver for the database URL mysql://u:***@h/db"),
        (
            "postgresql://u:hunter2@127.0.0.1:1/db",
            "cannot use the database postgresql://u:***@127.0.0.1:1/db",
        ),
        ("sqlite:////nonexistent-dir/x/scimjit.db", "cannot use the database sqlite:////nonexistent-dir"),
    ],
)
def test_a_bad_database_url_is_one_line_without_the_password(
    url: str, expected: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCIMJIT_CONFIG", raising=False)
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", url)
    for argv in (["db", "upgrade"], ["token", "list"]):
        code, _, err = run(capsys, *argv)
        line = one_error_line(err)
        assert code == 2 and expected in line and "hunter2" not in line


def test_config_file_mistakes(
    migrated: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCIMJIT_CONFIG", str(tmp_path / "missing.toml"))
    code, _, err = run(capsys, "users", "list")
    assert code == 2 and "missing.toml" in one_error_line(err)

    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nbase_url = 1\n")
    monkeypatch.setenv("SCIMJIT_CONFIG", str(broken))
    for argv in (["users", "list"], ["token", "list"], ["apps", "list"]):
        code, _, err = run(capsys, *argv)
        assert code == 2, argv
        one_error_line(err)

    unreadable = tmp_path / "a-directory.toml"
    unreadable.mkdir()
    monkeypatch.setenv("SCIMJIT_CONFIG", str(unreadable))
    code, _, err = run(capsys, "token", "list")
    assert code == 2 and "a-directory.toml" in one_error_line(err)


def test_input_mistakes_on_a_migrated_database(migrated: str, capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["users", "list", "--filter", "userName eq"], "invalidFilter"),
        (["groups", "list", "--sort-by", "nosuch"], "unknown attribute 'nosuch'"),
        (["grants", "list", "--filter", "bogus eq 1"], "unknown attribute 'bogus'"),
        (["db", "upgrade", "nosuchrev"], "nosuchrev"),
        (["token", "create", "hook", "--scope", "login", "--app", "wikki"], "unknown application 'wikki'"),
        (["token", "create", "x", "--scope", "root"], "unknown scope"),
        (["token", "revoke", "nobody"], "no active token named 'nobody'"),
        (["grants", "revoke", "nogrant"], "no grant"),
    ]
    for argv, fragment in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and fragment in one_error_line(err), argv
    # a token bound to an unknown application was not created
    code, out, _ = run(capsys, "token", "list", "--json")
    assert code == 0 and out.strip() == "[]"


@pytest.mark.parametrize(
    "argv", [["audit", "--since", "yesterday"], ["audit", "purge", "--older-than", "1x"]]
)
def test_a_bad_duration_is_a_usage_error(
    argv: list[str], migrated: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "expected a duration" in err and "Traceback" not in err


def test_serve_after_the_admin_token_was_revoked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/scimjit.db"
    db = Database(url)
    upgrade(db)
    env = cli_env(url, SCIMJIT_RUN_WORKER="false", SCIMJIT_RUN_SWEEPER="false")

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SCIMJIT, *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    with serve(SCIMJIT, env, tmp_path) as first:  # first start: the admin token, printed once
        out, _ = first.output()
        assert "First start: created the admin token" in out
        admin = next(w for w in out.split() if w.startswith("sjt_"))
        assert (
            httpx.get(f"{first.url}/scim/v2/Users", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 200
        )
    with serve(SCIMJIT, env, tmp_path) as second:  # a token exists: nothing printed, no warning
        out, err = second.output()
        assert out == "" and "admin scope" not in err

    idp = cli("token", "create", "idp", "--scope", "scim:read").stdout.strip()
    assert cli("token", "revoke", "admin").returncode == 0
    with serve(SCIMJIT, env, tmp_path) as third:
        out, err = third.output()
        assert "sjt_" not in out and "First start" not in out  # no new secret in a service log
        assert "no active token has the admin scope" in err and "scimjit token create" in err
        assert "Traceback" not in err
        headers = {"Authorization": f"Bearer {idp}"}
        assert httpx.get(f"{third.url}/scim/v2/Users", headers=headers).json()["totalResults"] == 0
        assert (
            httpx.get(f"{third.url}/scim/v2/Users", headers={"Authorization": f"Bearer {admin}"}).status_code
            == 401
        )
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT name, revoked_at IS NULL FROM tokens ORDER BY name")).all()
    assert [tuple(r) for r in rows] == [("admin", False), ("idp", True)]
    db.dispose()
