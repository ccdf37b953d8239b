"""The wheel works where users are: built from the sdist, installed (not editable) into a fresh venv outside
the checkout, `scimjit db upgrade`, `token create` and `serve` run from a directory outside the checkout and
answer real SCIM requests (the steps are in tests/wheel_smoke.py; .ci/run repeats them with a full
`pip install` of the dependencies)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.wheel_smoke import REPO, build, install, smoke


def test_the_wheel_installs_and_serves_from_outside_the_checkout(tmp_path: Path) -> None:
    assert REPO not in tmp_path.parents  # "outside the checkout" is real
    wheel = build(tmp_path / "dist", isolated=False)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {Path(n).name for n in names if n.startswith("scimjit/_schemas/")}
    assert {p.name for p in (REPO / "schemas").rglob("*.json")} <= shipped
    assert "scimjit/_schemas/admin/AuditEvent.json" in names
    templates = REPO / "scimjit/http/console/templates"  # the console's pages and stylesheet
    assert {f"scimjit/http/console/templates/{p.name}" for p in templates.iterdir() if p.is_file()} <= names
    assert "scimjit/store/migrations/env.py" in names and "scimjit/store/migrations/script.py.mako" in names
    migrations = {Path(n).name for n in names if n.startswith("scimjit/store/migrations/versions/")}
    assert {p.name for p in (REPO / "scimjit/store/migrations/versions").glob("*.py")} <= migrations

    scimjit = install(wheel, tmp_path / "venv", full=False)
    work = tmp_path / "work"
    work.mkdir()
    checked = smoke(scimjit, work)
    assert checked["imported from"].startswith(str(tmp_path / "venv"))
    assert checked["POST /Users"] == "201" and checked["audit records"] == "1"
