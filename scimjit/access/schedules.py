"""Shifts from a schedule: a scheduling system's complete plan for a period becomes scheduled grants.

`PUT /jit/v1/schedules/{source}` (and `scimjit schedules import`) hand `apply` the whole plan of one source
(`{"period": {"start", "end"}?, "shifts": [{"id", "user", "group", "startsAt", "endsAt"}]}`), as often as the
scheduler likes. Each shift is one grant, found again by `(grants.source, grants.source_ref)` = (source, the
shift's id), a unique pair, so the plan is *compared*, not replayed:

- a shift with no grant becomes one (`created_by` `schedule:<source>`): scheduled, or active at once if its
  start has passed; a shift already over is skipped;
- a shift whose times, user or group changed updates its grant: new times on a scheduled grant, a new end
  on an active one (its membership row follows, as `grants extend` does); a new user or group, or a start
  moved after an active grant began, ends the old grant and makes a new one;
- an open grant of the source missing from the plan (and, with a `period`, overlapping it) is revoked through
  the normal revoke path: a scheduled one is cancelled, an active one ends now and its roles are revoked;
- everything else is unchanged: sending the same plan twice writes no grant, no event and one audit record
  (`schedule.apply` with the summary).

All or nothing: every shift is checked first (unknown user or group, `endsAt` not after `startsAt`, longer
than `[jit] schedule_max_shift`, a repeated id) and any bad shift refuses the plan with 400 `invalid_schedule`
listing the bad shifts by id; nothing is written. A valid plan is applied in one transaction (on PostgreSQL
under a transaction-scoped advisory lock per source, so two plans of one source never interleave). Cost is
bounded: at most `[jit] schedule_max_shifts` shifts per plan, and the grants read are those of this source
named by the plan's ids (IN lists of 500) plus the source's open grants not named (the ones to revoke).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from scimjit.access import grants
from scimjit.clock import format_micros, to_micros
from scimjit.jiterrors import JitError
from scimjit.provisioning.deprovision import Deprovisioner, chunks
from scimjit.store import audit
from scimjit.store import users as user_store
from scimjit.store.tables import Row
from scimjit.store.tables import grants as grant_rows

MAX_SOURCE = 128
MAX_REF = 256
MAX_ERRORS = 100  # bad shifts listed in one refusal


@dataclass(frozen=True, slots=True)
class Shift:
    ref: str  # the scheduling system's id of the shift
    user: str  # user id or userName, as sent
    group: str  # group id or displayName, as sent
    starts_at: int  # epoch microseconds
    ends_at: int


@dataclass(slots=True)
class Summary:
    created: int = 0
    updated: int = 0
    revoked: int = 0
    unchanged: int = 0
    skipped: int = 0  # shifts already over when the plan came: no grant made

    def to_json(self) -> dict[str, int]:
        return asdict(self)

    @property
    def changes(self) -> int:
        return self.created + self.updated + self.revoked


def creator(source: str) -> str:
    """The `created_by` of a shift's grant."""
    return f"schedule:{source}"


def check_source(source: Any) -> str:
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE:
        raise JitError(
            400, "invalid_request", f"the schedule source must be a name of 1 to {MAX_SOURCE} characters"
        )
    return source.strip()


def parse(
    body: Mapping[str, Any], max_shifts: int, max_shift: float
) -> tuple[tuple[int, int] | None, list[Shift]]:
    """The plan's period (start, end in micros, or None: no bound) and its shifts, checked for shape; user
    and group names are checked against the directory by `apply`. Raises 400 `invalid_schedule`."""
    period = None
    if body.get("period") is not None:
        raw = body["period"]
        if not isinstance(raw, Mapping):
            raise JitError(400, "invalid_request", '`period` must be {"start": ..., "end": ...}')
        start, end = (
            grants.instant(raw.get("start"), "period.start"),
            grants.instant(raw.get("end"), "period.end"),
        )
        if end <= start:
            raise JitError(400, "invalid_request", "`period.end` must be after `period.start`")
        period = (start, end)
    shifts = body.get("shifts")
    if not isinstance(shifts, list):
        raise JitError(
            400, "invalid_request", "`shifts` must be a list (the complete plan; [] ends every shift)"
        )
    if len(shifts) > max_shifts:
        raise JitError(
            413,
            "too_many_shifts",
            f"{len(shifts):,} shifts in one plan; at most {max_shifts:,} ([jit] schedule_max_shifts): "
            "send the plan in periods",
        )
    out: list[Shift] = []
    bad: list[dict[str, Any]] = []
    seen: set[str] = set()
    cap_us = int(max_shift * 1_000_000)
    for n, item in enumerate(shifts):
        ref = item.get("id") if isinstance(item, Mapping) else None
        label = ref if isinstance(ref, str) and ref else f"#{n}"
        try:
            if not isinstance(item, Mapping):
                raise JitError(400, "invalid_request", "a shift must be an object")
            if not isinstance(ref, str) or not ref or len(ref) > MAX_REF:
                raise JitError(400, "invalid_request", f"`id` must be a string of 1 to {MAX_REF} characters")
            if ref in seen:
                raise JitError(400, "invalid_request", "the id is used by another shift of the plan")
            seen.add(ref)
            for name in ("user", "group"):
                if not isinstance(item.get(name), str) or not item[name]:
                    raise JitError(400, "invalid_request", f"`{name}` must be an id or a name")
            start = grants.instant(item.get("startsAt"), "startsAt")
            end = grants.instant(item.get("endsAt"), "endsAt")
            if end <= start:
                raise JitError(400, "invalid_request", "`endsAt` must be after `startsAt`")
            if end - start > cap_us:
                raise JitError(
                    400, "invalid_request", f"longer than {max_shift:g}s ([jit] schedule_max_shift)"
                )
            out.append(Shift(ref, item["user"], item["group"], start, end))
        except JitError as exc:
            bad.append({"id": label, "error": exc.detail})
    if bad:
        _refuse(bad)
    return period, out


