"""Who a verified ID token belongs to in the SCIM directory, and what that user is entitled to in one app.

These are the login's hot-path reads, so each is one indexed query: the user (by the app's match rule) with
their account in that app joined on, then their live memberships among the groups the app cares about
(entitlement groups and role-mapped groups, by id or displayName). The SQL of each lives with its table's
owner (`store.users.select_matching`, `ledger.outerjoin_accounts`, `store.memberships.live_groups`); this
module builds the two statements once per application and turns their rows into `Subject`s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from scimjit.entitlement import ledger
from scimjit.entitlement.apps import Application
from scimjit.scim.identifiers import identifier_key
from scimjit.scim.schema import USER_URN
from scimjit.store import users as user_rows
from scimjit.store.db import RawReader, rows
from scimjit.store.memberships import live_groups
from scimjit.store.prepared import Prepared
from scimjit.store.tables import Row


@dataclass(frozen=True, slots=True)
class Account:
    """The ledger row of (application, user), as the login needs it."""

    id: int
    status: str
    downstream_id: str | None
    roles: list[str]
    profile_hash: str | None
    last_login_at: int | None
    version: int


@dataclass(frozen=True, slots=True)
class Subject:
    user_id: str
    user_name: str
    active: bool
    data: dict[str, Any]
    account: Account | None


def match_value(attribute: str, value: str) -> str:
    """The claim as the match rule's column holds it. userName and emails compare by their PRECIS key
    (`scim.identifiers`, RFC 8265): a claim PRECIS refuses (U+212A KELVIN SIGN as the K of "Kate") raises
    `DisallowedIdentifier` and matches nobody, where `str.lower` made it "kate". For an ASCII email the key is
    the lower-cased address, which is what `user_values.value_ci` holds."""
    return identifier_key(value) if attribute in ("userName", "emails.value") else value


class Lookups:
    """The login's two reads for one application, built once: a statement built per call costs more in
    SQLAlchemy's expression machinery than SQLite spends answering it."""

    def __init__(self, app: Application) -> None:
        self.app = app
        self._find = Prepared(
            user_rows.select_matching(
                app.match.attribute,
                sa.bindparam("value"),
                extra_columns=ledger.SUBJECT_COLUMNS,
                join=lambda left, user_id: ledger.outerjoin_accounts(left, user_id, app.name),
            ).limit(2)
        )
        self._members: Prepared | None = None
        if app.group_refs:
            self._members = Prepared(
                live_groups(
                    sa.bindparam("member_id"),
                    sa.bindparam("now"),
                    group_ids={*app.groups, *app.roles},  # ids, exactly
                    names_ci=app.group_refs,  # displayNames, case-insensitively
                    with_member=False,  # one member: the login reads only what identifies the group
                    constant_refs=True,
                )
            )

    def find_subjects(self, conn: sa.Connection | RawReader, value: str) -> list[Subject]:
        """Users matching `value` under the app's rule (at most two: more than one is ambiguous). Raises
        `DisallowedIdentifier` for a claim no identifier may be (see `match_value`). `conn` is a SQLAlchemy
        connection or a `Database.snapshot` reader (the login's hot path)."""
        return self.subjects(rows(conn, *self.find_read(value)))

    def find_read(self, value: str) -> tuple[Prepared, dict[str, Any]]:
        """The statement of `find_subjects` and its parameters, for a reader of any kind (the login's reads
        awaited on the event loop, `Database.snapshot_async`); its rows give `subjects`."""
        return self._find, {"value": match_value(self.app.match.attribute, value)}

    @staticmethod
    def subjects(found: Sequence[Row]) -> list[Subject]:
        return [_subject(r) for r in found]

    def member_refs(self, conn: sa.Connection | RawReader, user_id: str, now_us: int) -> set[str]:
        """Lower-cased ids and displayNames of the app's groups (entitlement + roles) the user is a live
        direct member of."""
        read = self.members_read(user_id, now_us)
        return self.refs(rows(conn, *read)) if read is not None else set()

    def members_read(self, user_id: str, now_us: int) -> tuple[Prepared, dict[str, Any]] | None:
        """The statement of `member_refs` and its parameters (None: the app names no group); its rows give
        `refs`."""
        if self._members is None:
            return None
        return self._members, {"member_id": user_id, "now": now_us}

    @staticmethod
    def refs(found: Sequence[Row]) -> set[str]:
        out: set[str] = set()
        for group_id, name_ci in found:
            out.add(group_id.lower())
            out.add(name_ci)
        return out


def find_subjects(conn: sa.Connection, app: Application, value: str) -> list[Subject]:
    """Users matching `value` under the app's rule (at most two). Builds its statement per call: hot paths
    keep a `Lookups` instead."""
    return Lookups(app).find_subjects(conn, value)


def member_refs(conn: sa.Connection, app: Application, user_id: str, now_us: int) -> set[str]:
    return Lookups(app).member_refs(conn, user_id, now_us)


def _subject(r: Row) -> Subject:
    account = None
    if r.a_id is not None:
        account = Account(
            id=r.a_id,
            status=r.a_status,
            downstream_id=r.a_downstream_id,
            roles=list(r.a_roles or ()),
            profile_hash=r.a_profile_hash,
            last_login_at=r.a_last_login_at,
            version=r.a_version,
        )
    return Subject(user_id=r.id, user_name=r.user_name, active=bool(r.active), data=r.data, account=account)


def render_user(subject: Subject) -> dict[str, Any]:
    """The SCIM User as events and login responses carry it (no meta, no groups: roles say what matters)."""
    return user_rows.document(USER_URN, subject.user_id, subject.data)
