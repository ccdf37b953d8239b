"""Hot read statements compiled once per dialect, for `Database.fetch` to run on a DBAPI cursor directly.

Why: on `GET /Users/{id}` SQLAlchemy's Connection (checkout, execution context, events, result object,
close) cost ~110 µs per request against SQLite's own ~5 µs (bench/inprocess.py, cProfile; issue 13). A
`Prepared` keeps what SQLAlchemy would work out on every call, once: the SQL string of the dialect, the order
of the parameters, the bind and result processors of each column's type, and a row class with the
statement's column names (rows read like SQLAlchemy's: `row.id`, `row.data`). The statement itself stays a
SQLAlchemy construct, written, reviewed and tested as every other; only its execution is short-cut.

Reads run by `Database.fetch` / `snapshot` (no transaction of SQLAlchemy's), and the fixed-shape statements
every write runs (the audit record, a user's insert, a group's member add) by `db.execute` inside the
caller's `write()`. Never with expanding (`IN`) parameters: anything else goes through SQLAlchemy as usual.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class Compiled:
    """A statement as one dialect runs it."""

    sql: str
    positional: tuple[str, ...] | None  # the parameters' order for a positional paramstyle (SQLite's qmark)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # (name, processor) of parameters that have one
    results: tuple[
        tuple[int, Callable[[Any], Any]], ...
    ]  # (column index, processor) of columns that have one
    row: Callable[..., Any]  # a namedtuple class with the statement's column names
    defaults: Mapping[str, Any]  # the values of binds the statement carries (`sa.literal(...)`)

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for `values` (every bind without a value in the statement must be given)."""
        if self.defaults:
            values = {**self.defaults, **values}
        if self.binds:
            values = dict(values)
            for name, process in self.binds:
                values[name] = process(values[name])
        if self.positional is not None:
            return tuple(values[name] for name in self.positional)
        return values

    def rows(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        make = self.row
        if not self.results:
            return [make(*r) for r in raw]
        out = []
        for r in raw:
            values = list(r)
            for index, process in self.results:
                values[index] = process(values[index])
            out.append(make(*values))
        return out


class Prepared:
    """A SQLAlchemy SELECT, compiled on first use for each dialect it runs on."""

    __slots__ = ("_by_dialect", "columns", "statement")

    def __init__(self, statement: Any, columns: Sequence[str] | None = None) -> None:
        """`statement`: a SELECT, a textual SELECT, or an INSERT / UPDATE / DELETE (with RETURNING or not), or
        a function of the dialect's name that builds one (for `store.dialect` expressions); `columns`: the
        column keys an INSERT always sets (its VALUES clause, compiled once for them)."""
        self.statement = statement
        self.columns = list(columns) if columns is not None else None
        self._by_dialect: dict[str, Compiled] = {}

    def compiled(self, dialect: sa.Dialect) -> Compiled:
        found = self._by_dialect.get(dialect.name)
        if found is None:
            found = self._by_dialect[dialect.name] = _compile(self.statement, dialect, self.columns)
        return found


def _compile(statement: Any, dialect: sa.Dialect, column_keys: list[str] | None) -> Compiled:
    if not isinstance(statement, sa.ClauseElement):
        statement = statement(dialect.name)
    compiled = statement.compile(dialect=dialect, column_keys=column_keys)
    if any(b.expanding for b in compiled.binds.values()) or "__[POSTCOMPILE" in compiled.string:
        raise ValueError("a Prepared statement takes no expanding (IN) or post-compiled parameters")
    binds = []
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds.append((name, process))
    if hasattr(statement, "selected_columns"):
        columns = list(statement.selected_columns)
    else:  # DML: what it returns, its own RETURNING or the one the dialect adds for a generated key
        columns = list(compiled.effective_returning or ())
    results = []
    for index, column in enumerate(columns):
        process = column.type.dialect_impl(dialect).result_processor(dialect, None)
        if process is not None:
            results.append((index, process))
    positional = tuple(compiled.positiontup) if compiled.positional and compiled.positiontup else None
    # rename: a column without a name of its own becomes _<index>
    row = namedtuple("Row", [c.key for c in columns], rename=True)  # type: ignore[misc]
    defaults = {name: b.value for name, b in compiled.binds.items() if not b.required and b.callable is None}
    return Compiled(compiled.string, positional, tuple(binds), tuple(results), row, defaults)
