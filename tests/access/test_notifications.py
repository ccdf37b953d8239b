"""Notifications (SQLite and PostgreSQL, frozen clock, real servers on 127.0.0.1): request.created mails each
approver once, request.decided the requester, access.expiring the user; an SMTP server that answers 451 or is
down is retried and the mail arrives once; the Slack-compatible webhook gets one Block Kit message per event;
the `[notifications] applications` connectors get `notify`."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from scimjit.access import notify
from scimjit.config import ConfigError, Settings
from scimjit.delivery import notifiers
from scimjit.scim.schema import USER_URN
from scimjit.services import EngineParts, Services
from scimjit.store import resources as ops
from scimjit.store.tables import outbox
from tests.access_helpers import POLICY, Directory, clear_outbox, config, make_access
from tests.certs import self_signed
from tests.jit_helpers import WebhookReceiver, _QuietHandler, _serve

BASE = "https://scimjit.example"


class Mailbox:
    """An in-process SMTP server (aiosmtpd) that keeps what it accepted and can be told to answer 451."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.mails: list[tuple[list[str], Message]] = []
        self.refuse = 0  # answer the next N messages with 451
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.mails.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"

    def start(self, **options: Any) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[Message]:
        return [m for rcpt, m in self.mails if address in rcpt]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlackReceiver:
    """A Slack-compatible incoming webhook: records each JSON body; can be told to fail."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.script: list[int] = []
        self.url = ""
        self._lock = threading.Lock()

    @contextmanager
    def running(self) -> Iterator[SlackReceiver]:
        receiver = self

        class Handler(_QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    if status == 200:
                        receiver.messages.append(json.loads(body))
                answer = b"ok" if status == 200 else b"error"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        with _serve(Handler) as url:
            self.url = url + "/services/T0/B0/x"
            yield self


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.start()
    yield box
    box.stop()


@pytest.fixture
def slack() -> Iterator[SlackReceiver]:
    with SlackReceiver().running() as receiver:
        yield receiver


@pytest.fixture
def apps() -> Iterator[WebhookReceiver]:
    with WebhookReceiver().running() as receiver:
        yield receiver


def settings_doc(mailbox: Mailbox, slack: SlackReceiver, apps: WebhookReceiver) -> dict[str, Any]:
    raw = config(apps.url, jit=POLICY.format(approvals=1))
    raw["server"] = {"base_url": BASE + "/"}
    raw["notifications"] = {
        "email": {"host": "127.0.0.1", "port": mailbox.port, "starttls": False, "from": "jit@example.com"},
        "slack_webhook_url": slack.url,
        "applications": ["chat"],
    }
    return raw


@pytest.fixture
def access(db, clock, mailbox, slack, apps):
    access = make_access(db, clock, settings_doc(mailbox, slack, apps))
    yield access
    asyncio.run(access.engine.aclose())


def user(d: Directory, name: str, emails: list[dict[str, Any]] | None = None, active: bool = True) -> str:
    doc: dict[str, Any] = {
        "schemas": [USER_URN],
        "userName": name,
        "active": active,
        "displayName": name.title(),
    }
    if emails:
        doc["emails"] = emails
    return str(ops.create_user(d.ctx(), doc).document["id"])


@pytest.fixture
def people(db, clock, access):
    """alice asks (engineer, also in sre-leads); bob (primary email), erin (work email), carol (no email) and
    ivan (inactive) are the SRE leads."""
    d = Directory(db, clock, access)
    ids = {
        "alice": user(d, "alice", [{"value": "alice@example.com", "type": "work"}]),
        "bob": user(d, "bob", [{"value": "bob@home.example"}, {"value": "bob@example.com", "primary": True}]),
        "erin": user(
            d,
            "erin",
            [{"value": "erin@home.example", "type": "home"}, {"value": "erin@example.com", "type": "work"}],
        ),
        "carol": user(d, "carol"),
        "ivan": user(d, "ivan", [{"value": "ivan@example.com"}], active=False),
    }
    d.group("engineers", [ids["alice"], ids["bob"]])
    d.group("sre-leads", [ids["alice"], ids["bob"], ids["erin"], ids["carol"], ids["ivan"]])
    d.group("prod-admins")
    clear_outbox(db)
    return ids


def ask(access, who="alice", duration="4h"):
    return access.create_request(
        user=who, group="prod-admins", duration=duration, justification="deploy 1.2", requested_by="t"
    )


def deliver(access) -> list[Any]:
    return asyncio.run(access.engine.deliverer.deliver_due())


def drain(access) -> list[Any]:
    return asyncio.run(access.engine.deliverer.drain())


def rows(db) -> list[tuple[str, str, str]]:
    with db.read() as conn:
        return [
            (r.type, r.application, r.status) for r in conn.execute(sa.select(outbox).order_by(outbox.c.id))
        ]


def test_request_created_mails_each_approver_once(db, clock, access, people, mailbox, slack, apps):
    request = ask(access)
    drain(access)
    # bob at his primary address, erin at her work one; never alice (the requester), carol has no email,
    # ivan is inactive
    assert sorted(r for rcpt, _ in mailbox.mails for r in rcpt) == ["bob@example.com", "erin@example.com"]
    mail = mailbox.to("bob@example.com")[0]
    assert mail["Subject"] == "Access request: alice asks for prod-admins"
    assert mail["From"] == "jit@example.com"
    text = mail.get_payload(decode=True).decode()
    assert "deploy 1.2" in text and "4h00m" in text
    assert f"{BASE}/console/requests/{request['id']}" in text
    with db.read() as conn:
        event_ids = (
            conn.execute(
                sa.select(outbox.c.event_id)
                .where(outbox.c.application == "notify:email")
                .order_by(outbox.c.id)
            )
            .scalars()
            .all()
        )
    assert sorted(m["Message-ID"] for _, m in mailbox.mails) == sorted(f"<{e}@scimjit>" for e in event_ids)
    # the approvers are named once in one Slack message; the `chat` connector is told per approver
    assert len(slack.messages) == 1
    assert "bob, carol, erin" in json.dumps(slack.messages[0])
    assert sorted(e["recipient"]["userName"] for e in apps.of_type("request.created")) == [
        "bob",
        "carol",
        "erin",
    ]
    assert {e["application"] for e in apps.of_type("request.created")} == {"chat"}
    assert all(status == "done" for _, _, status in rows(db))
    # nothing more, however often the worker runs
    clock.advance(3600)
    assert drain(access) == []
    assert len(mailbox.mails) == 2 and len(slack.messages) == 1


def test_smtp_451_is_retried_and_delivered_once(db, clock, access, people, mailbox):
    mailbox.refuse = 1
    ask(access)
    first = [r for r in deliver(access) if r.id in _email_rows(db)]
    assert sorted(r.status for r in first) == ["done", "pending"]  # one of the two mails met the 451
    assert "451" in next(r.error for r in first if r.status == "pending")
    assert len(mailbox.mails) == 1
    assert [r for r in deliver(access) if r.id in _email_rows(db)] == []  # not due before its backoff
    assert len(mailbox.mails) == 1
    clock.advance(60)
    drain(access)
    assert sorted(r for rcpt, _ in mailbox.mails for r in rcpt) == ["bob@example.com", "erin@example.com"]


def test_smtp_server_down_is_retried_and_delivered_once(db, clock, access, people, mailbox):
    mailbox.stop()
    ask(access)
    reports = [r for r in deliver(access) if r.id in _email_rows(db)]
    assert [r.status for r in reports] == ["pending", "pending"]
    assert all("ConnectionRefusedError" in (r.error or "") for r in reports)
    mailbox.start()
    clock.advance(60)
    drain(access)
    clock.advance(3600)
    drain(access)
    assert sorted(r for rcpt, _ in mailbox.mails for r in rcpt) == ["bob@example.com", "erin@example.com"]
    with db.read() as conn:
        done = conn.execute(
            sa.select(outbox.c.status, outbox.c.attempts).where(outbox.c.application == "notify:email")
        ).all()
    assert sorted(done) == [("done", 2), ("done", 2)]


def test_request_decided_reaches_the_requester(db, clock, access, people, mailbox, slack, apps):
    denied = ask(access)
    approved = ask(access, duration="2h")
    drain(access)
    mailbox.mails.clear()
    slack.messages.clear()
    access.decide(denied["id"], approver="bob", decision="deny", comment="not during the freeze", actor="t")
    access.decide(approved["id"], approver="erin", decision="approve", comment=None, actor="t")
    drain(access)
    mails = mailbox.to("alice@example.com")
    assert [m["Subject"] for m in mails] == [
        "Your request for prod-admins was denied",
        "Your request for prod-admins was approved",
    ]
    assert len(mailbox.mails) == 2  # the requester only
    text = mails[0].get_payload(decode=True).decode()
    assert "denied by bob" in text and "Comment: not during the freeze" in text
    assert f"{BASE}/console/requests/{denied['id']}" in text
    assert "approved by erin" in mails[1].get_payload(decode=True).decode()
    assert [m["text"] for m in slack.messages] == [m["Subject"] for m in mails]
    decided = apps.of_type("request.decided")
    assert [
        (e["recipient"]["userName"], e["request"]["status"], e["request"]["decidedBy"]) for e in decided
    ] == [
        ("alice", "denied", "bob"),
        ("alice", "approved", "erin"),
    ]
    assert decided[1]["request"]["grantId"]


def test_access_expiring_reaches_the_user(db, clock, access, people, mailbox, apps):
    access.create_grant(user="alice", group="prod-admins", duration="20m", justification="hotfix", actor="t")
    clock.advance(6 * 60)  # within the 15 minutes' notice
    access.sweeper.sweep_once()
    drain(access)
    mails = mailbox.to("alice@example.com")
    assert len(mails) == 1 and len(mailbox.mails) == 1
    assert mails[0]["Subject"] == "Your access to prod-admins ends at 2030-01-01T00:20:00Z"
    assert f"{BASE}/console" in mails[0].get_payload(decode=True).decode()
    expiring = apps.of_type("access.expiring")
    assert [(e["application"], e["user"]["userName"]) for e in expiring] == [("chat", "alice")]
    clock.advance(60)
    access.sweeper.sweep_once()
    drain(access)
    assert len(mailbox.mails) == 1  # once per grant


def test_slack_gets_one_block_kit_message_retried_after_a_failure(db, clock, access, people, slack):
    slack.script = [503]
    request = ask(access)
    drain(access)
    assert slack.messages == []
    clock.advance(60)
    drain(access)
    assert len(slack.messages) == 1
    message = slack.messages[0]
    assert message["text"] == "Access request: alice asks for prod-admins"
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds == ["header", "section", "context", "actions"]
    assert message["blocks"][0]["text"] == {"type": "plain_text", "text": message["text"]}
    assert (
        message["blocks"][1]["text"]["type"] == "mrkdwn"
        and "deploy 1.2" in message["blocks"][1]["text"]["text"]
    )
    assert message["blocks"][2]["elements"][0]["text"] == "For: bob, carol, erin"
    button = message["blocks"][3]["elements"][0]
    assert button["type"] == "button" and button["url"] == f"{BASE}/console/requests/{request['id']}"


def test_auto_approved_requests_tell_nobody(db, clock, access, people):
    Directory(db, clock, access).group("oncall", [people["alice"]])
    clear_outbox(db)
    assert ask(access, duration="30m")["status"] == "approved"
    assert [t for t, _, _ in rows(db) if t.startswith("request.")] == []


def _email_rows(db) -> set[int]:
    with db.read() as conn:
        return set(
            conn.execute(sa.select(outbox.c.id).where(outbox.c.application == "notify:email")).scalars()
        )


# ---------------------------------------------------------------- configuration


def _load(notifications: dict[str, Any], **env: str) -> Services:
    raw = config()
    raw["notifications"] = notifications
    return Services.build(Settings.load(environ=env, document=raw))


def test_secrets_come_from_the_environment():
    email = {"host": "127.0.0.1", "from": "jit@example.com", "username": "u", "password_env": "SMTP_PASSWORD"}
    with pytest.raises(ConfigError, match="SMTP_PASSWORD"):
        _ = _load({"email": email}).engine
    with pytest.raises(ConfigError, match="SLACK_URL"):
        _ = _load({"slack_webhook_url_env": "SLACK_URL"}).engine
    with pytest.raises(ConfigError, match="https://"):
        _ = _load({"slack_webhook_url": "http://hooks.example/x"}).engine


def test_unknown_notification_applications_and_reserved_names_are_refused():
    with pytest.raises(ConfigError, match="no application named nope"):
        _ = _load({"applications": ["nope"]}).access
    raw = config()
    raw["applications"][0]["name"] = "notify:email"
    with pytest.raises(ConfigError, match="reserved"):
        Settings.load(environ={}, document=raw)
    with pytest.raises(ConfigError, match="from"):
        Settings.load(environ={}, document={"notifications": {"email": {"host": "smtp.example"}}})


# ---------------------------------------------------------------- STARTTLS and AUTH


def test_starttls_and_auth(db, clock, tmp_path, slack, apps, monkeypatch):
    cert, key = self_signed(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins: list[tuple[bytes, bool]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"scimjit", b"s3cret")
        logins.append((data.login, bool(session.ssl)))
        return AuthResult(success=ok)

    box = Mailbox()
    box.start(tls_context=tls, require_starttls=True, authenticator=authenticator, auth_require_tls=True)
    try:
        raw = settings_doc(box, slack, apps)
        raw["notifications"]["email"].update(
            starttls=True, username="scimjit", password_env="SMTP_PASSWORD", ca_file=str(cert)
        )
        monkeypatch.setenv("SMTP_PASSWORD", "s3cret")  # *_env secrets are read from the process environment
        settings = Settings.load(environ={}, document=raw)
        access = Services.build(settings, db=db, clock=clock, parts=EngineParts()).access
        d = Directory(db, clock, access)
        alice = user(d, "alice", [{"value": "alice@example.com"}])
        bob = user(d, "bob", [{"value": "bob@example.com"}])
        d.group("engineers", [alice])
        d.group("sre-leads", [bob])
        d.group("prod-admins")
        ask(access)
        drain(access)
        assert [rcpt for rcpt, _ in box.mails] == [["bob@example.com"]]
        assert logins == [(b"scimjit", True)]  # authenticated, inside TLS
        asyncio.run(access.engine.aclose())
    finally:
        box.stop()


def test_the_documented_configuration_loads():
    text = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text()
    block = re.findall(r"```toml\n(.*?)```", text, re.S)[0]
    settings = Settings.load(environ={}, document=tomllib.loads(block))
    email = settings.notifications.email
    assert email is not None and (email.host, email.port, email.starttls, email.sender) == (
        "smtp.example.com",
        587,
        True,
        "jit@example.com",
    )
    env = {"SMTP_PASSWORD": "x", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/x"}
    assert sorted(notifiers.build(settings.notifications, 5.0, env)) == ["notify:email", "notify:slack"]


def test_a_relay_without_starttls_gets_no_plain_text_mail(db, clock, mailbox, slack, apps):
    raw = settings_doc(mailbox, slack, apps)
    raw["notifications"]["email"]["starttls"] = True  # the test relay offers no STARTTLS
    access = make_access(db, clock, raw)
    d = Directory(db, clock, access)
    d.group("engineers", [user(d, "alice")])
    d.group("sre-leads", [user(d, "bob", [{"value": "bob@example.com"}])])
    d.group("prod-admins")
    ask(access)
    mail = [r for r in drain(access) if r.id in _email_rows(db)]
    assert [r.status for r in mail] == ["dead"] and "starttls" in (mail[0].error or "").lower()
    assert mailbox.mails == []
    asyncio.run(access.engine.aclose())


def test_an_address_that_would_inject_smtp_commands_is_never_sent(db, clock, access, mailbox):
    d = Directory(db, clock, access)
    d.group("engineers", [user(d, "alice")])
    evil = "bob@example.com>\r\nRCPT TO:<mallory@example.com"
    d.group("sre-leads", [user(d, "bob", [{"value": evil}])])
    d.group("prod-admins")
    clear_outbox(db)
    ask(access)
    mail = [r for r in drain(access) if r.id in _email_rows(db)]
    assert [r.status for r in mail] == ["dead"] and "not a valid address" in (mail[0].error or "")
    assert mailbox.mails == []


def test_the_approvers_told_are_bounded(db, clock, access, people, mailbox, monkeypatch):
    monkeypatch.setattr(notify, "MAX_APPROVERS", 2)
    ask(access)
    with db.read() as conn:
        told = (
            conn.execute(
                sa.select(outbox.c.payload).where(
                    outbox.c.type == "request.created", outbox.c.application == "chat"
                )
            )
            .scalars()
            .all()
        )
    assert sorted(e["recipient"]["userName"] for e in told) == ["bob", "carol"]
