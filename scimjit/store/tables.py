"""Every table scimjit has. Timestamps are epoch microseconds (BIGINT): same semantics on SQLite and PostgreSQL.

Hot attributes of resources are promoted to indexed columns (`*_ci` = lower-cased copy for caseExact=false
comparisons, so a case-insensitive filter is an index range scan on any dialect); the full SCIM document lives
in `data`. Multi-valued attributes get one row per element in `user_values` so complex value filters
(`emails[type eq "work" and value co "@x"]`) keep same-element semantics and `emails.value` is indexed.
Group membership is its own table, with a `source` per row, so memberships change by delta rows only.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Micros = sa.BigInteger  # epoch microseconds, UTC (see scimjit.clock.to_micros)


def Key(length: int) -> sa.types.TypeEngine[str]:  # a column type, spelled like one
    """A string that filters and sorts compare by code point, as SCIM asks ("no specific locale implied").

    SQLite's default BINARY collation already does; PostgreSQL gets `COLLATE "C"`, because under the database's
    default (often linguistic) collation a `sw` range would miss or add rows and the order would differ by host.
    """
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def sqlite_only(index: sa.Index) -> sa.Index:
    """An index that only SQLite gets. `ddl_if` tells the DDL; `info["dialects"]` tells the migrations'
    comparison with these tables (`store.migrate.comparison_options`), which does not read `ddl_if`."""
    index.info["dialects"] = ("sqlite",)
    return index.ddl_if(dialect="sqlite")


users = sa.Table(
    "users",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", Key(64), nullable=False, unique=True),
    sa.Column("user_name", sa.String(256), nullable=False),
    sa.Column("user_name_ci", Key(256), nullable=False, unique=True),
    sa.Column("external_id", Key(256), nullable=True, index=True),
    sa.Column("display_name_ci", Key(256), nullable=True, index=True),
    sa.Column("family_name_ci", Key(256), nullable=True, index=True),
    sa.Column("given_name_ci", Key(256), nullable=True, index=True),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("data", Json, nullable=False),
    sa.Column("password_hash", sa.String(256), nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created", Micros, nullable=False),
    sa.Column("last_modified", Micros, nullable=False, index=True),
)
# SQLite keeps a rowid table's rows in its primary key's b-tree, so skipping `startIndex` rows in pk order read
# every skipped row, JSON document and all (`startIndex=5000&count=100`: 0.9 ms of 1.1). These indexes hold the
# keys alone (about 400 to a page instead of 8). PostgreSQL's primary key index is such an index already.
sqlite_only(sa.Index("ix_users_pk", users.c.pk))

user_values = sa.Table(
    "user_values",
    metadata,
    sa.Column("user_pk", sa.Integer, sa.ForeignKey("users.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("attr", sa.String(256), primary_key=True),  # canonical full path: "emails", "urn:...:User:x"
    sa.Column("position", sa.Integer, primary_key=True),
    sa.Column("type_ci", Key(128), nullable=True),
    sa.Column("value", sa.Text, nullable=True),
    sa.Column("value_ci", Key(512), nullable=True),
    sa.Column("is_primary", sa.Boolean, nullable=True),
    sa.Column("element", Json, nullable=False),
    sa.Index("ix_user_values_attr_value_ci", "attr", "value_ci"),
)

groups = sa.Table(
    "groups",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", Key(64), nullable=False, unique=True),
    sa.Column("display_name", sa.String(256), nullable=False),
    sa.Column("display_name_ci", Key(256), nullable=False, index=True),
    sa.Column("external_id", Key(256), nullable=True, index=True),
    sa.Column("membership_ttl", sa.Integer, nullable=True),  # seconds; from the jit Group extension or config
    sa.Column("data", Json, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created", Micros, nullable=False),
    sa.Column("last_modified", Micros, nullable=False, index=True),
)
sqlite_only(sa.Index("ix_groups_pk", groups.c.pk))  # as ix_users_pk

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("group_pk", sa.Integer, sa.ForeignKey("groups.pk", ondelete="CASCADE"), primary_key=True),
    sa.Column("member_id", Key(64), primary_key=True),  # SCIM id of the member (User or Group)
    sa.Column("source", sa.String(80), primary_key=True),  # "scim" (the IdP) or "grant:<grant id>"
    sa.Column("member_type", sa.String(16), nullable=False, server_default="User"),
    sa.Column(
        "display", sa.String(256), nullable=True
    ),  # as the client sent it (members.display is readWrite)
    sa.Column("added_at", Micros, nullable=False),
    sa.Column("expires_at", Micros, nullable=True, index=True),
    sa.Index("ix_memberships_member_id_group_pk", "member_id", "group_pk"),
    # a group's live members counted from the index alone (`store.groups.members_up_to`, every Group PATCH)
    sa.Index("ix_memberships_group_pk_member_id_expires_at", "group_pk", "member_id", "expires_at"),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # public part of the token, used to look it up
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("secret_hash", sa.String(128), nullable=False),  # sha256 hex of the secret part
    sa.Column("scopes", Json, nullable=False),
    sa.Column("application", sa.String(128), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("revoked_at", Micros, nullable=True),
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("application", sa.String(128), nullable=False),
    sa.Column("user_id", Key(64), nullable=False, index=True),
    sa.Column("user_name", sa.String(256), nullable=True),
    sa.Column("downstream_id", sa.String(256), nullable=True),
    sa.Column("status", sa.String(32), nullable=False),  # pending, active, disabled, deleted
    sa.Column("roles", Json, nullable=False),
    sa.Column("profile_hash", sa.String(64), nullable=True),  # hash of what was last sent downstream
    sa.Column("first_login_at", Micros, nullable=True),
    sa.Column("last_login_at", Micros, nullable=True),
    sa.Column("unentitled_since", Micros, nullable=True),
    # when the sweeper must re-check this account's entitlement and roles (group deleted, grace period end)
    sa.Column("recheck_at", Micros, nullable=True, index=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    sa.UniqueConstraint("application", "user_id"),
    # the sweeper's idle scan (entitlement/ledger.py `idle`): a range of one application's active accounts
    sa.Index("ix_accounts_application_status_last_login_at", "application", "status", "last_login_at"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),  # also the idempotency key
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("application", sa.String(128), nullable=True),
    sa.Column("user_id", Key(64), nullable=True),
    sa.Column("ordering_key", sa.String(256), nullable=False),  # events of one key are delivered in order
    sa.Column("payload", Json, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending, done, dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", Micros, nullable=False),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_until", Micros, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("result", Json, nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("delivered_at", Micros, nullable=True),
    # the claim's scan, in the order it claims (`delivery.outbox.claim_due`): due pending events, longest due first
    sa.Index("ix_outbox_status_next_attempt_at_id", "status", "next_attempt_at", "id"),
    sa.Index("ix_outbox_ordering_key_id", "ordering_key", "id"),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", Key(64), nullable=False, index=True),
    sa.Column("group_id", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),  # scheduled, active, expired, revoked
    sa.Column("starts_at", Micros, nullable=False, index=True),
    sa.Column("expires_at", Micros, nullable=False, index=True),
    sa.Column("justification", sa.Text, nullable=True),
    sa.Column("created_by", sa.String(256), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("notified_at", Micros, nullable=True),  # when the access.expiring notice went out
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
    # grant windows (its policy's `windows`, copied at creation; NULL: always live while active) and the
    # next window start, when the sweeper adds the membership row back (access/grants.py, windows)
    sa.Column("windows", Json, nullable=True),
    sa.Column("window_opens_at", Micros, nullable=True, index=True),
    # a grant made from a scheduling system's shift (access/schedules.py): the source's name and its shift id
    sa.Column("source", sa.String(128), nullable=True),
    sa.Column("source_ref", sa.String(256), nullable=True),
    sa.UniqueConstraint("source", "source_ref"),
)

access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("user_id", Key(64), nullable=False, index=True),
    sa.Column("group_id", sa.String(64), nullable=False, index=True),
    sa.Column(
        "status", sa.String(16), nullable=False, index=True
    ),  # pending, approved, denied, expired, cancelled
    sa.Column("duration_seconds", sa.Integer, nullable=False),
    sa.Column("starts_at", Micros, nullable=True),
    sa.Column("justification", sa.Text, nullable=False),
    sa.Column("requested_by", sa.String(256), nullable=False),
    sa.Column("approvals", Json, nullable=False),  # [{"approver", "decision", "at", "comment"}]
    sa.Column("grant_id", sa.String(64), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("expires_at", Micros, nullable=False),  # a pending request lapses then
    sa.Column("decided_at", Micros, nullable=True),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Micros, nullable=False, index=True),
    sa.Column("actor", sa.String(256), nullable=True),
    sa.Column("action", sa.String(64), nullable=False, index=True),  # e.g. scim.user.create, login.refused
    sa.Column("resource_type", sa.String(64), nullable=True),
    sa.Column("resource_id", sa.String(256), nullable=True, index=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("details", Json, nullable=False),
)


# A row of any of these tables (or of a join of them): what the store and the JIT concerns hand each other.
# Columns are read by name (`row.user_id`); a module that builds a row of its own uses a frozen dataclass.
Row: TypeAlias = sa.Row[*tuple[Any, ...]]

# Server-side state of a browser sign-in (OIDC code flow) between the redirect and the callback: single-use, looked
# up by sha256 of the `state` parameter; `payload` holds what must never reach the browser (PKCE verifier, nonce).
signin_states = sa.Table(
    "signin_states",
    metadata,
    sa.Column("state_hash", sa.String(64), primary_key=True),
    sa.Column("purpose", sa.String(160), nullable=False),  # who started it, e.g. "app:chat" or "console"
    sa.Column("payload", Json, nullable=False),
    sa.Column("expires_at", Micros, nullable=False, index=True),
)

# Values that may be used once (an ID token's jti, a SAML assertion id, a signed result's jti): a row per value
# seen, kept until the value could no longer be accepted anyway.
used_once = sa.Table(
    "used_once",
    metadata,
    sa.Column("purpose", sa.String(64), primary_key=True),
    sa.Column("value_hash", sa.String(64), primary_key=True),
    sa.Column("expires_at", Micros, nullable=False, index=True),
)

# scimjit's own signing keys (sign-in results; later Shared Signals SETs): the newest active key signs, active
# and recently retired keys are published at the JWKS URL. `generation` is unique, so two processes racing to
# create the first key (or to rotate) insert one row, not two.
signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False, unique=True),
    sa.Column("algorithm", sa.String(16), nullable=False),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("public_jwk", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("retired_at", Micros, nullable=True),  # stops signing then; published until retired_at + grace
)

# Shared Signals streams (SSF 1.0): a receiver's subscription to scimjit's Security Event Tokens. `owner` is the
# name of the `ssf`-scoped token that created it (a receiver sees only its own streams); `method` is push
# (RFC 8935: scimjit POSTs each SET to `endpoint_url` with `authorization_header`) or poll (RFC 8936: the
# receiver fetches from scimjit and acknowledges). Owner module: store/ssf.py.
ssf_streams = sa.Table(
    "ssf_streams",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.String(256), nullable=False, index=True),
    sa.Column("method", sa.String(8), nullable=False),  # push | poll
    sa.Column("endpoint_url", sa.String(2048), nullable=True),  # push only
    sa.Column("authorization_header", sa.String(4096), nullable=True),  # push only; never shown back
    sa.Column("events_requested", Json, nullable=False),
    sa.Column("aud", sa.String(512), nullable=False),
    sa.Column("description", sa.String(512), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # enabled | paused | disabled
    sa.Column("reason", sa.String(512), nullable=True),
    sa.Column("created_at", Micros, nullable=False),
    sa.Column("updated_at", Micros, nullable=False),
)

# The subjects a stream asked for (default_subjects is NONE): an RFC 9493 subject identifier as the receiver
# sent it, and its normalised key (`email:<lower>`, `opaque:<id>`, `iss_sub:<iss> <sub>`) that emission looks up.
ssf_subjects = sa.Table(
    "ssf_subjects",
    metadata,
    sa.Column("stream_id", sa.String(64), primary_key=True),
    sa.Column("subject_key", sa.String(1024), primary_key=True),
    sa.Column("subject", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.Index("ix_ssf_subjects_subject_key", "subject_key"),
)

# SETs waiting for a poll stream's receiver (RFC 8936): written in the transaction of the change, like outbox
# rows; an acknowledgement deletes them, so an acknowledged SET is never returned again.
ssf_poll = sa.Table(
    "ssf_poll",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.String(64), nullable=False),
    sa.Column("jti", sa.String(64), nullable=False),
    sa.Column("claims", Json, nullable=False),
    sa.Column("created_at", Micros, nullable=False),
    sa.UniqueConstraint("stream_id", "jti"),
)
