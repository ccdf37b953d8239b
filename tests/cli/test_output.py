"""The one table printer and JSON printer every command uses (scimjit/cli/output.py), and the command tree:
each command defined once, in the order `scimjit --help` has always listed them."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys

import pytest

from scimjit.cli.main import build_parser
from scimjit.cli.output import fail, print_json, print_table


def test_a_table_has_a_header_a_rule_and_padded_cells() -> None:
    out = io.StringIO()
    rows = [
        {"id": 1, "roles": ["admin", "editor"], "note": None},
        {"id": 22, "roles": [], "note": {"k": "v" * 80}},
    ]
    print_table(rows, ["id", "roles", "note"], out=out)
    long = '{"k":"' + "v" * 51 + "..."  # dicts are cut to 60 characters
    assert out.getvalue().splitlines() == [
        "id  roles         note",
        "--  ------------  " + "-" * 60,
        "1   admin,editor",  # trailing blanks stripped, None is empty
        "22                " + long,
    ]


def test_the_tables_released_without_a_rule_keep_printing_none() -> None:
    out = io.StringIO()
    print_table([{"a": "x", "b": 3}], ["a", "b"], rule=False, out=out)
    assert out.getvalue() == "a  b\nx  3\n"


def test_json_is_indented_and_errors_are_one_line_with_exit_code_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_json({"b": [1], "a": None})
    assert fail("no such thing") == 2
    out, err = capsys.readouterr()
    assert out == '{\n  "b": [\n    1\n  ],\n  "a": null\n}\n'
    assert err == "error: no such thing\n"


def _tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _tree(child, (*path, name))
    return paths


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    child: argparse.ArgumentParser = action.choices[name]
    return child


def test_the_command_tree_is_the_contract() -> None:
    commands = [" ".join(p) for p in _tree(build_parser()) if p]
    assert commands == [
        "serve", "db", "db upgrade", "token", "token create", "token list", "token revoke",
        "users", "users list", "groups", "groups list", "apps", "apps list", "worker",
        "outbox", "outbox list", "outbox retry", "accounts", "accounts list", "accounts idle", "reconcile",
        "sweep",
        "grants", "grants create", "grants extend", "grants revoke", "grants list",
        "requests", "requests create", "requests approve", "requests deny", "requests policies", "requests list",
        "schedules", "schedules import", "audit", "audit purge", "keys", "keys list", "keys rotate",
    ]  # fmt: skip


def test_accounts_list_keeps_the_ledger_options_and_the_scim_filter_ones() -> None:
    accounts = _subparser(_subparser(build_parser(), "accounts"), "list")
    flags = [a.option_strings[0] for a in accounts._actions if a.option_strings]
    assert flags == [
        "-h", "--application", "--user", "--status", "--limit", "--json",
        "--filter", "--sort-by", "--sort-order", "--start-index", "--count",
    ]  # fmt: skip
    args = build_parser().parse_args(["accounts", "list", "--limit", "5"])
    assert (args.view, args.limit, args.count, args.func.__name__) == ("accounts", 5, None, "cmd_list")


def test_python_dash_m_runs_the_same_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scimjit.cli", "db", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: scimjit db ")
    assert json.dumps(done.stderr) == '""'