def apply(
    conn: sa.Connection,
    deprov: Deprovisioner,
    source: str,
    period: tuple[int, int] | None,
    shifts: Sequence[Shift],
    *,
    actor: str,
    now: datetime,
    http_request_id: str | None = None,
) -> Summary:
    """Bring the grants of `source` in line with the plan, in the caller's transaction (see the module)."""
    now_us = to_micros(now)
    if conn.dialect.name == "postgresql":  # one plan of a source at a time (SQLite: one writer anyway)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"schedule:{source}"})
    users, groups, bad = _resolve(conn, shifts)
    if bad:
        _refuse(bad)
    refs = [s.ref for s in shifts]
    missing = _missing(conn, source, refs, period, now_us)
    # The users' rows before the grants', the order a user DELETE takes them in (store.users.lock)
    involved = {u.id for u in users.values()} | {r.user_id for r in missing}
    involved |= {r.user_id for r in _existing(conn, source, refs, lock=False).values()}
    user_store.lock(conn, sorted(involved))
    existing = _existing(conn, source, refs, lock=True)
    summary = Summary()
    who = creator(source)
    for shift in shifts:
        user, group = users[shift.user], groups[shift.group]
        row = existing.get(shift.ref)
        if row is None:
            if shift.ends_at <= now_us:
                summary.skipped += 1
                continue
            _create(conn, deprov, source, shift, user, group, who, now, http_request_id)
            summary.created += 1
            continue
        same_who = row.user_id == user.id and row.group_id == group.id
        same_times = row.starts_at == shift.starts_at and row.expires_at == shift.ends_at
        if same_who and same_times:
            summary.unchanged += 1
        elif row.status not in grants.OPEN or row.expires_at <= now_us:
            # revoked by a person (their decision stands) or over: only a shift moved into the future reopens
            if row.status != grants.REVOKED and shift.ends_at > now_us:
                _release(conn, row)
                _create(conn, deprov, source, shift, user, group, who, now, http_request_id)
                summary.updated += 1
                continue
            summary.unchanged += 1
        elif same_who and row.status == grants.SCHEDULED and shift.ends_at > now_us:
            _retime(conn, row, shift, now_us, who, http_request_id)
            summary.updated += 1
        elif same_who and row.status == grants.ACTIVE and shift.starts_at <= now_us < shift.ends_at:
            _retime(conn, row, shift, now_us, who, http_request_id)
            grants.follow_end(conn, grants.get(conn, row.id), now)  # grant windows kept
            summary.updated += 1
        else:  # another user or group, a start moved past an active grant's, or a shift now over
            grants.revoke(
                conn,
                deprov,
                row.id,
                actor=who,
                now=now,
                reason="shift changed",
                http_request_id=http_request_id,
            )
            _release(conn, row)
            if shift.ends_at > now_us:
                _create(conn, deprov, source, shift, user, group, who, now, http_request_id)
            summary.updated += 1
    for row in missing:
        grants.revoke(
            conn,
            deprov,
            row.id,
            actor=who,
            now=now,
            reason="shift removed from the schedule",
            http_request_id=http_request_id,
        )
        _release(conn, row)  # the shift may come back in a later plan: it will get a new grant
        summary.revoked += 1
    audit.record(
        conn,
        actor=actor,
        action="schedule.apply",
        outcome="success" if summary.changes else "unchanged",
        resource_type="Schedule",
        resource_id=source,
        request_id=http_request_id,
        details={"shifts": len(shifts), **summary.to_json()},
        at_micros=now_us,
    )
    return summary


