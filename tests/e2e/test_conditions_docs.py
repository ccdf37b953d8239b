"""The worked examples of conditions in docs/jit-provisioning.md ("Login conditions") and docs/jit-access.md
("Conditions of time and place"), run as written: each `<!-- example: NAME -->` marks the TOML or the table
that follows it; the TOML is the configuration and every table row is a step whose stated answer is
asserted, with a frozen clock, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from scimjit.jiterrors import JitError
from tests.access_helpers import Directory, clear_outbox, config, give_account, make_access, summary
from tests.jit_helpers import LocalIssuer, WebhookReceiver, add_group, add_user, engine_for

DOCS = Path(__file__).resolve().parents[2] / "docs"


def example(doc: str, name: str) -> str:
    """The block (```toml ... ```) or the table that follows `<!-- example: name -->` in docs/<doc>."""
    text = (DOCS / doc).read_text()
    marker = rf"<!-- example: {re.escape(name)} -->\n"
    found = re.search(marker + r"(?:```toml\n(.*?)```|(\|.*?)(?:\n\n|\Z))", text, re.S)
    assert found is not None, f"{doc} has no example {name!r}"
    return found.group(1) if found.group(1) is not None else found.group(2)


def rows(table: str) -> list[list[str]]:
    """The body rows of a Markdown table, cells stripped (the header and the rule left out)."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def issuer():
    with LocalIssuer().running() as iss:
        yield iss


def test_login_conditions_example(db, clock, issuer):
    text = example("jit-provisioning.md", "login-conditions")
    table = rows(example("jit-provisioning.md", "login-conditions-table"))
    assert len(table) >= 8
    with WebhookReceiver().running() as hook:
        raw = tomllib.loads(
            text.replace("http://127.0.0.1:9000", issuer.url).replace(
                "http://127.0.0.1:9100/events", hook.url
            )
        )
        engine = engine_for(db, clock, raw)
        add_group(db, "payroll-users", [add_user(db, "alice")])
        for at, client_ip, answer in table:
            clock.set(instant(at))
            token = issuer.token(clock.now().timestamp(), aud="payroll", preferred_username="alice")
            call = engine.login("payroll", token, client_ip=None if client_ip == "(none)" else client_ip)
            if answer == "200":
                assert asyncio.run(call).status_code == 200, (at, client_ip)
                continue
            status, reason, condition = answer.split()
            with pytest.raises(JitError) as excinfo:
                asyncio.run(call)
            assert (str(excinfo.value.status), excinfo.value.reason) == (status, reason), (at, client_ip)
            assert excinfo.value.detail.startswith(f"{condition}: "), (at, client_ip, excinfo.value.detail)


def _policy_access(db, clock):
    access = make_access(db, clock, config(jit=example("jit-access.md", "policy-conditions")))
    directory = Directory(db, clock, access)
    alice = directory.user("alice")
    directory.group("wiki-users", [alice])
    prod = directory.group("prod-admins")
    directory.group("sre-leads", [directory.user("sam")])
    give_account(db, "wiki", alice)
    clear_outbox(db)
    return access, directory, alice, prod


def test_policy_conditions_example(db, clock):
    access, _, alice, _ = _policy_access(db, clock)
    table = rows(example("jit-access.md", "policy-conditions-table"))
    assert len(table) >= 4
    for at, client_ip, answer in table:
        clock.set(instant(at))
        doc = access.create_request(
            user=alice,
            group="prod-admins",
            duration="1h",
            justification="docs example",
            requested_by="bot",
            client_ip=client_ip,
        )
        assert doc["status"] == answer, (at, client_ip)


def test_grant_windows_example(db, clock):
    table = rows(example("jit-access.md", "grant-windows-table"))
    clock.set(instant(table[0][0]))
    access, directory, alice, prod = _policy_access(db, clock)
    for at, step, member, expected in table:
        clock.set(instant(at))
        if step == "grant":
            access.create_grant(user=alice, group="prod-admins", duration="7d", actor="admin")
        elif step == "sweep":
            access.sweeper.sweep_once()
        members = [m["value"] for m in directory.read_group(prod).get("members", [])]
        groups = [g["display"] for g in directory.read_user(alice).get("groups", [])]
        assert (members == [alice]) == (member == "yes") == ("prod-admins" in groups), (at, step)
        assert [e[0] for e in summary(db)] == expected.split(), (at, step)
        clear_outbox(db)
