"""The console's pages: what a requester, an approver and an admin see and do. Each handler reads through
the owners that exist (`store.admin` views with the SCIM filter compiler, `store.query` for users and groups,
`store.users` / `store.groups` for names) and acts only through `access.service.Access` (every policy rule
lives there) or the deliverer (dead-letter retry). Every list pages in SQL: one `LIMIT/OFFSET` page and a
count, whatever the size of the table.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from scimjit.access import requests as request_rows
from scimjit.access.service import Access
from scimjit.clock import to_micros
from scimjit.config import ConsoleConfig
from scimjit.http.console.render import refusal
from scimjit.http.console.session import Session, check_csrf
from scimjit.jiterrors import JitError
from scimjit.scim.resource import parse_datetime
from scimjit.services import Services
from scimjit.store import admin
from scimjit.store import groups as group_store
from scimjit.store import users as user_store
from scimjit.store.memberships import live_groups
from scimjit.store.query import SearchParams, search

MAX_FORM_BYTES = 16 * 1024


def quoted(value: str) -> str:
    """A SCIM filter string literal (JSON string syntax), so no value can change the filter's meaning."""
    return orjson.dumps(value).decode()


def page_number(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("page", "1")), 10**9))
    except ValueError:
        return 1


def left(now: datetime, end: str | None) -> str:
    """Time left until `end`, for people ("2h 5m"); "ended" once past."""
    moment = parse_datetime(end)
    if moment is None:
        return ""
    seconds = int((moment - now).total_seconds())
    if seconds <= 0:
        return "ended"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes or not (days or hours) else "",
    ]
    return " ".join(p for p in parts if p)


def durations(max_seconds: float) -> list[tuple[int, str]]:
    """The durations a request form offers: the usual steps up to the policy's `max_duration`, and it."""
    steps = [900, 1800, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400]
    offered = [s for s in steps if s < max_seconds] + [int(max_seconds)]
    return [(s, _human(s)) for s in offered]


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _view_page(
    conn: sa.Connection,
    name: str,
    where: str | None,
    number: int,
    size: int,
    *,
    sort_by: str | None = None,
    descending: bool = False,
) -> admin.Page:
    return admin.query(
        conn,
        admin.VIEWS[name],
        filter=where,
        sort_by=sort_by,
        sort_order="descending" if descending else None,
        start_index=(number - 1) * size + 1,
        count=size,
    )


