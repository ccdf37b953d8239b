"""The built-in notifiers: email over SMTP and a Slack-compatible incoming webhook.

They are delivered like every outbox event: scimjit/access/notify.py writes one outbox row per (event,
recipient, channel) whose `application` is the channel's reserved name (`notify:email`, `notify:slack`), and
the deliverer finds the notifier under that name exactly as it finds an application's connector, calls its
`notify` and records done / retry with backoff / dead. So a notification survives a restart, is retried
after an SMTP or Slack outage and shows up among the dead letters like any event; its stable event id (the
idempotency key) is also the mail's Message-ID.

SMTP is stdlib `smtplib` run in a worker thread (`asyncio.to_thread`): it does STARTTLS and AUTH, needs no
new dependency, and a mail per decision is far too rare for the thread hop to matter. A 4xx reply (the
relay is busy, greylisting, 451) or a dropped connection is transient (retried); a 5xx reply (recipient
refused, bad credentials) is permanent (dead letter, replayable once fixed).
"""

from __future__ import annotations

import asyncio
import logging
import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import httpx

from scimjit.config import ConfigError, EmailConfig, NotificationsConfig, check_url
from scimjit.delivery.connectors.base import (
    ACCESS_EXPIRING,
    REQUEST_CREATED,
    Call,
    Outcome,
    PermanentError,
    Result,
    TransientError,
)
from scimjit.delivery.httpclient import LoopClient

log = logging.getLogger("scimjit.notify")

EMAIL = "notify:email"  # the outbox `application` of a mail
SLACK = "notify:slack"  # ... and of a Slack message


class Notifier:
    """A connector that only notifies: the account methods are refused (no outbox row ever asks them)."""

    async def notify(self, call: Call) -> Result:
        raise NotImplementedError

    async def _refuse(self, call: Call) -> Result:
        raise PermanentError(f"{type(self).__name__} only delivers notifications, not {call.type}")

    create_account = update_account = disable_account = enable_account = _refuse
    delete_account = grant = revoke = _refuse

    async def aclose(self) -> None:
        return None


# ---------------------------------------------------------------- the message, shared by both channels


def one_line(value: Any, limit: int = 200) -> str:
    """A SCIM-supplied name or text as one bounded line (no header injection, no runaway subjects)."""
    return " ".join(str(value or "").split())[:limit]


def subject(event: Mapping[str, Any]) -> str:
    request = event.get("request") or {}
    group = one_line(request.get("groupName") or (event.get("grant") or {}).get("groupName"))
    if event["type"] == REQUEST_CREATED:
        who = one_line((request.get("requester") or {}).get("userName"))
        return f"Access request: {who} asks for {group}"
    if event["type"] == ACCESS_EXPIRING:
        return f"Your access to {group} ends at {event.get('expiresAt')}"
    return f"Your request for {group} was {one_line(request.get('status'))}"


def body(event: Mapping[str, Any]) -> str:
    """The plain-text body: what happened, the facts an approver or requester decides on, the link."""
    request = event.get("request") or {}
    lines: list[str] = []
    if event["type"] == REQUEST_CREATED:
        requester = request.get("requester") or {}
        lines += [
            f"{one_line(requester.get('displayName') or requester.get('userName'))} "
            f"({one_line(requester.get('userName'))}) asks for {one_line(request.get('groupName'))} "
            f"for {_duration(request.get('durationSeconds'))}.",
            f"Justification: {one_line(request.get('justification'), 2000)}",
            f"The request waits for a decision until {request.get('expiresAt')}.",
        ]
    elif event["type"] == ACCESS_EXPIRING:
        grant = event.get("grant") or {}
        lines += [f"Your access to {one_line(grant.get('groupName'))} ends at {grant.get('expiresAt')}."]
    else:
        lines += [
            f"Your request for {one_line(request.get('groupName'))} was {one_line(request.get('status'))} "
            f"by {one_line(request.get('decidedBy'))}."
        ]
        if request.get("comment"):
            lines.append(f"Comment: {one_line(request.get('comment'), 2000)}")
    if event.get("link"):
        lines.append(f"Open: {event['link']}")
    return "\n".join(lines) + "\n"


