"""Build scimjit's sdist, a wheel from that sdist, install the wheel into a fresh venv outside the checkout and
use it as a new user would: `db upgrade`, `token create`, `serve`, real SCIM requests, all from a directory
outside the checkout. The wheel is built from the sdist so both are shown to carry `schemas/` and the
migrations.

Two ways to get the dependencies into the venv:
- offline (tests/e2e/test_wheel_install.py): the venv reads the running environment's site-packages through a
  `.pth` line (a `.pth` path entry does not run that environment's own `.pth` files, so its editable scimjit
  stays out; the wheel's scimjit comes first on sys.path), and the wheel is installed `--no-deps`;
- `--full` (.ci/run): `pip install <wheel>` resolves and installs the dependencies, exactly what a user does.

    python -m tests.wheel_smoke [--full] [--keep DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import httpx

from tests.cli_server import cli_env, serve

REPO = Path(__file__).resolve().parents[1]
SCIM_JSON = "application/scim+json"


def run(*argv: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def build(out: Path, *, isolated: bool) -> Path:
    """sdist from the checkout, then a wheel from the unpacked sdist; returns the wheel."""
    out.mkdir(parents=True, exist_ok=True)
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    sdist = out / run(sys.executable, "-c", code, out, cwd=REPO).strip().splitlines()[-1]
    flags = [] if isolated else ["--no-build-isolation", "--no-index"]
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags, "-w", out, sdist, cwd=out)
    (wheel,) = out.glob("scimjit-*.whl")
    return wheel


def install(wheel: Path, venv: Path, *, full: bool) -> Path:
    """A fresh venv with the wheel installed; returns its `scimjit` command."""
    if full:
        run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
        run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=venv.parent)
    else:
        run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
        target = Path(
            run(
                venv / "bin" / "python",
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
                cwd=venv,
            ).strip()
        )
        (target / "running-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
        pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python"]
        run(*pip, "install", "-q", "--no-deps", "--no-index", wheel, cwd=venv.parent)
    return venv / "bin" / "scimjit"


def smoke(scimjit: Path, work: Path) -> dict[str, str]:
    """Use the installed command from `work` (outside the checkout); returns what was checked, for a report."""
    python = scimjit.with_name("python")
    origin = run(python, "-c", "import scimjit; print(scimjit.__file__)", cwd=work).strip()
    if not origin.startswith(str(scimjit.parents[1])):
        raise AssertionError(f"scimjit was imported from {origin}, not from the venv {scimjit.parents[1]}")
    env = cli_env(f"sqlite:///{work}/scimjit.db")
    revision = run(scimjit, "db", "upgrade", cwd=work, env=env).strip()
    idp = run(
        scimjit, "token", "create", "idp", "--scope", "scim:read", "--scope", "scim:write", cwd=work, env=env
    )
    admin = run(scimjit, "token", "create", "ops", "--scope", "admin", cwd=work, env=env).strip()
    headers = {"Authorization": f"Bearer {idp.strip()}", "Content-Type": SCIM_JSON}
    with serve([str(scimjit)], env, work) as server:
        schemas = httpx.get(f"{server.url}/scim/v2/Schemas", headers=headers)
        schemas.raise_for_status()
        ids = {s["id"] for s in schemas.json()["Resources"]}
        expected = {
            "urn:ietf:params:scim:schemas:core:2.0:User",
            "urn:ietf:params:scim:schemas:core:2.0:Group",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        }
        if not expected <= ids:
            raise AssertionError(f"/Schemas lacks {expected - ids}")
        body = {
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "wheel.user@example.com",
        }
        created = httpx.post(f"{server.url}/scim/v2/Users", headers=headers, json=body)
        if created.status_code != 201:
            raise AssertionError(f"POST /Users: {created.status_code} {created.text}")
        found = httpx.get(
            f"{server.url}/scim/v2/Users",
            headers=headers,
            params={"filter": 'userName eq "WHEEL.USER@example.com"'},
        ).json()
        if [r["id"] for r in found["Resources"]] != [created.json()["id"]]:
            raise AssertionError(f"the created user is not found by its userName: {found}")
        audit = httpx.get(  # the admin views' schemas (schemas/admin/) came from the wheel too
            f"{server.url}/jit/v1/audit",
            headers={"Authorization": f"Bearer {admin}"},
            params={"filter": 'action eq "scim.user.create"'},
        )
        audit.raise_for_status()
        if audit.json()["totalResults"] != 1:
            raise AssertionError(f"the user's creation is not in the audit trail: {audit.text}")
    listed = run(scimjit, "users", "list", "--json", cwd=work, env=env)
    if '"wheel.user@example.com"' not in listed:
        raise AssertionError(f"`scimjit users list` does not show the user: {listed}")
    return {
        "imported from": origin,
        "db upgrade": revision,
        "schemas": f"{len(ids)} served",
        "POST /Users": str(created.status_code),
        "audit records": str(audit.json()["totalResults"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="pip install the wheel with its dependencies")
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="scimjit-wheel-") as tmp:
        base = args.keep or Path(tmp)
        wheel = build(base / "dist", isolated=args.full)
        scimjit = install(wheel, base / "venv", full=args.full)
        work = base / "work"
        work.mkdir(parents=True, exist_ok=True)
        for key, value in smoke(scimjit, work).items():
            print(f"wheel smoke: {key}: {value}")
    print(f"wheel smoke: {wheel.name} installed and served from outside the checkout")
    return 0


if __name__ == "__main__":
    sys.exit(main())
