"""Packaging beyond what pyproject.toml can say: ship the top-level `schemas/` inside the package.

`schemas/` stays at the top of the repository (it is the design's single source of truth, edited by people,
not code), but an installed scimjit must carry it. It is mapped, as data, to the package `scimjit._schemas`
(`package_dir`), so the wheel holds `scimjit/_schemas/*.json` and `scimjit/_schemas/admin/*.json`, the sdist
holds `schemas/` as it is, and the code finds it with `importlib.resources.files("scimjit._schemas")` in a
wheel, an editable install and a zip alike. Why not the alternatives: a symlink `scimjit/_schemas -> ../schemas`
breaks on checkouts without symlinks and is copied or skipped depending on the tool; a custom build step that
copies files is invisible to editable installs; looking the directory up beside the source tree
(`parents[2]`) only works in a checkout. `pyproject.toml`'s `packages` cannot combine a discovered list with an
extra mapped package, hence this file; everything else lives in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    # Namespace discovery too: the migration directories are packages without __init__.py.
    packages=[
        *find_namespace_packages(include=["scimjit*"], exclude=["*.__pycache__"]),
        "scimjit._schemas",
        "scimjit._schemas.admin",
    ],
    package_dir={"scimjit._schemas": "schemas"},
)
