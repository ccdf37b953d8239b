"""Login workloads: `POST /jit/v1/logins` with real RS256 ID tokens from a local issuer process.

- L1 (target 0.15 x the hello-world ceiling): logins of users whose account already exists, the hot path (token
  verified against the cached JWKS, two indexed reads, no connector call, no write).
- L2 (not in a default run): first logins, each creating an account through a webhook connector whose
  downstream is `b.sink_port()`.

`server_config` starts the issuer (a child process publishing discovery and the JWKS; this process keeps the
private key and signs the tokens) and returns the `[[applications]]` TOML. L1's accounts are seeded straight
into the ledger, fingerprinted exactly as a login would record them, with a fresh `last_login_at`, so the
measured logins find nothing to write.
"""

from __future__ import annotations

import atexit
import json
import sys
import time
import warnings
from typing import Any

import sqlalchemy as sa

from bench import data
from bench import server as servers
from bench.context import Bench
from bench.load import Result
from bench.registry import workload
from scimjit.clock import SystemClock, to_micros
from scimjit.entitlement import identity, ledger
from scimjit.scim.schema import GROUP_URN
from scimjit.store.memberships import SCIM_SOURCE
from scimjit.store.tables import accounts, audit_log, groups, memberships

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from authlib.jose import JsonWebKey, JsonWebSignature

APP = "bench-login"
GROUP_ID = "bench-login-users"
EXISTING = 2_000  # users with an account (L1 cycles through them)
FIRST = 5_000  # at most this many first logins are prepared for L2 (signing is ~1 ms each)


class _Issuer:
    """The signing key and the issuer child process (one per benchmark run)."""

    def __init__(self, b: Bench) -> None:
        self.key = JsonWebKey.generate_key("RSA", 2048, options={"kid": "bench-1"}, is_private=True)
        jwks = b.tmp / "bench-jwks.json"
        jwks.write_text(json.dumps({"keys": [self.key.as_dict(is_private=False)]}))
        port = servers.free_port()
        argv = [sys.executable, "-m", "bench.oidc_issuer", "--port", str(port), "--jwks", str(jwks)]
        health = "/.well-known/openid-configuration"
        self.server = servers.start("issuer", argv, port, b.tmp / "issuer.log", health_path=health)
        atexit.register(self.server.stop)
        self.url = f"http://127.0.0.1:{port}"
        self.jws = JsonWebSignature(["RS256"])

    def token(self, user_name: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": APP,
            "sub": user_name,
            "email": user_name,
            "email_verified": True,  # a real IdP's token for a verified address; the server requires it to match
            "iat": now,
            "exp": now + 3600,
        }
        header = {"alg": "RS256", "kid": "bench-1", "typ": "JWT"}
        return self.jws.serialize_compact(header, json.dumps(claims).encode(), self.key).decode()


_issuer: _Issuer | None = None


def server_config(b: Bench) -> str:
    """The application's TOML; L1 and L2 share it, so only the first call of a run returns it."""
    global _issuer
    if _issuer is not None:
        return ""
    _issuer = _Issuer(b)
    return f"""
[[applications]]
name = "{APP}"
issuer = "{_issuer.url}"
audience = ["{APP}"]
match = {{ claim = "email", attribute = "emails.value" }}
groups = ["{GROUP_ID}"]
on_first_login = "create"

[applications.connector]
type = "webhook"
url = "http://127.0.0.1:{b.sink_port()}/events"
secret = "bench"
"""


def _active(start: int, stop: int) -> list[int]:
    """Seeded users in [start, stop) that are active (bench.data makes every 50th inactive)."""
    return [i for i in range(start, stop) if data.user_doc(i).get("active", True)]


def _seed_group(b: Bench, members: list[int]) -> None:
    now = to_micros(SystemClock().now())
    with b.target.db.write() as conn:
        pk = conn.execute(sa.select(groups.c.pk).where(groups.c.id == GROUP_ID)).scalar()
        if pk is None:
            doc = {"schemas": [GROUP_URN], "displayName": GROUP_ID}
            pk = conn.execute(
                groups.insert()
                .values(
                    id=GROUP_ID,
                    display_name=GROUP_ID,
                    display_name_ci=GROUP_ID,
                    data=doc,
                    version=1,
                    created=now,
                    last_modified=now,
                )
                .returning(groups.c.pk)
            ).scalar_one()
        have = {
            r[0] for r in conn.execute(sa.select(memberships.c.member_id).where(memberships.c.group_pk == pk))
        }
        rows = [
            {"group_pk": pk, "member_id": data.user_id(i), "source": SCIM_SOURCE, "member_type": "User",
             "added_at": now, "expires_at": None}
            for i in members
            if data.user_id(i) not in have
        ]  # fmt: skip
        if rows:
            conn.execute(memberships.insert(), rows)


