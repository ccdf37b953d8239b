"""The `scimjit` command line (console script `scimjit = "scimjit.cli:main"`); start reading at cli/main.py.

Only `main` is exported. Note that the name `scimjit.cli.main` is this function, not the module: import the
module's other names as `from scimjit.cli.main import build_parser`.
"""

from scimjit.cli.main import main

__all__ = ["main"]
