"""How every `scimjit` command prints: one table printer, one JSON printer, one error line.

Commands print results on stdout (a table for people, indented JSON with `--json` for machines) and everything
else — progress, `(n of total)` counts, errors — on stderr, so `scimjit ... --json | jq` always gets clean
JSON. A user's mistake is one `error: ...` line and exit code `EXIT_USER_ERROR` (see scimjit/cli/errors.py,
which turns known exceptions into that line in `main`); commands that check their own input return `fail(...)`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import orjson

from scimjit.cli.errors import EXIT_USER_ERROR

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"  # worker, sweep and reconcile log alike
CELL_JSON_WIDTH = 60  # a dict cell (e.g. an audit record's details) is cut to this many characters


def fail(message: str) -> int:
    """Say what the user got wrong in one line on stderr; the command returns this (exit code 2)."""
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def print_json(value: Any) -> None:
    """`--json` output: one indented document on stdout (orjson, so datetimes and the like need no help)."""
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def write_jsonl(records: Iterator[dict[str, Any]], out: IO[str], progress: Progress | None = None) -> int:
    """An export: one compact JSON document per line, streamed (the audit trail can be millions of rows)."""
    n = 0
    for record in records:
        out.write(orjson.dumps(record).decode() + "\n")
        n += 1
        if progress is not None:
            progress.add()
    out.flush()
    return n


def cell(value: Any) -> str:
    """One table cell: nothing for None, lists comma-joined, objects as (shortened) JSON."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(cell(v) for v in value)
    if isinstance(value, dict):
        text = orjson.dumps(value).decode()
        return text if len(text) <= CELL_JSON_WIDTH else text[: CELL_JSON_WIDTH - 3] + "..."
    return str(value)


def print_table(
    rows: Iterable[dict[str, Any]], columns: Iterable[str], *, rule: bool = True, out: IO[str] | None = None
) -> None:
    """Rows as left-aligned columns under a header (and, with `rule`, a line of dashes below it).

    `rule=False` is for the tables that have printed no dashes since they were first released (`apps list`,
    `outbox list`, the `reconcile` repairs): their output is a contract scripts may parse line by line.
    """
    out = out or sys.stdout
    columns = list(columns)
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip() + "\n")
    if rule:
        out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")


class Progress:
    """A one-line counter on stderr for long operations, redrawn in place; silent when stderr is no terminal
    (scripts and logs get the final summary line only)."""

    def __init__(self, label: str, stream: IO[str] | None = None, every: int = 1000) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.every = every
        self.count = 0
        self.live = self.stream.isatty()

    def add(self, n: int = 1) -> None:
        before = self.count
        self.count += n
        if self.live and before // self.every != self.count // self.every:
            self.stream.write(f"\r{self.label}: {self.count:,}")
            self.stream.flush()

    def done(self, summary: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K")
        self.stream.write(summary + "\n")
        self.stream.flush()
