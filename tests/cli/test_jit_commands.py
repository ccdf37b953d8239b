"""`scimjit apps list`, `outbox list`, `outbox retry`, `accounts list` and `worker --once`, through the real
command-line parser, against the test database and a config file."""

from __future__ import annotations

import asyncio
import json

import pytest

from scimjit.cli import main
from scimjit.clock import SystemClock
from scimjit.delivery import outbox
from tests.jit_helpers import WIKI_TOML, WebhookReceiver, add_group, add_user, engine_for, wiki_config


@pytest.fixture
def hook():
    with WebhookReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def env(db, tmp_path, monkeypatch, hook):
    config = tmp_path / "scimjit.toml"
    config.write_text(WIKI_TOML.format(issuer="http://127.0.0.1:9000", webhook=hook.url, extra="", jit=""))
    monkeypatch.setenv("SCIMJIT_CONFIG", str(config))
    monkeypatch.setenv("SCIMJIT_DATABASE_URL", db.url)
    return config


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_apps_list(env, capsys):
    code, out, _ = run(capsys, "apps", "list")
    assert code == 0
    assert "wiki" in out and "preferred_username -> userName" in out and "webhook" in out
    code, out, _ = run(capsys, "apps", "list", "--json")
    (app,) = json.loads(out)
    assert app["connector"] == {"type": "webhook", "url": app["connector"]["url"], "secret": "***"}
    env.write_text(env.read_text().replace('on_first_login = "create"', 'on_first_login = "sometimes"'))
    code, _, err = run(capsys, "apps", "list")
    assert code == 2 and "on_first_login" in err


def test_outbox_and_accounts_commands(db, env, capsys, hook):
    clock = SystemClock()
    alice = add_user(db, "alice")
    add_group(db, "wiki-users", [alice])
    event = outbox.new_event("account.update", "wiki", {"id": alice, "userName": "alice"}, [], clock.now())
    with db.write() as conn:
        outbox.enqueue(conn, event, user_id=alice, now=clock.now())
    hook.fail_next(400)
    engine = engine_for(db, clock, wiki_config("http://127.0.0.1:9000", hook.url))
    asyncio.run(engine.deliver_due())

    code, out, _ = run(capsys, "outbox", "list", "--status", "dead")
    assert code == 0 and "account.update" in out and "HTTP 400" in out
    code, out, _ = run(capsys, "outbox", "list", "--json")
    (listed,) = json.loads(out)
    assert listed["status"] == "dead" and listed["event"]["user"]["userName"] == "alice"
    code, _, err = run(capsys, "outbox", "retry")
    assert code == 2 and "--all-dead" in err
    code, out, _ = run(capsys, "outbox", "retry", "--all-dead")
    assert out.strip() == f"re-armed 1 event(s): {listed['id']}"

    code, out, _ = run(capsys, "worker", "--once")
    assert code == 0 and "1 delivery attempt(s)" in out
    assert [e["type"] for e in hook.events] == ["account.update"]
    code, out, _ = run(capsys, "outbox", "list", "--status", "dead")
    assert out.strip() == "no events"
    code, out, _ = run(capsys, "accounts", "list", "--application", "wiki")  # admin_commands extends it
    assert code == 0