def _duration(seconds: Any) -> str:
    s = int(seconds or 0)
    hours, rest = divmod(s, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m"


# ---------------------------------------------------------------- email


class EmailNotifier(Notifier):
    def __init__(self, config: EmailConfig, password: str) -> None:
        self.config = config
        self._password = password

    def __repr__(self) -> str:  # never show the password
        return f"EmailNotifier(host={self.config.host!r}, port={self.config.port})"

    async def notify(self, call: Call) -> Result:
        to = (call.event.get("recipient") or {}).get("email")
        if not to:
            raise PermanentError("the recipient has no email address")
        if not valid_address(to):
            raise PermanentError(f"the recipient's email {one_line(to)!r} is not a valid address")
        message = self.message(call.event, str(to))
        await asyncio.to_thread(self._send, message, str(to))
        return Result(Outcome.NOTIFIED, None, {"to": to})

    def message(self, event: Mapping[str, Any], to: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.config.sender
        msg["To"] = to
        msg["Subject"] = subject(event)
        # The idempotency key: a receiving system (or a person's mail client) can tell a resend from news.
        msg["Message-ID"] = f"<{event['id']}@scimjit>" if event.get("id") else make_msgid()
        msg["X-Scimjit-Event"] = one_line(event["type"])
        msg.set_content(body(event))
        return msg

    def _send(self, message: EmailMessage, to: str) -> None:
        c = self.config
        try:
            smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            try:
                smtp.ehlo()
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=c.ca_file or None))
                    smtp.ehlo()
                if c.username:
                    smtp.login(c.username, self._password)
                smtp.send_message(message, from_addr=c.sender, to_addrs=[to])
            finally:
                _quit(smtp)
        except smtplib.SMTPRecipientsRefused as exc:
            code = min((code for code, _ in exc.recipients.values()), default=550)
            raise _by_code(code, f"SMTP refused {to}: {code}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentError(f"SMTP {c.host}:{c.port}: {exc} (starttls or auth not offered)") from None
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"SMTP {c.host}:{c.port}: {exc.smtp_code} {_text(exc)}") from None
        except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out, TLS failure
            raise TransientError(f"SMTP {c.host}:{c.port}: {type(exc).__name__}: {exc}") from None


def _quit(smtp: smtplib.SMTP) -> None:
    """End the session; a failed QUIT after an accepted message must not turn into a resend."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def valid_address(value: Any) -> bool:
    """A plausible mailbox: one `@`, no whitespace or control characters (an address from SCIM data goes
    into the RCPT TO command and the To: header; CR/LF there would inject SMTP commands or headers)."""
    text = str(value or "")
    return text.count("@") == 1 and not any(ch.isspace() or ord(ch) < 32 or ch in "<>" for ch in text)


def _by_code(code: int, message: str) -> TransientError | PermanentError:
    return TransientError(message) if 400 <= code < 500 or code < 0 else PermanentError(message)


def _text(exc: smtplib.SMTPResponseException) -> str:
    raw = exc.smtp_error
    return one_line(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)


# ---------------------------------------------------------------- Slack


class SlackNotifier(Notifier):
    """One Block Kit message per event to one incoming webhook (a channel), naming the recipients."""

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._client = LoopClient(timeout)

    def __repr__(self) -> str:  # the URL is the secret
        return "SlackNotifier(url=***)"

    async def notify(self, call: Call) -> Result:
        try:
            response = await self._client.get().post(self._url, json=blocks(call.event))
        except httpx.HTTPError as exc:
            raise TransientError(f"Slack webhook: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return Result(Outcome.NOTIFIED)
        if status in (408, 429) or status >= 500:
            retry_after = response.headers.get("retry-after")
            hint = float(retry_after) if retry_after and retry_after.isdigit() else None
            raise TransientError(f"Slack webhook: HTTP {status}", retry_after=hint)
        raise PermanentError(f"Slack webhook: HTTP {status}: {response.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()


def blocks(event: Mapping[str, Any]) -> dict[str, Any]:
    """The Block Kit message: header, the facts, who it is for, and a button into the console."""
    names = ", ".join(_mrkdwn(one_line(r.get("userName"))) for r in event.get("recipients") or ())
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": subject(event)[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(body(event))[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"For: {names or '(nobody)'}"}]},
    ]
    link = str(event.get("link") or "")
    if link.startswith(("https://", "http://")):  # a button needs an absolute URL ([server] base_url)
        button = {"type": "button", "text": {"type": "plain_text", "text": "Open in console"}, "url": link}
        out.append({"type": "actions", "elements": [button]})
    return {"text": subject(event), "blocks": out}


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped, so a group or user name cannot forge a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------- building


def build(
    config: NotificationsConfig, timeout: float, environ: Mapping[str, str] | None = None
) -> dict[str, Notifier]:
    """The configured notifiers by channel name; ConfigError if a `*_env` variable is unset or a URL is bad."""
    env = os.environ if environ is None else environ
    out: dict[str, Notifier] = {}
    if config.email is not None:
        password = config.email.password
        if config.email.password_env:
            password = _from_env(env, config.email.password_env, "email.password_env")
        out[EMAIL] = EmailNotifier(config.email, password)
    url = config.slack_webhook_url
    if config.slack_webhook_url_env:
        url = _from_env(env, config.slack_webhook_url_env, "slack_webhook_url_env")
    if url:
        out[SLACK] = SlackNotifier(check_url(url, "[notifications] slack_webhook_url"), timeout)
    return out


def _from_env(env: Mapping[str, str], var: str, key: str) -> str:
    if not env.get(var):
        raise ConfigError(f"[notifications] {key} names environment variable {var!r}, which is not set")
    return env[var]