# ---------------------------------------------------------------- helpers


def _refuse(bad: list[dict[str, Any]]) -> None:
    raise JitError(
        400,
        "invalid_schedule",
        f"{len(bad):,} shift(s) refused; nothing was written",
        extra={"shifts": bad[:MAX_ERRORS]},
    )


def _resolve(
    conn: sa.Connection, shifts: Sequence[Shift]
) -> tuple[dict[str, Row], dict[str, Row], list[dict[str, Any]]]:
    """Each distinct user and group name of the plan looked up once; the shifts naming an unknown one."""
    users: dict[str, Row | None] = {}
    groups: dict[str, Row | None] = {}
    reasons: dict[str, str] = {}
    for shift in shifts:
        for ref, found, lookup in (
            (shift.user, users, grants.find_user),
            (shift.group, groups, grants.find_group),
        ):
            if ref not in found:
                try:
                    found[ref] = lookup(conn, ref)
                except JitError as exc:
                    found[ref] = None
                    reasons[ref] = exc.detail
                else:
                    row = found[ref]
                    if lookup is grants.find_user and row is not None and not row.active:
                        found[ref] = None
                        reasons[ref] = f"user {ref!r} is not active"
    bad = [
        {"id": s.ref, "error": "; ".join(reasons[r] for r in (s.user, s.group) if r in reasons)}
        for s in shifts
        if users[s.user] is None or groups[s.group] is None
    ]
    return (
        {k: v for k, v in users.items() if v is not None},
        {k: v for k, v in groups.items() if v is not None},
        bad,
    )


def _existing(conn: sa.Connection, source: str, refs: Sequence[str], *, lock: bool) -> dict[str, Row]:
    """The grants of `source` for these shift ids (locked on PostgreSQL if asked), by shift id."""
    out: dict[str, Row] = {}
    for chunk in chunks(sorted(refs)):
        stmt = sa.select(grant_rows).where(grant_rows.c.source == source, grant_rows.c.source_ref.in_(chunk))
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        out.update((r.source_ref, r) for r in conn.execute(stmt))
    return out


def _missing(
    conn: sa.Connection, source: str, refs: Sequence[str], period: tuple[int, int] | None, now_us: int
) -> list[Row]:
    """Open grants of `source` the plan does not name (overlapping `period`, if given)."""
    stmt = sa.select(grant_rows.c.id, grant_rows.c.user_id, grant_rows.c.source_ref).where(
        grant_rows.c.source == source,
        grant_rows.c.status.in_(grants.OPEN),
        grant_rows.c.expires_at > now_us,
    )
    if period is not None:
        stmt = stmt.where(grant_rows.c.starts_at < period[1], grant_rows.c.expires_at > period[0])
    named = set(refs)
    return [r for r in conn.execute(stmt.order_by(grant_rows.c.id)) if r.source_ref not in named]


def _create(
    conn: sa.Connection,
    deprov: Deprovisioner,
    source: str,
    shift: Shift,
    user: Row,
    group: Row,
    who: str,
    now: datetime,
    http_request_id: str | None,
) -> None:
    grants.create(
        conn,
        deprov,
        user=user,
        group=group,
        starts_at=shift.starts_at,
        expires_at=shift.ends_at,
        justification=f"shift {shift.ref} ({source})",
        actor=who,
        now=now,
        http_request_id=http_request_id,
        source_name=source,
        source_ref=shift.ref,
    )


def _release(conn: sa.Connection, row: Row) -> None:
    """Unlink an ended grant from its shift (its audit records keep the link), so a new grant can take it."""
    conn.execute(grant_rows.update().where(grant_rows.c.id == row.id).values(source_ref=None))


def _retime(
    conn: sa.Connection, row: Row, shift: Shift, now_us: int, who: str, http_request_id: str | None
) -> None:
    updated = conn.execute(
        grant_rows.update()
        .where(grant_rows.c.id == row.id)
        .values(
            starts_at=shift.starts_at,
            expires_at=shift.ends_at,
            notified_at=None,
            updated_at=now_us,
            version=grant_rows.c.version + 1,
        )
        .returning(*grant_rows.c)
    ).one()
    grants.record_access(
        conn,
        "Grant",
        "grant.extend",
        who,
        updated,
        now_us,
        http_request_id,
        previous=_iso(row.expires_at),
        expiresAt=_iso(shift.ends_at),
        startsAt=_iso(shift.starts_at),
        shift=shift.ref,
    )


def _iso(micros: int) -> str:
    return format_micros(micros)