def _seed_accounts(b: Bench, members: list[int]) -> None:
    """Ledger rows as a first login would leave them (same profile fingerprint), last login just now."""
    now = to_micros(SystemClock().now())
    rows: list[dict[str, Any]] = []
    for i in members:
        doc = data.user_doc(i)
        subject = identity.Subject(data.user_id(i), doc["userName"], True, doc, None)
        rows.append(
            {"application": APP, "user_id": subject.user_id, "user_name": subject.user_name,
             "downstream_id": f"sink-{i}", "status": ledger.ACTIVE, "roles": [],
             "profile_hash": ledger.profile_hash(identity.render_user(subject)), "first_login_at": now,
             "last_login_at": now, "created_at": now, "updated_at": now, "version": 1}
        )  # fmt: skip
    with b.target.db.write() as conn:
        conn.execute(accounts.delete().where(accounts.c.application == APP))
        conn.execute(accounts.insert(), rows)


def _body(user: int) -> dict[str, str]:
    assert _issuer is not None
    return {"application": APP, "id_token": _issuer.token(data.user_name(user))}


@workload("L1", "login, existing account", target_share=0.15, server_config=server_config)
def login_existing(b: Bench) -> Result:
    members = _active(0, min(EXISTING, b.dataset.users))
    _seed_group(b, members)
    _seed_accounts(b, members)
    bodies = [_body(i) for i in members]
    return b.http([b.request("POST", "/jit/v1/logins", body) for body in bodies])


@workload("L2", "login, first (creates the account)", default=False, server_config=server_config)
def login_first(b: Bench) -> Result:
    start = min(EXISTING, b.dataset.users)
    members = _active(start, min(start + min(FIRST, b.unique_budget), b.dataset.users))
    _seed_group(b, members)
    with b.target.db.write() as conn:
        conn.execute(accounts.delete().where(accounts.c.application == APP, accounts.c.user_id.in_(
            [data.user_id(i) for i in members])))  # fmt: skip
    bodies = [_body(i) for i in members]
    result = b.http([b.request("POST", "/jit/v1/logins", body) for body in bodies], unique=True)
    own = _own_time(b)
    if own:
        q = {p: own[min(len(own) - 1, int(p * len(own)))] for p in (0.5, 0.9, 0.99)}
        result.extra["own_ms"] = {"p50": q[0.5], "p90": q[0.9], "p99": q[0.99], "logins": len(own)}
        b.notes.append(
            f"L2: a first login's own time, without its connector call (issue 13: <= 2 ms p50): p50 {q[0.5]:.2f} ms,"
            f" p90 {q[0.9]:.2f}, p99 {q[0.99]:.2f} over {len(own):,} logins (warm-up included); with more than"
            " one connection it includes the wait for the server, so measure it with --connections 1"
        )
    return result


def _own_time(b: Bench) -> list[float]:
    """Per first login: its request's `duration_ms` (the server's access log) less the `durationMs` of its
    connector call (the `connector.call` audit record of the same user), sorted."""
    took: dict[str, float] = {}
    for line in (b.tmp / "scimjit.log").read_text(errors="replace").splitlines():
        if '"scimjit.access"' in line and '"/jit/v1/logins"' in line:
            entry = json.loads(line)
            took[entry["request_id"]] = float(entry["duration_ms"])
    with b.target.db.read() as conn:
        calls = {
            details["userId"]: float(details["durationMs"])
            for (details,) in conn.execute(
                sa.select(audit_log.c.details).where(audit_log.c.action == "connector.call")
            )
            if details.get("operation") == "account.create"
        }
        logins = conn.execute(
            sa.select(audit_log.c.request_id, audit_log.c.resource_id).where(
                audit_log.c.action == "login.allowed"
            )
        ).all()
    return sorted(took[rid] - calls[uid] for rid, uid in logins if rid in took and uid in calls)
