"""An application's login conditions (time windows in a named zone, client networks), with a frozen clock, on
SQLite and PostgreSQL: outside them the login hook answers 403 `condition_not_met` naming the condition,
audits it with the address, and writes no account; inside them the login goes on as before. Also over
HTTP: the hook's optional `client_ip` field."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa

from scimjit.config import Settings
from scimjit.entitlement import ledger
from scimjit.http.app import create_app
from scimjit.jiterrors import JitError
from scimjit.services import Services
from scimjit.store.tables import audit_log
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user, engine_for, wiki_config
from tests.live_server import serve

CONDITIONS = (
    'conditions = { windows = [{ days = "Mon-Fri", from = "07:00", to = "19:00", tz = "Europe/Amsterdam" }], '
    'networks = ["10.0.0.0/8", "2001:db8::/32"] }'
)


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def wiki(db, clock, issuer, hook):
    alice = add_user(db, "alice")
    add_group(db, "wiki-users", [alice])
    clock.set(datetime(2030, 1, 7, 9, tzinfo=UTC))  # Monday 10:00 in Amsterdam
    return engine_for(db, clock, wiki_config(issuer.url, hook.url, extra=CONDITIONS)), alice


def login(engine, issuer, clock, client_ip):
    token = issuer.token(clock.now().timestamp(), preferred_username="alice")
    return asyncio.run(engine.login("wiki", token, caller="wiki-token", client_ip=client_ip))


def refused(engine, issuer, clock, client_ip) -> JitError:
    with pytest.raises(JitError) as excinfo:
        login(engine, issuer, clock, client_ip)
    return excinfo.value


def refusal_records(db):
    with db.read() as conn:
        return (
            conn.execute(sa.select(audit_log.c.details).where(audit_log.c.action == "login.refused"))
            .scalars()
            .all()
        )


def test_outside_the_window_the_login_is_refused_and_audited(db, clock, issuer, wiki):
    engine, alice = wiki
    clock.set(datetime(2030, 1, 7, 18, tzinfo=UTC))  # Monday 19:00 in Amsterdam: the window's end
    exc = refused(engine, issuer, clock, "10.1.2.3")
    assert (exc.status, exc.reason) == (403, "condition_not_met")
    assert exc.detail == "window: outside the allowed time window(s): Mon-Fri 07:00-19:00 Europe/Amsterdam"
    [details] = refusal_records(db)
    assert details["reason"] == "condition_not_met"
    assert details["condition"] == "window" and details["clientIp"] == "10.1.2.3"
    with db.read() as conn:
        assert ledger.get(conn, "wiki", alice) is None  # nothing written


def test_outside_the_networks_the_login_is_refused(db, clock, issuer, wiki):
    engine, _ = wiki
    exc = refused(engine, issuer, clock, "192.0.2.7")
    assert exc.reason == "condition_not_met"
    assert exc.detail.startswith("network: the client address 192.0.2.7 is not in the allowed networks")
    exc = refused(engine, issuer, clock, None)  # an application that sends no client_ip
    assert "unknown" in exc.detail
    assert [d["condition"] for d in refusal_records(db)] == ["network", "network"]


def test_inside_the_conditions_the_login_goes_on(db, clock, issuer, wiki):
    engine, alice = wiki
    result = login(engine, issuer, clock, "2001:db8::42")
    assert result.status_code == 200
    with db.read() as conn:
        assert ledger.get(conn, "wiki", alice).status == ledger.ACTIVE


def test_the_login_hook_takes_client_ip_over_http(db, clock, issuer, hook):
    alice = add_user(db, "alice")
    add_group(db, "wiki-users", [alice])
    clock.set(datetime(2030, 1, 7, 9, tzinfo=UTC))
    raw = wiki_config(issuer.url, hook.url, extra=CONDITIONS)
    settings = Settings.load(environ={}, database_url=db.url, token_cache_seconds=0, document=raw)
    services = Services.build(settings, db=db, clock=clock)
    auth = {"Authorization": f"Bearer {services.tokens.create('wiki-login', ['login'], application='wiki')}"}
    admin = {"Authorization": f"Bearer {services.tokens.create('admin', ['admin'])}"}
    with serve(create_app(services=services)) as url, httpx.Client(base_url=url, timeout=30) as http:
        token = issuer.token(clock.now().timestamp(), preferred_username="alice")

        def hook_call(client_ip):
            body = {"application": "wiki", "id_token": token, "client_ip": client_ip}
            return http.post("/jit/v1/logins", json=body, headers=auth)

        bad = hook_call("192.0.2.1")  # the socket peer is 127.0.0.1: only the field counts
        assert bad.status_code == 403
        assert bad.json()["error"] == "condition_not_met"
        assert bad.json()["detail"].startswith("network:")
        assert hook_call(10).status_code == 400
        good = hook_call("10.0.0.1")
        assert good.status_code == 200, good.text
        apps = http.get("/jit/v1/apps", headers=admin).json()["applications"]
        assert apps[0]["conditions"]["networks"] == ["10.0.0.0/8", "2001:db8::/32"]