def _names(conn: sa.Connection, docs: Iterable[dict[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """userNames and displayNames of the users and groups a page of rows names: two queries per page."""
    docs = list(docs)
    user_ids = {d["userId"] for d in docs if d.get("userId")}
    group_ids = {d["groupId"] for d in docs if d.get("groupId")}
    people = {uid: p.user_name for uid, p in user_store.profiles(conn, user_ids).items()} if user_ids else {}
    groups = {g.id: g.display_name for g in group_store.names(conn, ids=group_ids)} if group_ids else {}
    return people, groups


# ---------------------------------------------------------------- requester


def requestable(conn: sa.Connection, access: Access, session: Session, now_us: int) -> list[dict[str, Any]]:
    """The policies this person may file a request under (eligibility is the policy's, checked live)."""
    out = []
    for policy in access.settings.policies:
        if policy.eligible and not request_rows.is_member(conn, session.user_id, policy.eligible, now_us):
            continue
        out.append(
            {
                "group": policy.group,
                "max": _human(int(policy.max_duration)),
                "description": policy.description,
            }
        )
    return out


def may_request(services: Services, session: Session, policy: Any) -> bool:
    if not policy.eligible:
        return True
    with services.db.read() as conn:
        now_us = to_micros(services.clock.now())
        return request_rows.is_member(conn, session.user_id, policy.eligible, now_us)


def home_data(services: Services, session: Session, number: int, size: int) -> dict[str, Any]:
    access = services.access
    now = services.clock.now()
    now_us = to_micros(now)
    me = quoted(session.user_id)
    with services.db.read() as conn:
        groups = user_store.groups_of(conn, [session.user_id], now_us)[session.user_id]
        grants = _view_page(
            conn,
            "grants",
            f'userId eq {me} and (status eq "active" or status eq "scheduled")',
            1,
            size,
            sort_by="expiresAt",
        )
        accounts = _view_page(conn, "accounts", f"userId eq {me}", 1, size, sort_by="application")
        mine = _view_page(
            conn, "requests", f"userId eq {me}", number, size, sort_by="createdAt", descending=True
        )
        _, names = _names(conn, [*grants.resources, *mine.resources])
        offered = requestable(conn, access, session, now_us)
    for r in mine.resources:
        r["duration"] = _human(int(r.get("durationSeconds", 0)))
    for g in grants.resources:
        g["timeLeft"] = left(now, g.get("expiresAt"))
        g["active"] = g.get("status") == "active" and (parse_datetime(g.get("startsAt")) or now) <= now
    return {
        "groups": sorted(name for _, name in groups),
        "grants": grants.resources,
        "accounts": accounts.resources,
        "requests": [request_rows.fix_status(r, now_us) for r in mine.resources],
        "requests_page": _paging(mine, number, size),
        "names": names,
        "offered": offered,
    }


def _paging(found: admin.Page, number: int, size: int) -> dict[str, Any]:
    return {"number": number, "total": found.total, "more": number * size < found.total, "size": size}


def policy_for_group(access: Access, group: str) -> Any:
    for policy in access.settings.policies:
        if policy.group.lower() == group.lower():
            return policy
    return None


# ---------------------------------------------------------------- approver


def approver_groups(conn: sa.Connection, access: Access, user_id: str, now_us: int) -> list[str]:
    """Ids of the requestable groups whose policy makes this person an approver (live membership)."""
    ids: list[str] = []
    for policy in access.settings.policies:
        if policy.approvers and request_rows.is_member(conn, user_id, policy.approvers, now_us):
            ids += [g.id for g in group_store.find_by_ref(conn, policy.group)]
    return ids


def queue_data(services: Services, session: Session, number: int, size: int) -> dict[str, Any]:
    """Pending requests this person may decide: in groups they approve for, never their own."""
    now = services.clock.now()
    now_us = to_micros(now)
    with services.db.read() as conn:
        ids = approver_groups(conn, services.access, session.user_id, now_us)
        if not ids:
            return {
                "requests": [],
                "paging": {"number": 1, "total": 0, "more": False, "size": size},
                "people": {},
                "names": {},
            }
        stamp = quoted(now.isoformat().replace("+00:00", "Z"))
        where = (
            f'status eq "pending" and expiresAt gt {stamp} and userId ne {quoted(session.user_id)} and ('
            + " or ".join(f"groupId eq {quoted(i)}" for i in ids)
            + ")"
        )
        found = _view_page(conn, "requests", where, number, size, sort_by="createdAt")
        people, names = _names(conn, found.resources)
    for r in found.resources:
        r["mine"] = any(a.get("approverId") == session.user_id for a in r.get("approvals") or [])
        r["duration"] = _human(int(r.get("durationSeconds", 0)))
    return {
        "requests": found.resources,
        "paging": _paging(found, number, size),
        "people": people,
        "names": names,
    }


# ---------------------------------------------------------------- admin


def is_admin(services: Services, config: ConsoleConfig, user_id: str) -> bool:
    """Live membership of any `[console] admin_groups` group."""
    if not config.admin_groups:
        return False
    now_us = to_micros(services.clock.now())
    refs = config.admin_groups
    with services.db.read() as conn:
        stmt = live_groups(user_id, now_us, group_ids=refs, names_ci={r.lower() for r in refs})
        return conn.execute(stmt.limit(1)).first() is not None


def directory_page(
    services: Services, kind: str, where: str | None, number: int, size: int
) -> dict[str, Any]:
    """Users or Groups with a SCIM filter, one page in SQL (`store.query.search`, as /scim/v2 lists)."""
    registry = services.registry
    settings = services.settings
    params = SearchParams(
        filter=where or None,
        start_index=(number - 1) * size + 1,
        count=size,
        max_page_size=settings.max_page_size,
        max_filter_length=settings.max_filter_length,
        max_filter_depth=settings.max_filter_depth,
    )
    with services.db.read() as conn:
        found = search(conn, registry, registry.resource_type(kind), params, to_micros(services.clock.now()))
    if kind == "User":
        rows = [
            {
                "id": r.id,
                "name": r.user_name,
                "display": (r.data or {}).get("displayName", ""),
                "active": r.active,
            }
            for r in found.rows
        ]
    else:
        rows = [{"id": r.id, "name": r.display_name, "display": "", "active": True} for r in found.rows]
    return {
        "rows": rows,
        "paging": {"number": number, "total": found.total, "more": number * size < found.total, "size": size},
    }


def view_data(
    services: Services, name: str, where: str | None, number: int, size: int, **order: Any
) -> dict[str, Any]:
    with services.db.read() as conn:
        found = _view_page(conn, name, where or None, number, size, **order)
        people, names = _names(conn, found.resources)
    now = services.clock.now()
    for r in found.resources:
        if "expiresAt" in r:
            r["timeLeft"] = left(now, r.get("expiresAt"))
    return {"rows": found.resources, "paging": _paging(found, number, size), "people": people, "names": names}


# ---------------------------------------------------------------- form handling


async def form(request: Request, session: Session) -> dict[str, str] | Response:
    """The POSTed form after its CSRF check; a refusal page when the token is missing or wrong."""
    body = b""
    async for chunk in request.stream():  # read at most MAX_FORM_BYTES, whatever Content-Length says
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return refusal(request, session, 413, "too_large", "That form is too large.")
    # the console's forms are application/x-www-form-urlencoded (no file uploads: no multipart parser)
    values = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if not check_csrf(request, session, values.get("csrf")):
        return refusal(
            request,
            session,
            403,
            "csrf",
            "This form has expired or did not come from the console. Go back, reload and try again.",
        )
    return values


def back(path: str, note: str = "") -> Response:
    target = path + (f"?note={note}" if note else "")
    return RedirectResponse(target, 303)


def from_iso_local(value: str) -> str | None:
    """A `datetime-local` input (browser local time, no zone) is read as UTC; blank: none."""
    value = value.strip()
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise JitError(400, "invalid_request", "the start time is not a date and time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()
