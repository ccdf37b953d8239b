"""Telling people: `request.created` to each approver, `request.decided` to the requester and
`access.expiring` to the user, through every channel of `[notifications]`.

Each notification is an outbox row written in the transaction of its cause (the request filed, the decision
taken, the sweeper's expiry notice), so it exists if and only if the change committed, and it is delivered,
retried and dead-lettered like any event (scimjit/delivery/notifiers.py for the built-in channels). There is
one row per (event, recipient, channel) with a stable event id, so a person gets one message per event
however often a worker retries or restarts:

- email (`notify:email`): one mail per recipient, to their SCIM email (primary, else work, else the first);
  a recipient without one gets no mail (logged);
- Slack (`notify:slack`): one message per event to the configured channel, naming the recipients;
- `[notifications] applications`: one `notify` call per recipient through that application's connector,
  the event's `user` being the recipient (the shape `access.expiring` always had).

Approvers are the live, active members of the policy's `approvers` groups, never the requester. An
auto-approved request tells nobody: the requester had the answer in the response.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.clock import format_micros, from_micros, to_micros
from scimjit.delivery import outbox
from scimjit.delivery.connectors.base import ACCESS_EXPIRING, REQUEST_CREATED, REQUEST_DECIDED
from scimjit.delivery.notifiers import EMAIL, SLACK
from scimjit.entitlement.policies import AccessSettings, Policy
from scimjit.provisioning.deprovision import user_document
from scimjit.store import memberships
from scimjit.store import users as user_store
from scimjit.store.tables import Row

log = logging.getLogger("scimjit.notify")

MAX_APPROVERS = 1000  # bound on the rows one request writes: approvers groups are teams, not the company
_IDS = uuid.UUID("8f1d2c4e-5a6b-4c7d-9e0f-1a2b3c4d5e6f")  # namespace of the stable notification ids

Item = tuple[Mapping[str, Any], str | None]


def email_of(data: Mapping[str, Any] | None) -> str | None:
    """The address to mail a SCIM user at: the primary email, else the work one, else the first."""
    emails = [e for e in (data or {}).get("emails") or () if isinstance(e, dict) and e.get("value")]
    for pick in (lambda e: e.get("primary") is True, lambda e: str(e.get("type", "")).lower() == "work"):
        for e in emails:
            if pick(e):
                return str(e["value"])
    return str(emails[0]["value"]) if emails else None


def person(row: Row) -> dict[str, Any]:
    """A user as a notification names them (recipients, requesters)."""
    data = row.data or {}
    return {
        "id": row.id,
        "userName": row.user_name,
        "displayName": data.get("displayName") or row.user_name,
        "email": email_of(data),
    }


def configured(settings: AccessSettings) -> bool:
    """Whether any channel is: without one, filing a request does not even look up its approvers."""
    n = settings.notifications
    return n.email is not None or bool(n.slack_webhook_url or n.slack_webhook_url_env or n.applications)


def console_link(settings: AccessSettings, path: str) -> str:
    return f"{settings.base_url.rstrip('/')}/console{path}"


def request_created(
    conn: sa.Connection, settings: AccessSettings, row: Row, requester: Row, group: Row, policy: Policy
) -> int:
    """Queue `request.created` to each approver of a pending request; returns the rows queued."""
    if not configured(settings):
        return 0
    now_us = row.created_at
    approvers: list[Row] = []
    if policy.approvers:
        members = memberships.live_members_of(policy.approvers, now_us, exclude=requester.id)
        approvers = user_store.active_profiles(conn, members, MAX_APPROVERS + 1)
    if len(approvers) > MAX_APPROVERS:
        log.warning(
            "request %s: more than %d approvers; the first %d by userName are told",
            row.id,
            MAX_APPROVERS,
            MAX_APPROVERS,
        )
        approvers = approvers[:MAX_APPROVERS]
    doc = request_document(row, requester, group)
    return _queue(conn, settings, REQUEST_CREATED, row.id, approvers, requester.id, request=doc, at=now_us)


def request_decided(
    conn: sa.Connection,
    settings: AccessSettings,
    row: Row,
    group: Row,
    *,
    decided_by: str,
    comment: str | None,
) -> int:
    """Queue `request.decided` (approved or denied) to the requester; returns the rows queued."""
    if not configured(settings):
        return 0
    found = user_store.profiles(conn, [row.user_id])
    requester = found.get(row.user_id)
    if requester is None:
        return 0
    doc = {**request_document(row, requester, group), "decidedBy": decided_by, "comment": comment}
    if row.grant_id:
        doc["grantId"] = row.grant_id
    return _queue(
        conn, settings, REQUEST_DECIDED, row.id, [requester], requester.id, request=doc, at=row.decided_at
    )


def access_expiring(
    settings: AccessSettings,
    user: Row,
    grant: Mapping[str, Any],
    expires_us: int,
    now: datetime,
    *,
    told: Sequence[str] = (),
) -> list[Item]:
    """`access.expiring` to the user through the `[notifications]` channels, for `grants.notify_due` to queue
    with its own events (keyed by the grant's end, so an extended grant is told again). Applications in
    `told` already get the event from `notify_due`: not twice."""
    if not configured(settings):
        return []
    return _items(
        settings,
        ACCESS_EXPIRING,
        f"{grant['id']}:{expires_us}",
        [user],
        user.id,
        to_micros(now),
        skip=told,
        grant=dict(grant),
        expiresAt=grant["expiresAt"],
        link=console_link(settings, ""),
    )


def request_document(row: Row, requester: Row, group: Row) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "groupId": group.id,
        "groupName": group.display_name,
        "requester": person(requester),
        "durationSeconds": row.duration_seconds,
        "justification": row.justification,
        "startsAt": format_micros(row.starts_at) if row.starts_at else None,
        "expiresAt": format_micros(row.expires_at),
    }


# ---------------------------------------------------------------- helpers


def _queue(
    conn: sa.Connection,
    settings: AccessSettings,
    type_: str,
    request_id: str,
    recipients: Sequence[Row],
    subject_id: str,
    *,
    request: dict[str, Any],
    at: int,
) -> int:
    link = console_link(settings, f"/requests/{request_id}")
    items = _items(settings, type_, request_id, recipients, subject_id, at, request=request, link=link)
    return outbox.enqueue_many(conn, items, now=from_micros(at))


def _items(
    settings: AccessSettings,
    type_: str,
    key: str,
    recipients: Sequence[Row],
    subject_id: str,
    at: int,
    *,
    skip: Sequence[str] = (),
    **extra: Any,
) -> list[Item]:
    """One (event, user id) per recipient and channel, each with its stable id; Slack once, naming all."""
    config = settings.notifications
    when = from_micros(at)
    items: list[Item] = []

    def event(channel: str, user: Mapping[str, Any], recipient_id: str, **more: Any) -> Mapping[str, Any]:
        doc = outbox.new_event(type_, channel, user, [], when, **extra, **more)
        doc["id"] = str(uuid.uuid5(_IDS, f"{type_}:{key}:{recipient_id}:{channel}"))
        return doc

    for row in recipients:
        who = person(row)
        if config.email is not None:
            if who["email"]:
                items.append((event(EMAIL, user_document(row), row.id, recipient=who), row.id))
            else:
                log.info("%s %s: %s has no email address, so no mail", type_, key, row.user_name)
        for app in (a for a in config.applications if a not in skip):
            items.append((event(app, user_document(row), row.id, recipient=who), row.id))
    if config.slack_webhook_url or config.slack_webhook_url_env:
        names = [person(r) for r in recipients]
        items.append((event(SLACK, {}, "*", recipients=names), subject_id))
    return items
