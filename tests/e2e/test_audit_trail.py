"""The whole audit trail, end to end, read back through GET /jit/v1/audit: every kind of event (login allowed
and refused with the reason, connector call and its result, grant create/extend/revoke/expire, request
create/approve/deny/expire and a refused self-approval) with who, what, when and the outcome; the JIT
metrics those events move; and no secret (ID token, webhook secret, API tokens) in the trail or the logs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from scimjit.config import Settings
from scimjit.http.app import create_app
from scimjit.jiterrors import JitError
from scimjit.logs import configure
from scimjit.services import Services
from tests.access_helpers import POLICY, config
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user
from tests.live_server import serve


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    logger = logging.getLogger("scimjit")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    configure("info", stream=buf)
    yield buf
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_every_kind_of_event_is_audited_and_no_secret_is_recorded_or_logged(db, clock, issuer, logs):
    with WebhookReceiver().running() as hook:
        raw = config(hook.url, issuer=issuer.url, jit=POLICY.format(approvals=1))
        settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
        services = Services.build(settings, db=db, clock=clock)
        access = services.access
        ids = {name: add_user(db, name) for name in ("alice", "bob", "mallory")}
        add_group(db, "wiki-users", [ids["alice"]])
        add_group(db, "engineers", [ids["alice"], ids["bob"]])
        add_group(db, "sre-leads", [ids["bob"]])
        add_group(db, "prod-admins")
        admin = services.tokens.create("auditor", ["admin"])
        login_token = services.tokens.create("wiki-login", ["login"], application="wiki")
        before = {
            "allowed": sample("scimjit_logins_total", application="wiki", outcome="allowed"),
            "refused": sample("scimjit_logins_total", application="wiki", outcome="refused"),
            "done": sample("scimjit_outbox_deliveries_total", application="wiki", outcome="done"),
            "grant": sample("scimjit_expirations_total", kind="grant"),
            "calls": sample(
                "scimjit_connector_call_duration_seconds_count",
                application="wiki",
                operation="account.create",
            ),
        }
        alice_token = issuer.token(clock.now().timestamp(), preferred_username="alice")
        mallory_token = issuer.token(clock.now().timestamp(), preferred_username="mallory")

        with serve(create_app(services=services)) as url:

            def login(id_token: str, request_id: str) -> httpx.Response:
                return httpx.post(
                    f"{url}/jit/v1/logins",
                    json={"application": "wiki", "id_token": id_token},
                    headers={"Authorization": f"Bearer {login_token}", "X-Request-Id": request_id},
                    timeout=30,
                )

            assert login(alice_token, "login-alice").status_code == 200
            assert login(mallory_token, "login-mallory").json()["error"] == "not_entitled"
            assert login("not-a-jwt", "login-garbage").json()["error"] == "invalid_token"

            grant = access.create_grant(
                user="alice", group="prod-admins", duration="1h", justification="INC-42", actor="auditor"
            )
            access.extend_grant(grant["id"], duration="30m", actor="auditor")
            access.revoke_grant(grant["id"], actor="auditor", reason="done early")
            short = access.create_grant(user="alice", group="prod-admins", duration="10m", actor="auditor")
            approved = access.create_request(
                user="alice", group="prod-admins", duration="2h", justification="deploy", requested_by="alice"
            )
            with pytest.raises(JitError):
                access.decide(approved["id"], approver="alice", decision="approve", actor="alice")
            access.decide(approved["id"], approver="bob", decision="approve", comment="ok", actor="bob")
            denied = access.create_request(
                user="alice", group="prod-admins", duration="2h", justification="again", requested_by="alice"
            )
            access.decide(denied["id"], approver="bob", decision="deny", actor="bob")
            lapsing = access.create_request(
                user="alice", group="prod-admins", duration="1h", justification="later", requested_by="alice"
            )
            clock.advance(hours=25)  # past the short grant, the approved grant and the pending request's TTL
            access.sweeper.sweep_once()

            r = httpx.get(
                f"{url}/jit/v1/audit",
                params={"count": 1000, "sortBy": "id"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert r.status_code == 200
            trail: list[dict[str, Any]] = r.json()["Resources"]
            export = httpx.get(
                f"{url}/jit/v1/audit",
                params={"format": "jsonl"},
                headers={"Authorization": f"Bearer {admin}"},
            ).text

    def find(action: str, outcome: str | None = None, resource_id: str | None = None) -> dict[str, Any]:
        for record in trail:
            if record["action"] == action and outcome in (None, record["outcome"]):
                if resource_id in (None, record.get("resourceId")):
                    return record
        raise AssertionError(
            f"no {action} {outcome or ''} {resource_id or ''} in {[x['action'] for x in trail]}"
        )

    allowed = find("login.allowed", "allowed")
    assert allowed["requestId"] == "login-alice" and allowed["at"].endswith("Z")
    refused = find("login.refused", "refused")
    assert refused["details"]["reason"] == "not_entitled" and refused["requestId"] == "login-mallory"
    assert any(x["details"].get("reason") == "invalid_token" for x in trail if x["action"] == "login.refused")
    call = find("connector.call", "success")
    assert call["resourceType"] == "OutboxEvent" and call["details"]
    assert find("grant.create", resource_id=grant["id"])["actor"] == "auditor"
    assert find("grant.extend", resource_id=grant["id"])["outcome"] == "success"
    assert find("grant.revoke", resource_id=grant["id"])["details"]
    assert find("grant.expire", resource_id=short["id"])["actor"] == "sweeper"
    assert find("request.create", resource_id=approved["id"])
    assert find("request.approve", "refused", approved["id"])["actor"] == "alice"  # self-approval
    assert find("request.approve", "success", approved["id"])["actor"] == "bob"
    assert find("request.deny", resource_id=denied["id"])["actor"] == "bob"
    assert find("request.expire", resource_id=lapsing["id"])
    for record in trail:
        assert record["actor"] and record["outcome"] and record["at"] and record["action"]
    assert len(export.splitlines()) == len(trail)

    secrets = [alice_token, mallory_token, "change-me", admin, login_token, admin.split("_", 2)[2]]
    everything = orjson.dumps(trail).decode() + export + logs.getvalue()
    for secret in secrets:
        assert secret not in everything
    assert '"logger":"scimjit.access"' in logs.getvalue()  # the logs were captured

    assert sample("scimjit_logins_total", application="wiki", outcome="allowed") - before["allowed"] == 1
    assert sample("scimjit_logins_total", application="wiki", outcome="refused") - before["refused"] == 2
    assert sample("scimjit_outbox_deliveries_total", application="wiki", outcome="done") - before["done"] >= 1
    assert sample("scimjit_expirations_total", kind="grant") - before["grant"] >= 1
    calls = sample(
        "scimjit_connector_call_duration_seconds_count", application="wiki", operation="account.create"
    )
    assert calls - before["calls"] == 1


def test_the_sweeper_applies_audit_retention(db, clock):
    from datetime import timedelta

    from scimjit.clock import to_micros
    from scimjit.store import audit
    from tests.access_helpers import make_access

    access = make_access(db, clock, config())
    access.sweeper.audit_retention = 30 * 86400
    with db.write() as conn:
        for days in (40, 31, 29, 1):
            audit.record(
                conn,
                actor="t",
                action="scim.user.create",
                outcome="success",
                at_micros=to_micros(clock.now() - timedelta(days=days)),
            )
    access.sweeper.sweep_once()
    with db.read() as conn:
        left = conn.exec_driver_sql("SELECT count(*) FROM audit_log").scalar_one()
    assert left == 2
