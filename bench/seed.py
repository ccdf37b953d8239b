"""A fresh database for a run, bulk-loaded with SQLAlchemy Core.

The schema comes from the migrations (`scimjit db upgrade`), the rows from the store's own functions
(`promoted.user_columns`, `promoted.user_value_rows`), so a seeded user is stored exactly as one created
over SCIM would be. Rows go in with executemany, a transaction per chunk; on SQLite `synchronous=OFF` and a
large page cache apply to the seeding connection only, never to the server's.

Users are indexed 0..N-1 (see `bench.data`); a group of size S has users 0..S-1 as members (source "scim").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import data
from scimjit.clock import SystemClock, to_micros
from scimjit.scim.resource import normalise
from scimjit.scim.schema import JIT_GROUP_URN, Registry, load_registry
from scimjit.store.db import Database, normalise_url
from scimjit.store.memberships import SCIM_SOURCE
from scimjit.store.migrate import upgrade
from scimjit.store.promoted import group_columns, user_columns, user_value_rows
from scimjit.store.tables import groups, memberships, user_values, users
from scimjit.store.tokens import TokenStore

CHUNK = 10_000


@dataclass
class Target:
    """The database of one run: where it is, and how to get rid of it."""

    url: str
    db: Database
    pg_schema: str | None = None
    admin_url: str | None = None

    def drop(self) -> None:
        self.db.dispose()
        if self.pg_schema and self.admin_url:
            admin = sa.create_engine(self.admin_url)
            with admin.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')
            admin.dispose()


def create_target(database_url: str | None, tmp: Path) -> Target:
    """A migrated, empty database: a SQLite file in `tmp`, or a schema of its own in the given PostgreSQL."""
    if database_url is None or database_url.startswith("sqlite"):
        url = database_url or f"sqlite:///{tmp}/bench.db"
        path = sa.make_url(url).database
        if path and path != ":memory:" and Path(path).exists():
            raise SystemExit(f"{path} exists: the benchmark seeds a new database, give it a new file")
        target = Target(url, Database(url))
    else:
        admin_url = normalise_url(database_url)
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(admin_url)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        admin.dispose()
        sep = "&" if "?" in admin_url else "?"
        url = f"{admin_url}{sep}options=-csearch_path%3D{schema}"
        target = Target(url, Database(url), schema, admin_url)
    upgrade(target.db)
    return target


def create_token(db: Database) -> str:
    return TokenStore(db, SystemClock()).create(f"bench-{uuid.uuid4().hex[:8]}", ["admin"])


@dataclass
class Dataset:
    """What is in the database: users 0..users-1, and one group per size."""

    users: int = 0
    groups: dict[int, int] = field(default_factory=dict)  # size -> groups.pk
    seconds: dict[str, float] = field(default_factory=dict)  # what seeding took, by step


class Seeder:
    def __init__(self, db: Database, registry: Registry | None = None) -> None:
        self.db = db
        self.registry = registry or load_registry()
        self.user_rt = self.registry.resource_type("User")
        self.now = to_micros(SystemClock().now())
        sample = data.user_doc(1)
        if normalise(self.registry, self.user_rt, sample) != sample:  # seeded rows must be what a POST stores
            raise RuntimeError("bench.data.user_doc is not in the server's normalised form; update it")

    @contextmanager
    def _bulk(self) -> Iterator[sa.Connection]:
        """A connection tuned for loading (durability off: a crash only loses the benchmark's own data)."""
        with self.db.engine.connect().execution_options(scimjit_write=True) as conn:
            if self.db.is_sqlite:  # outside any transaction, where SQLite accepts them
                raw: Any = conn.connection.dbapi_connection
                saved = [(p, raw.execute(f"PRAGMA {p}").fetchone()[0]) for p in ("synchronous", "cache_size")]
                raw.execute("PRAGMA synchronous=OFF")
                raw.execute("PRAGMA cache_size=-1000000")  # 1 GB: index inserts stay in memory
            else:
                conn.exec_driver_sql("SET synchronous_commit = off")
                conn.commit()
            yield conn
            if self.db.is_sqlite:  # the connection goes back to the pool: as Database configured it
                for pragma, value in saved:
                    raw.execute(f"PRAGMA {pragma}={value}")

    def users(self, dataset: Dataset, stop: int) -> None:
        """Add users dataset.users..stop-1 (primary keys after any row already there, e.g. POSTed ones)."""
        started = time.perf_counter()
        start = dataset.users
        with self._bulk() as conn:
            with conn.begin():
                first_pk = (conn.execute(sa.select(sa.func.max(users.c.pk))).scalar() or 0) + 1 - start
            for lo in range(start, stop, CHUNK):
                user_rows, value_rows = [], []
                for i in range(lo, min(lo + CHUNK, stop)):
                    doc = data.user_doc(i)
                    pk = first_pk + i
                    user_rows.append(
                        {
                            "pk": pk,
                            "id": data.user_id(i),
                            "data": doc,
                            "password_hash": None,
                            "version": 1,
                            "created": self.now - (stop - i),
                            "last_modified": self.now - (stop - i),
                            **user_columns(doc),
                        }
                    )
                    value_rows += [
                        {"user_pk": pk, **r} for r in user_value_rows(self.registry, self.user_rt, doc)
                    ]
                with conn.begin():
                    conn.execute(users.insert(), user_rows)
                    conn.execute(user_values.insert(), value_rows)
            self._fix_sequence(conn, "users")
        dataset.users = stop
        dataset.seconds[f"users {start}..{stop - 1}"] = time.perf_counter() - started

    def group(self, dataset: Dataset, size: int) -> None:
        """A group whose members are users 0..size-1."""
        if dataset.users < size:
            raise ValueError(f"a group of {size} needs {size} users; {dataset.users} are seeded")
        started = time.perf_counter()
        doc = data.group_doc(size)
        with self._bulk() as conn:
            with conn.begin():
                pk = conn.execute(
                    groups.insert()
                    .values(
                        id=data.group_id(size),
                        data=doc,
                        version=1,
                        created=self.now,
                        last_modified=self.now,
                        **group_columns(doc, JIT_GROUP_URN),
                    )
                    .returning(groups.c.pk)
                ).scalar_one()
            for lo in range(0, size, CHUNK):
                rows = [
                    {
                        "group_pk": pk,
                        "member_id": data.user_id(i),
                        "source": SCIM_SOURCE,
                        "member_type": "User",
                        "added_at": self.now,
                        "expires_at": None,
                    }
                    for i in range(lo, min(lo + CHUNK, size))
                ]
                with conn.begin():
                    conn.execute(memberships.insert(), rows)
        dataset.groups[size] = pk
        dataset.seconds[f"group of {size}"] = time.perf_counter() - started

    def finish(self) -> None:
        """Leave the database as an operator's would be: statistics current, WAL folded in."""
        with self.db.engine.connect() as conn:
            if self.db.is_sqlite:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            else:
                conn.exec_driver_sql("ANALYZE")  # what autovacuum would have done after a load this size
            conn.commit()

    def _fix_sequence(self, conn: sa.Connection, table: str) -> None:
        """Explicit primary keys do not advance PostgreSQL's sequence; move it past them for later inserts."""
        if not self.db.is_sqlite:
            with conn.begin():
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'pk'), (SELECT max(pk) FROM {table}))"
                )
